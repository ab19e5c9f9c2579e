"""Watermarking schemes: one file each, registered by name in SCHEMES.

A new scheme is one file here with a `@SCHEMES.register("name")` class; importing this package
imports every module in it, so the CLI, the benchmark and the tests pick it up.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence

from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError, one_line
from nnmark.keys import MAX_SCHEME_NAME, Mark
from nnmark.registry import Registry
from nnmark.schemes.base import Evidence, Scheme

SCHEMES: Registry[type[Scheme]] = Registry("scheme")


def register(name: str) -> Callable[[type[Scheme]], type[Scheme]]:
    """Class decorator: register a Scheme subclass under `name` (and set its `name` and its config's label)."""

    def deco(cls: type[Scheme]) -> type[Scheme]:
        cls.name = name
        setattr(cls.Config, "label", name)  # noqa: B010  (what its option errors are named by)
        return SCHEMES.register(name)(cls)

    return deco


def scheme_for(mark: Mark, data: Sequence[DataBundle] = ()) -> Scheme:
    """The scheme instance bound to a key's mark (with the data sets its derivation may need)."""
    if mark.scheme not in SCHEMES:
        raise NNMarkError(
            f"key: mark {mark.index}: field scheme names an unknown scheme "
            f"{one_line(mark.scheme[:MAX_SCHEME_NAME])!r}"
        )
    return SCHEMES.get(mark.scheme)(mark, data)


def list_schemes() -> list[str]:
    return SCHEMES.names()


for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base",) and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["SCHEMES", "Evidence", "Scheme", "list_schemes", "register", "scheme_for"]
