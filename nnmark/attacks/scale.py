"""Output-invariant rescaling of hidden units (ReLU positive homogeneity).

Threat model: the thief has the weights and no data. Unit i of a hidden layer is multiplied by
a random factor a_i in [1/max_factor, max_factor] and the next layer's inputs by 1/a_i: the
function is unchanged, the magnitudes are not. Realignment (`verify --reference`) normalises the
scales back.

Example: ``nnmark attack scale marked.safetensors --set max_factor=4 --out scaled.safetensors``
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._units import chain_links, scale_units
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class ScaleConfig:
    label = "scale"
    max_factor: float = 4.0

    def __post_init__(self) -> None:
        check(self.max_factor >= 1.0, f"max_factor must be >= 1, got {self.max_factor}")


@register("scale")
class Scale(Attack):
    Config = ScaleConfig
    config: ScaleConfig
    summary = "rescale hidden units by random positive factors (same function)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        span = math.log(self.config.max_factor)
        for link in chain_links(model):
            n = weighted_layers(model)[link.producer].weight.shape[0]
            factors = torch.exp((torch.rand(n, generator=generator) * 2 - 1) * span)
            scale_units(model, link, factors)
        return model
