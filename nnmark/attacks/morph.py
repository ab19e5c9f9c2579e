"""Function-preserving network morphism: Net2WiderNet (Chen et al. 2016).

Threat model: the thief has the weights and no data. Seed 002 names network morphism as a severe
open threat to weight marks. Every hidden channel group gets `extra` fraction more channels,
each a copy of a random existing one (its weights, bias and BatchNorm entries copied); the
consumers' input weights of a copied channel are split evenly between the copies, so the outputs
do not change but every hidden layer changes shape. Residual streams and concatenations are
widened consistently (nnmark/attacks/_graph.py), so mlp, cnn, resnet, wrn and unet all work.
A widened file no longer fits the zoo's arch kwargs: `verify` still reads its tensors by name,
and `verify --reference` rebuilds it from those tensors and merges the duplicates back
(nnmark/defenses/realign.py).

Example: ``nnmark attack morph marked.safetensors --set extra=0.5 --out wider.safetensors``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._graph import Plan, rewrite_groups
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class MorphConfig:
    extra: float = 0.25

    def __post_init__(self) -> None:
        check(0.0 < self.extra <= 4.0, f"extra must be in (0, 4], got {self.extra}")


def widening_plan(n: int, extra: float, generator: torch.Generator) -> Plan:
    """n channels plus round(extra * n) random copies; outgoing weights split among copies."""
    k = max(1, int(round(extra * n)))
    order = torch.cat([torch.arange(n), torch.randint(0, n, (k,), generator=generator)])
    counts = torch.bincount(order, minlength=n).float()
    merge = torch.zeros(n, len(order))
    merge[order, torch.arange(len(order))] = 1.0 / counts[order]
    return Plan(order, torch.ones(len(order)), merge)


@register("morph")
class Morph(Attack):
    Config = MorphConfig
    config: MorphConfig
    summary = "Net2WiderNet widening of every hidden layer (shapes change, same function)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        return rewrite_groups(model, lambda n: widening_plan(n, self.config.extra, generator))
