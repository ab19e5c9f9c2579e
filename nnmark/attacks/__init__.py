"""Removal attacks: one file each, registered by name in ATTACKS; chains compose them.

A new attack is one file here with an `@register("name")` class; importing this package imports
every module in it, so the CLI, the benchmark and the tests pick it up.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from nnmark.attacks.base import Attack
from nnmark.config import parse_sets
from nnmark.errors import NNMarkError
from nnmark.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")


def register(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator: register an Attack subclass under `name` (and set its `name` and its
    config's label)."""

    def deco(cls: type[Attack]) -> type[Attack]:
        cls.name = name
        setattr(cls.Config, "label", name)  # noqa: B010  (what its option errors are named by)
        return ATTACKS.register(name)(cls)

    return deco


def create_attack(name: str, options: dict[str, Any] | None = None) -> Attack:
    return ATTACKS.get(name)(options or {})


def parse_chain(spec: str) -> list[tuple[str, dict[str, str]]]:
    """Parse `prune:fraction=0.5,finetune:epochs=3` into [(name, options), ...].

    A token `name` or `name:k=v` starts an attack; a bare `k=v` token adds an option to it.

    >>> parse_chain("prune:fraction=0.5,order=random,quantize:bits=8")
    [('prune', {'fraction': '0.5', 'order': 'random'}), ('quantize', {'bits': '8'})]
    """
    steps: list[tuple[str, dict[str, str]]] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        head, sep, rest = token.partition(":")
        if "=" in head and not sep:
            if not steps:
                raise NNMarkError(f"attack spec {spec!r}: option {token!r} before any attack name")
            steps[-1][1].update(parse_sets([token]))
            continue
        steps.append((head.strip(), parse_sets([rest]) if sep and rest else {}))
    if not steps:
        raise NNMarkError("empty attack spec")
    return steps


def build_attack(spec: str, extra: dict[str, Any] | None = None) -> Attack:
    """An attack or a chain from a spec string; `extra` options go to a single attack."""
    from nnmark.attacks.chain import Chain

    steps = parse_chain(spec)
    if len(steps) == 1:
        name, opts = steps[0]
        return create_attack(name, {**opts, **(extra or {})})
    if extra:
        raise NNMarkError("--set applies to a single attack; put options in the chain spec")
    return Chain([create_attack(n, o) for n, o in steps])


def list_attacks() -> list[str]:
    return ATTACKS.names()


for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base",) and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["ATTACKS", "Attack", "build_attack", "create_attack", "list_attacks", "parse_chain"]
