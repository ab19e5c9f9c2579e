"""Adversarial fine-tuning (WRT; Madry et al. 2018): fine-tune on FGSM / PGD examples.

Threat model: weights plus labelled thief data. Training on worst-case perturbations moves the
decision boundary, which erodes frontier-stitching and other boundary marks.

Example: ``nnmark attack advtrain marked.safetensors --data digits --set eps=0.1 --set steps=3``
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
class AdvTrainConfig:
    eps: float = 0.1
    steps: int = 1  # 1 = FGSM, more = PGD
    epochs: int = 3
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(self.eps >= 0, f"eps must be >= 0, got {self.eps}")
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")


def perturb(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int
) -> torch.Tensor:
    """L-infinity PGD (FGSM for one step) inside the eps ball, inputs kept in [0, 1]."""
    adv = x.clone()
    alpha = eps if steps == 1 else 2.5 * eps / steps
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = (adv.detach() + alpha * grad.sign()).clamp(x - eps, x + eps).clamp(0, 1)
    return adv.detach()


@register("advtrain")
class AdvTrain(Attack):
    Config = AdvTrainConfig
    config: AdvTrainConfig
    needs_data = True
    summary = "adversarial fine-tuning on FGSM/PGD examples"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, y = data.tensors("thief")

        def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            adv = perturb(m, xb, yb, c.eps, c.steps)
            return 0.5 * (F.cross_entropy(m(xb), yb) + F.cross_entropy(m(adv), yb))

        return train_on(
            model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator, loss=loss
        )
