"""Fine-tuning with label smoothing (WRT's `label smoothing` removal attack, Lukas et al. 2022).

Threat model: weights plus labelled thief data. Smoothed targets flatten the confident answers
that trigger-set marks rely on, at little accuracy cost.

Example: ``nnmark attack labelsmooth marked.safetensors --data digits --set smoothing=0.2``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class LabelSmoothConfig:
    smoothing: float = 0.2
    epochs: int = 5
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(0 <= self.smoothing < 1, f"smoothing must be in [0, 1), got {self.smoothing}")


@register("labelsmooth")
class LabelSmooth(Attack):
    Config = LabelSmoothConfig
    config: LabelSmoothConfig
    needs_data = True
    summary = "fine-tune on the thief's data with label smoothing"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, y = data.tensors("thief")
        return train_on(
            model,
            x,
            y,
            task=data.task,
            epochs=c.epochs,
            lr=c.lr,
            generator=generator,
            loss=lambda m, xb, yb: F.cross_entropy(m(xb), yb, label_smoothing=c.smoothing),
        )
