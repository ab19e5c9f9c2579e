"""Function-preserving network morphism: Net2WiderNet (Chen et al. 2016).

Threat model: the thief has the weights and no data. Seed 002 names network morphism as a severe
open threat to weight marks. Each hidden layer gets `extra` fraction more units, each a copy of a
random existing unit; the next layer's input weights of a copied unit are split between the
copies, so the outputs do not change but every layer changes shape. Realignment
(`verify --reference`) merges the duplicates back.

Example: ``nnmark attack morph marked.safetensors --set extra=0.5 --out wider.safetensors``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._units import chain_links, reorder_units
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class MorphConfig:
    label = "morph"
    extra: float = 0.25

    def __post_init__(self) -> None:
        check(0.0 < self.extra <= 4.0, f"extra must be in (0, 4], got {self.extra}")


@register("morph")
class Morph(Attack):
    Config = MorphConfig
    config: MorphConfig
    summary = "Net2WiderNet widening of every hidden layer (shapes change, same function)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        for link in chain_links(model):
            n = weighted_layers(model)[link.producer].weight.shape[0]
            k = max(1, int(round(self.config.extra * n)))
            copies = torch.randint(0, n, (k,), generator=generator)
            order = torch.cat([torch.arange(n), copies])
            counts = torch.bincount(order, minlength=n).float()
            reorder_units(model, link, order)
            # Split each copied unit's outgoing weights evenly among its copies.
            consumer = weighted_layers(model)[link.consumer]
            share = (1.0 / counts[order]).repeat_interleave(link.group)
            with torch.no_grad():
                consumer.weight.mul_(share.reshape((1, -1) + (1,) * (consumer.weight.dim() - 2)))
        model.nnmark_morphed = True  # type: ignore[assignment]
        return model
