"""Magnitude pruning (Han et al. 2015), the compression attack of Uchida et al. and seed 001.

Threat model: the thief has the weights and no data. Unstructured: zero the `fraction` of conv
and linear weights chosen by `order` (`ascending` = smallest magnitudes first, the usual
compression; `descending` = largest first; `random`), over all layers at once (`scope=global`)
or per layer (`scope=layer`).

Structured (`structured=true`): remove whole channels, shrinking the layers, with torch_pruning
following the dependencies (the next layers' inputs, BatchNorms, residual additions,
concatenations). In every hidden channel group the `fraction` of channels chosen by `order`
(by the L2 norm of their producing weights; at least one channel stays) is removed; `scope` does
not apply. A channel-pruned file no longer fits the zoo's arch kwargs: `verify` reads its
tensors by name, and `verify --reference` matches the surviving channels to the owner's model.

Example: ``nnmark attack prune marked.safetensors --set fraction=0.5 --out pruned.safetensors``
``nnmark attack prune marked.safetensors --set structured=true --set fraction=0.25 --out s.st``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._graph import BATCHNORMS, channel_groups, dependency_graph, out_dim
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class PruneConfig:
    fraction: float = 0.5
    order: Literal["ascending", "descending", "random"] = "ascending"
    scope: Literal["global", "layer"] = "global"
    structured: bool = False

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
    summary = "magnitude pruning: weights (global / per layer) or whole channels (structured)"
    ladder = ("fraction", (0.3, 0.6, 0.9))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        if self.config.structured:
            return prune_channels(model, self.config.fraction, self.config.order, generator)
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


@torch.no_grad()
def _channel_norms(
    model: nn.Module, members: list[tuple[str, torch.Tensor]], n: int
) -> torch.Tensor:
    total = torch.zeros(n)
    for name, index in members:
        w = model.get_submodule(name).weight.detach().movedim(out_dim(model.get_submodule(name)), 0)
        total += w.reshape(w.shape[0], -1)[index.flatten()].pow(2).sum(1).reshape(n, -1).sum(1)
    return total.sqrt()


def prune_channels(
    model: nn.Module, fraction: float, order: str, generator: torch.Generator
) -> nn.Module:
    """Remove `fraction` of the channels of every hidden group, in place (torch_pruning)."""
    graph = dependency_graph(model)
    picks = []
    for group in channel_groups(model, graph):
        k = min(group.size - 1, int(round(fraction * group.size)))
        if k <= 0:
            continue
        producers = [
            (m.name, m.index)
            for m in group.members
            if m.side == "out" and not isinstance(model.get_submodule(m.name), BATCHNORMS)
        ]
        score = _scores(_channel_norms(model, producers, group.size), order, generator)
        picks.append((group, sorted(torch.argsort(score)[:k].tolist())))
    for group, idxs in picks:
        graph.get_pruning_group(model.get_submodule(group.root), group.handler, idxs=idxs).prune()
    model.nnmark_pruned_channels = True
    return model
