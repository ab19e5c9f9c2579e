"""Distillation / model extraction: a fresh student learns from the suspect's answers.

Threat model: black-box query access and the thief's own unlabeled inputs (the thief split).
The student (the suspect's architecture, or another zoo model) is trained on the suspect's soft
outputs (Hinton et al. 2015) or, when the API returns labels only, on its top-1 labels. `queries`
caps how many thief inputs are sent (0: all). Weight-space marks do not survive: the student's
weights are new; marks that live in the function (trigger sets) may.

Example: ``nnmark attack distill marked.safetensors --data digits --set labels_only=true``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import fresh_copy, train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.tasks import get_task


@dataclass(frozen=True)
class DistillConfig:
    epochs: int = 15
    lr: float = 1e-3
    queries: int = 0
    labels_only: bool = False
    temperature: float = 2.0
    arch: str | None = None

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.queries >= 0, f"queries must be >= 0, got {self.queries}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")


@register("distill")
class Distill(Attack):
    Config = DistillConfig
    config: DistillConfig
    needs_data = True
    summary = "train a fresh student on the suspect's soft outputs or labels (extraction)"
    ladder = ("epochs", (2, 5, 10))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, _ = data.tensors("thief")
        if c.queries:
            x = x[torch.randperm(len(x), generator=generator)[: c.queries]]
        model.eval()
        with torch.no_grad():
            answers = torch.cat([model(x[i : i + 512]) for i in range(0, len(x), 512)])
        student = fresh_copy(model, c.arch)
        task = get_task(data.task)
        if c.labels_only and data.task == "classification":
            labels = answers.argmax(1)
            return train_on(
                student, x, labels, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator
            )
        if c.labels_only:
            answers = (answers > 0).float() * 20 - 10  # hard masks as saturated logits
        return train_on(
            student,
            x,
            answers,
            task=data.task,
            epochs=c.epochs,
            lr=c.lr,
            generator=generator,
            loss=lambda m, xb, tb: task.distill_loss(m(xb), tb, c.temperature),
        )
