"""Fine-tuning on partly random labels (WRT's label-noise removal attack).

Threat model: weights plus labelled thief data; a fraction of the thief's labels is replaced by
random classes, which disturbs memorised trigger answers more than the task.

Example: ``nnmark attack labelnoise marked.safetensors --data digits --set fraction=0.2``
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
class LabelNoiseConfig:
    fraction: float = 0.2
    epochs: int = 5
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(0 <= self.fraction <= 1, f"fraction must be in [0, 1], got {self.fraction}")


@register("labelnoise")
class LabelNoise(Attack):
    Config = LabelNoiseConfig
    config: LabelNoiseConfig
    needs_data = True
    summary = "fine-tune with a fraction of random labels"
    ladder = ("fraction", (0.1, 0.3, 0.5))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, y = data.tensors("thief")
        y = y.clone()
        flip = torch.rand(len(y), generator=generator) < c.fraction
        y[flip] = torch.randint(0, data.num_classes, (int(flip.sum()),), generator=generator)
        return train_on(model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator)
