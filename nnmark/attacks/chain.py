"""A chain of attacks is itself an attack: each step gets the previous step's output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks.base import Attack, findings, note
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class ChainConfig:
    label = "chain"


class Chain(Attack):
    """Apply attacks in order (not registered: built from a spec by `build_attack`)."""

    name = "chain"
    Config = ChainConfig

    def __init__(self, attacks: Sequence[Attack]) -> None:
        super().__init__({})
        self.attacks = list(attacks)
        self.needs_data = any(a.needs_data for a in self.attacks)  # type: ignore[misc]

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        found: dict = {}
        for i, attack in enumerate(self.attacks):
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator)) + i
            model = attack(model, data, seed=seed)
            found.update(findings(model))  # a later step may build a fresh module
        if found:
            note(model, **found)
        return model

    def __repr__(self) -> str:
        return " -> ".join(repr(a) for a in self.attacks)

    def describe(self) -> str:
        return ", then ".join(a.describe() for a in self.attacks)
