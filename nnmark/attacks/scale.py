"""Output-invariant rescaling of hidden units (ReLU positive homogeneity), BatchNorm-aware.

Threat model: the thief has the weights and no data. Each hidden channel c gets a random factor
a_c in [1/max_factor, max_factor]: its producing layer's weights and bias are multiplied by
a_c, the inputs it feeds by 1/a_c, so the function is unchanged and the magnitudes are not.
Where a BatchNorm follows a convolution the conv's own scale would be normalised away, so the
BatchNorm's weight and bias carry a_c instead; and (`absorb`) the conv's channels get a second,
independent factor that the BatchNorm's running statistics absorb exactly, negative too with
`flip` (the BatchNorm's weight takes the sign). Residual streams and
concatenations are scaled consistently (nnmark/attacks/_graph.py). Realignment
(`verify --reference`) normalises the scales back.

Example: ``nnmark attack scale marked.safetensors --set max_factor=4 --out scaled.safetensors``
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._graph import (
    Plan,
    apply_plans,
    batchnorm_after,
    channel_groups,
    dependency_graph,
    rescale_before_norm,
)
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class ScaleConfig:
    max_factor: float = 4.0
    absorb: bool = True
    #: the factors a BatchNorm absorbs also flip signs at random (the norm's weight flips with
    #: them, so the function is unchanged): a sign-blind realignment leaves half the host's
    #: channels negated (red team, session 26: an Uchida mark went from p 5e-20 to not_found)
    flip: bool = False

    def __post_init__(self) -> None:
        check(self.max_factor >= 1.0, f"max_factor must be >= 1, got {self.max_factor}")


def _factors(n: int, max_factor: float, generator: torch.Generator) -> torch.Tensor:
    span = math.log(max_factor)
    return torch.exp((torch.rand(n, generator=generator) * 2 - 1) * span)


@register("scale")
class Scale(Attack):
    Config = ScaleConfig
    config: ScaleConfig
    summary = "rescale hidden channels by random positive factors (same function)"
    ladder = ("max_factor", (2.0, 4.0, 8.0))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        graph = dependency_graph(model)
        groups = channel_groups(model, graph)
        norms = batchnorm_after(model, graph) if self.config.absorb else {}
        plans = {}
        for g in groups:
            a = _factors(g.size, self.config.max_factor, generator)
            plans[g.root] = Plan(torch.arange(g.size), a, torch.diag(1.0 / a))
        apply_plans(model, groups, plans)
        for conv, norm in sorted(norms.items()):
            layer = model.get_submodule(conv)
            c = _factors(layer.weight.shape[0], self.config.max_factor, generator)
            if self.config.flip:
                c = c * (torch.randint(0, 2, c.shape, generator=generator) * 2 - 1)
            rescale_before_norm(layer, model.get_submodule(norm), c)
        return model
