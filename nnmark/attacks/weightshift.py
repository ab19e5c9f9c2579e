"""Weight shifting (WRT, Lukas et al. 2022): shift every conv filter, add noise, fine-tune.

Threat model: weights plus labelled thief data. Each filter is shifted by `shift` times the
layer's weight std in a random direction and perturbed by Gaussian noise, then a short fine-tune
restores accuracy while the weights stay far from the marked ones.

Example: ``nnmark attack weightshift marked.safetensors --data digits --set shift=0.5``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class WeightShiftConfig:
    shift: float = 0.2
    sigma: float = 0.05
    epochs: int = 5
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(self.shift >= 0 and self.sigma >= 0, "shift and sigma must be >= 0")


@register("weightshift")
class WeightShift(Attack):
    Config = WeightShiftConfig
    config: WeightShiftConfig
    needs_data = True
    summary = "shift conv filters, add noise, then fine-tune"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        with torch.no_grad():
            for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
                w = conv.weight
                std = float(w.std())
                sign = torch.randint(0, 2, (w.shape[0], 1, 1, 1), generator=generator) * 2 - 1
                w.add_(
                    sign * c.shift * std + torch.randn(w.shape, generator=generator) * c.sigma * std
                )
        x, y = data.tensors("thief")
        return train_on(model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator)
