"""Transfer learning (WRT): keep the suspect's features, retrain a fresh head on the thief's data.

Threat model: weights plus labelled thief data. The body is frozen and the last layer is
re-initialised and trained; marks in the body stay, marks in the answers (trigger sets) are lost.

Example: ``nnmark attack transfer marked.safetensors --data digits --set epochs=5``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import head, train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle


@dataclass(frozen=True)
class TransferConfig:
    epochs: int = 10
    lr: float = 1e-2

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")


@register("transfer")
class Transfer(Attack):
    Config = TransferConfig
    config: TransferConfig
    needs_data = True
    summary = "freeze the body, re-initialise and train the head on the thief's data"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        last = head(model)
        last.reset_parameters()
        x, y = data.tensors("thief")
        train_on(
            model,
            x,
            y,
            task=data.task,
            epochs=self.config.epochs,
            lr=self.config.lr,
            generator=generator,
            params=last.parameters(),
        )
        return model
