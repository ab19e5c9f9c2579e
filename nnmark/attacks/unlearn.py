"""Unlearning (lecture 000): forget the answers on guessed key inputs, keep the task.

Threat model: weights plus labelled thief data, no key. The thief guesses the *kind* of key
inputs a black-box mark uses (`guess`: `noise` = uniform noise images, `ood` = inverted thief
images, `pattern` = thief images with a stamped corner patch), and trains with gradient ascent on
the model's own answers for that forget set (bounded at chance level, log C) while fine-tuning on
a retain set (the thief split). Needs no key: the attack on trigger-set marks.

Example: ``nnmark attack unlearn marked.safetensors --data digits --set guess=noise``
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import predict, train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import MAX_DATA_VALUES, DataBundle
from nnmark.errors import NNMarkError

#: The most guessed inputs the forget set may hold: it is allocated whole (forget=10^9 asked for
#: 8 GB, red team, session 27), and `run` also bounds forget x input values.
MAX_FORGET = 1 << 16


@dataclass(frozen=True)
class UnlearnConfig:
    guess: Literal["noise", "ood", "pattern"] = "noise"
    forget: int = 256
    weight: float = 1.0
    epochs: int = 3
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(
            1 <= self.forget <= MAX_FORGET,
            f"forget must be in [1, {MAX_FORGET}], got {self.forget}",
        )


def guessed_inputs(kind: str, x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    base = x[torch.randint(0, len(x), (n,), generator=generator)]
    if kind == "noise":
        return torch.rand((n, *x.shape[1:]), generator=generator)
    if kind == "ood":
        return 1.0 - base
    patched = base.clone()
    side = max(1, x.shape[-1] // 4)
    patched[..., -side:, -side:] = 1.0
    return patched


@register("unlearn")
class Unlearn(Attack):
    Config = UnlearnConfig
    config: UnlearnConfig
    needs_data = True
    summary = "gradient ascent on guessed key inputs, fine-tuning on the thief's data"
    #: the ascent's weight: at 1 (the default) it cost 5 to 12 points of digits accuracy on six
    #: marked models of the quick bench, outside the fidelity budget; a thief would back off
    ladder = ("weight", (0.1, 0.3, 1.0))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, y = data.tensors("thief")
        values = c.forget * x[0].numel()
        if values > MAX_DATA_VALUES:
            raise NNMarkError(
                f"unlearn: forget={c.forget} inputs of {x[0].numel():,} values make {values:,} "
                f"values (at most {MAX_DATA_VALUES:,})"
            )
        forget = guessed_inputs(c.guess, x, c.forget, generator)
        with torch.no_grad():  # in batches: one batch of 65,536 inputs through a wide mlp
            # asked for 17 GB (red team, session 27)
            answers = predict(model, forget, 256).argmax(1).to(forget.device)
        cap = math.log(max(data.num_classes, 2))

        def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            idx = torch.randint(0, len(forget), (min(len(xb), len(forget)),), generator=generator)
            ascent = F.cross_entropy(m(forget[idx]), answers[idx]).clamp(max=cap)
            return F.cross_entropy(m(xb), yb) - c.weight * ascent

        return train_on(
            model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator, loss=loss
        )
