"""How the white-box and integrity scheme tests embed each scheme (imported by the tests and
the conftest of this folder).

`SCHEMES_UNDER_TEST` is read from the registry, so a new white-box or integrity scheme is covered
by the contract tests as soon as its file exists; `RECIPES` only says how a known scheme is
embedded cheaply (a new one gets DEFAULT: fine-tuned into the base CNN for 3 epochs, 64 bits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from nnmark import OwnerKey, TrainConfig, embed
from nnmark.data.base import DataBundle
from nnmark.schemes import SCHEMES
from nnmark.schemes.tartaglione import PositionScheme

SCHEMES_UNDER_TEST = [n for n in SCHEMES.names() if SCHEMES.get(n).kind != "blackbox"]
BIT_SCHEMES = [n for n in SCHEMES_UNDER_TEST if SCHEMES.get(n).kind == "whitebox"]
POSITION_SCHEMES = [n for n in SCHEMES_UNDER_TEST if issubclass(SCHEMES.get(n), PositionScheme)]


@dataclass(frozen=True)
class Recipe:
    """How a scheme is fine-tuned into the base CNN in the fixtures (fine-tune-to-embed)."""

    options: dict[str, Any] = field(default_factory=dict)
    config: TrainConfig = TrainConfig(epochs=3, seed=0)
    bits: int | None = 64


DEFAULT = Recipe()
RECIPES: dict[str, Recipe] = {
    "fragile": Recipe(config=TrainConfig(epochs=0), bits=None),
    "stdm": Recipe(bits=256),
    # position marks: the key values are written into the base model, then frozen; weight decay
    # on, so "frozen" is tested against the optimiser's decay and Adam's momentum
    "tartaglione": Recipe(
        {"R": 4, "one_replica": True}, TrainConfig(epochs=3, seed=0, weight_decay=1e-3), None
    ),
    "watermas": Recipe({}, TrainConfig(epochs=3, seed=0, weight_decay=1e-3), None),
}


def recipe(name: str) -> Recipe:
    return RECIPES.get(name, DEFAULT)


def owner_key(name: str, nonce: str = "a5") -> OwnerKey:
    return OwnerKey.new(f"{name} owner", nonce=nonce * 16)


def embed_recipe(
    name: str, base: nn.Module, data: DataBundle, key: OwnerKey | None = None, **override: Any
) -> tuple[nn.Module, OwnerKey]:
    r = recipe(name)
    return embed(
        base,
        data,
        name,
        reference=override.pop("reference", None),
        options=override.pop("options", r.options),
        key=key or owner_key(name),
        bits=override.pop("bits", r.bits),
        config=override.pop("config", r.config),
        **override,
    )
