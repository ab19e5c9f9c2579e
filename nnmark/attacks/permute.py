"""Output-invariant permutation of the hidden units of every layer (lecture 000).

Threat model: the thief has the weights and no data. Reordering a layer's units (and the next
layer's inputs to match) leaves the function unchanged but scrambles every weight-space mark
that reads positions. The lecture notes it "NOW can be detected": `nnmark verify --reference`
realigns the units against the owner's model first (nnmark/defenses/realign.py).

Example: ``nnmark attack permute marked.safetensors --out permuted.safetensors``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._units import chain_links, reorder_units
from nnmark.attacks.base import Attack
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class PermuteConfig:
    label = "permute"


@register("permute")
class Permute(Attack):
    Config = PermuteConfig
    config: PermuteConfig
    summary = "permute the units of every hidden layer (same function, scrambled weights)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        for link in chain_links(model):
            n = weighted_layers(model)[link.producer].weight.shape[0]
            reorder_units(model, link, torch.randperm(n, generator=generator))
        return model
