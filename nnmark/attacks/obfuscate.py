"""Neural structural obfuscation: dummy units whose contributions cancel (Yan et al., "Rethinking
White-Box Watermarks on Deep Learning Models under Neural Structural Obfuscation", USENIX
Security 2023), mixed in among the real ones.

Threat model: the thief has the weights and no data. Every hidden channel group gets `extra`
fraction more channels, in pairs: both units of a pair take the incoming weights of one random
existing unit times one random factor (negative factors too, so a dummy need not look like the
unit it came from), hence the same activation; their outgoing weights are +c and -c times one
random consumer column, so the pair adds exactly nothing. The new channels are then shuffled in
among the old ones. Layers change width and order, outputs do not (up to float rounding), and a
white-box key no longer finds its tensors' shapes. Chain it with `permute` and `scale` for the
"invariant neuron transforms" of the same authors (KDD 2023).

The answer: `verify --reference-unmarked` (nnmark/defenses/realign.py) matches the suspect's
units to the owner's model before the mark by their activations: a dummy that copies a real
unit's activation is merged into it with its partner, and the two cancel again; one that matches
no unit is dropped, as its contribution was nothing. Tests: tests/schemes/test_scheme_realign.py.
What it cannot undo: dummies whose pair does not cancel exactly (a thief who also fine-tunes them)
are units like any other, and realignment then matches by function as it does after fine-tuning.

Example: ``nnmark attack obfuscate marked.safetensors --set extra=0.5 --out obf.safetensors``
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
class ObfuscateConfig:
    extra: float = 0.25  # dummy units per group, as a fraction of its units (in pairs)

    def __post_init__(self) -> None:
        check(0.0 < self.extra <= 4.0, f"extra must be in (0, 4], got {self.extra}")


def dummy_plan(n: int, extra: float, generator: torch.Generator) -> Plan:
    """n units kept, plus pairs of dummies that cancel; every unit shuffled into a new order."""
    k = max(1, int(round(extra * n / 2)))  # pairs
    source = torch.randint(0, n, (k,), generator=generator)
    factor = 0.5 + 1.5 * torch.rand(k, generator=generator)
    factor = factor * torch.where(torch.rand(k, generator=generator) < 0.5, -1.0, 1.0)
    select = torch.cat([torch.arange(n), source.repeat_interleave(2)])
    out_scale = torch.cat([torch.ones(n), factor.repeat_interleave(2)])
    merge = torch.zeros(n, n + 2 * k)
    merge[torch.arange(n), torch.arange(n)] = 1.0
    column = torch.randint(0, n, (k,), generator=generator)
    weight = torch.randn(k, generator=generator)
    pairs = n + 2 * torch.arange(k)
    merge[column, pairs] = weight
    merge[column, pairs + 1] = -weight
    order = torch.randperm(n + 2 * k, generator=generator)
    return Plan(select[order], out_scale[order], merge[:, order])


@register("obfuscate")
class Obfuscate(Attack):
    Config = ObfuscateConfig
    config: ObfuscateConfig
    summary = "dummy unit pairs that cancel, shuffled in (structural obfuscation; same function)"
    ladder = ("extra", (0.25, 0.5, 1.0))
    adaptive = True

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        return rewrite_groups(model, lambda n: dummy_plan(n, self.config.extra, generator))
