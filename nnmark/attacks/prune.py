"""Magnitude pruning (Han et al. 2015), the compression attack of Uchida et al. and seed 001.

Threat model: the thief has the weights and no data. Unstructured: zero the `fraction` of conv
and linear weights chosen by `order` (`ascending` = smallest magnitudes first, the usual
compression; `descending` = largest first; `random`), over all layers at once (`scope=global`)
or per layer (`scope=layer`).

Example: ``nnmark attack prune marked.safetensors --set fraction=0.5 --out pruned.safetensors``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class PruneConfig:
    label = "prune"
    fraction: float = 0.5
    order: Literal["ascending", "descending", "random"] = "ascending"
    scope: Literal["global", "layer"] = "global"

    def __post_init__(self) -> None:
        check(0.0 <= self.fraction <= 1.0, f"fraction must be in [0, 1], got {self.fraction}")


def _scores(w: torch.Tensor, order: str, generator: torch.Generator) -> torch.Tensor:
    """Lower score = pruned first."""
    if order == "ascending":
        return w.abs().flatten()
    if order == "descending":
        return -w.abs().flatten()
    return torch.rand(w.numel(), generator=generator)


@register("prune")
class Prune(Attack):
    Config = PruneConfig
    config: PruneConfig
    summary = "unstructured magnitude pruning (global or per layer; ascending/descending/random)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        weights = [m.weight for m in weighted_layers(model).values()]
        frac, order = self.config.fraction, self.config.order
        with torch.no_grad():
            if self.config.scope == "layer":
                for w in weights:
                    k = int(round(frac * w.numel()))
                    if k:
                        idx = torch.argsort(_scores(w, order, generator))[:k]
                        w.view(-1)[idx] = 0.0
            else:
                scores = torch.cat([_scores(w, order, generator) for w in weights])
                k = int(round(frac * scores.numel()))
                if k:
                    cut = torch.zeros(scores.numel(), dtype=torch.bool)
                    cut[torch.argsort(scores)[:k]] = True
                    start = 0
                    for w in weights:
                        n = w.numel()
                        w.view(-1)[cut[start : start + n]] = 0.0
                        start += n
        return model
