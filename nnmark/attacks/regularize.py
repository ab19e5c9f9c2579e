"""Regularisation attack (WRT, Shafieinejad et al.): strong L2 decay, then plain fine-tuning.

Threat model: weights plus labelled thief data. A large weight decay shrinks every weight toward
zero, erasing small structured offsets such as projection marks; a short fine-tune recovers
accuracy.

Example: ``nnmark attack regularize marked.safetensors --data digits --set weight_decay=0.1``
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
class RegularizeConfig:
    weight_decay: float = 0.05
    decay_epochs: int = 3
    epochs: int = 3
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")


@register("regularize")
class Regularize(Attack):
    Config = RegularizeConfig
    config: RegularizeConfig
    needs_data = True
    summary = "strong L2 weight decay, then fine-tune"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, y = data.tensors("thief")
        train_on(
            model,
            x,
            y,
            task=data.task,
            epochs=c.decay_epochs,
            lr=c.lr,
            generator=generator,
            weight_decay=c.weight_decay,
        )
        return train_on(model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator)
