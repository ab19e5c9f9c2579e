"""Output-invariant permutation of the channels of every hidden layer (lecture 000).

Threat model: the thief has the weights and no data. Reordering a layer's units (and, to match,
the next layers' inputs, the biases and BatchNorms, and every layer coupled to it through a
residual addition or a concatenation) leaves the function unchanged but scrambles every
weight-space mark that reads positions. Works on any network torch_pruning can trace (the zoo's
mlp, cnn, resnet, wrn and unet). The lecture notes it "NOW can be detected":
`nnmark verify --reference` realigns the units against the owner's model first
(nnmark/defenses/realign.py).

Example: ``nnmark attack permute marked.safetensors --out permuted.safetensors``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._graph import Plan, apply_plans, channel_groups
from nnmark.attacks.base import Attack
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class PermuteConfig:
    """No options: every hidden layer is permuted."""


def permutation_plan(n: int, generator: torch.Generator) -> Plan:
    """A random reordering of n channels."""
    order = torch.randperm(n, generator=generator)
    merge = torch.zeros(n, n)
    merge[order, torch.arange(n)] = 1.0
    return Plan(order, torch.ones(n), merge)


@register("permute")
class Permute(Attack):
    Config = PermuteConfig
    config: PermuteConfig
    summary = "permute the channels of every hidden layer (same function, scrambled weights)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        groups = channel_groups(model)
        return apply_plans(
            model, groups, {g.root: permutation_plan(g.size, generator) for g in groups}
        )
