"""Fine-tuning on the thief's own data: the removal attack every watermark paper measures.

Threat model: the thief has the weights and some labelled data from the same (or another)
domain: the `thief` split by default, which the owner's training never reads. The learning rate
defaults to the owner's training rate (nnmark's default, 1e-3 with Adam). WRT's variants:
`last_layer_only` trains the head alone; `reinit_head` draws a fresh head first.

Example::

    nnmark attack finetune marked.safetensors --data digits --set epochs=10 --out ft.safetensors
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
from nnmark.train import TrainConfig, fit


@dataclass(frozen=True)
class FinetuneConfig:
    label = "finetune"
    epochs: int = 5
    lr: float = 1e-3
    split: str = "thief"
    fraction: float = 1.0
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    last_layer_only: bool = False
    reinit_head: bool = False

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")


@register("finetune")
class Finetune(Attack):
    Config = FinetuneConfig
    config: FinetuneConfig
    needs_data = True
    summary = "fine-tune on the thief's data (all layers or the head only, optional head reset)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        head = list(weighted_layers(model).values())[-1]
        if c.reinit_head:
            head.reset_parameters()  # type: ignore[operator]
        if c.last_layer_only:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in head.parameters():
                p.requires_grad_(True)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        cfg = TrainConfig(
            epochs=c.epochs,
            lr=c.lr,
            batch_size=c.batch_size,
            optimizer=c.optimizer,
            seed=seed,
            split=c.split,
            fraction=c.fraction,
        )
        fit(model, data, (), cfg)
        for p in model.parameters():
            p.requires_grad_(True)
        return model
