"""Neural Cleanse (Wang et al., IEEE S&P 2019): reverse-engineer a trigger per class, unlearn it.

Threat model: the weights plus some clean labelled thief data, no key. For every class t the
smallest trigger (a mask m and a pattern p, stamped as (1 - m) * x + m * p) that sends clean
inputs to t is found by gradient descent on cross-entropy + lam * |m|_1, with the paper's
adaptive lam. A backdoor (or a trigger-set watermark) makes its target class reachable with a
far smaller mask: the class whose mask L1 norm lies more than `threshold` (2, as in the paper)
median absolute deviations below the median is flagged. The attack then unlearns it by
fine-tuning on thief images, a fraction of them stamped with the reversed trigger, with their
true labels. With no class flagged the fine-tune runs on clean data only.

The flagged class (None when no class is flagged) is logged, noted on the returned model
(`nnmark.attacks.base.findings(model)["flagged_class"]`, also `model.nnmark_flagged_class`),
printed by `nnmark attack` and kept in the output file's metadata; from the model alone it is
`detect(model, x).flagged`.

Example: ``nnmark attack neuralcleanse marked.safetensors --data digits --set steps=150``
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import stamp, train_on
from nnmark.attacks.base import Attack, note
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError

log = logging.getLogger(__name__)

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of a normal distribution's std


@dataclass(frozen=True)
class CleanseReport:
    """What reverse-engineering found: per-class mask norms, anomaly indices, flagged class."""

    norms: tuple[float, ...]
    anomaly: tuple[float, ...]
    flagged: int | None
    masks: torch.Tensor  # (classes, 1, H, W)
    patterns: torch.Tensor  # (classes, C, H, W)
    success: tuple[float, ...]  # share of stamped clean inputs sent to each class


@dataclass(frozen=True)
class NeuralCleanseConfig:
    steps: int = 150
    lam: float = 1e-2
    threshold: float = 2.0
    stamped: float = 0.2
    epochs: int = 3
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.lam > 0, f"lam must be > 0, got {self.lam}")
        check(0 <= self.stamped <= 1, f"stamped must be in [0, 1], got {self.stamped}")
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


def reverse_trigger(
    model: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    steps: int,
    lam: float,
    generator: torch.Generator,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The smallest (mask, pattern) found that sends clean `x` to `target`, and its success rate.

    Masks and patterns are tanh-parametrised into [0, 1]. lam follows the paper's schedule: up
    while the trigger works (>= 95 % of a batch), down while it does not; the smallest working
    mask seen is kept (the last one if none worked).
    """
    c, h, w = x.shape[1:]
    m_raw = torch.full((1, h, w), -2.0, requires_grad=True)
    p_raw = (torch.rand((c, h, w), generator=generator) * 2 - 1).requires_grad_(True)
    opt = torch.optim.Adam([m_raw, p_raw], lr=0.1)
    labels = torch.full((batch_size,), target, dtype=torch.long)
    best: tuple[torch.Tensor, torch.Tensor, float] | None = None
    best_norm = float("inf")
    cost = lam
    wins = 0
    for step in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=generator)
        mask = (torch.tanh(m_raw) + 1) / 2
        pattern = (torch.tanh(p_raw) + 1) / 2
        out = model(stamp(x[idx], mask, pattern))
        loss = F.cross_entropy(out, labels) + cost * mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rate = float((out.argmax(1) == target).float().mean())
        norm = float(mask.detach().sum())
        if rate >= 0.95:
            wins += 1
            if norm < best_norm:
                best_norm = norm
                best = (mask.detach().clone(), pattern.detach().clone(), rate)
        if (step + 1) % 5 == 0:
            cost = cost * 1.5 if wins >= 4 else cost / 1.5**1.5
            wins = 0
    if best is None:
        mask = ((torch.tanh(m_raw) + 1) / 2).detach()
        pattern = ((torch.tanh(p_raw) + 1) / 2).detach()
        with torch.no_grad():
            rate = float((model(stamp(x, mask, pattern)).argmax(1) == target).float().mean())
        best = (mask, pattern, rate)
    return best


def anomaly_indices(norms: torch.Tensor) -> torch.Tensor:
    """How many (consistent) median absolute deviations each norm lies below the median."""
    med = norms.median()
    mad = MAD_CONSISTENCY * (norms - med).abs().median()
    return (med - norms) / mad.clamp_min(1e-12)


def detect(
    model: nn.Module,
    x: torch.Tensor,
    *,
    num_classes: int | None = None,
    steps: int = 150,
    lam: float = 1e-2,
    threshold: float = 2.0,
    generator: torch.Generator | None = None,
) -> CleanseReport:
    """Reverse a trigger for every class from `model` and clean inputs `x`; flag the outlier.

    The model is left as it was (eval mode, no weight touched).

    >>> # report = detect(model, data.tensors("thief")[0]); report.flagged
    """
    generator = generator or torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            n = num_classes or int(model(x[:1]).shape[1])
        found = [
            reverse_trigger(model, x, t, steps=steps, lam=lam, generator=generator)
            for t in range(n)
        ]
    finally:
        for p, g in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(g)
        model.train(was_training)
    norms = torch.tensor([float(m.sum()) for m, _, _ in found])
    anomaly = anomaly_indices(norms)
    top = int(anomaly.argmax())
    flagged = top if float(anomaly[top]) > threshold else None
    log.info(
        "neural cleanse: mask L1 norms %s, anomaly indices %s, flagged class %s",
        [round(v, 2) for v in norms.tolist()],
        [round(v, 2) for v in anomaly.tolist()],
        flagged,
    )
    return CleanseReport(
        norms=tuple(norms.tolist()),
        anomaly=tuple(anomaly.tolist()),
        flagged=flagged,
        masks=torch.stack([m for m, _, _ in found]),
        patterns=torch.stack([p for _, p, _ in found]),
        success=tuple(r for _, _, r in found),
    )


def flagged_class(
    model: nn.Module, data: DataBundle, *, split: str = "thief", seed: int = 0, steps: int = 150
) -> int | None:
    """The class Neural Cleanse flags as a backdoor target in `model` (None if none)."""
    x, _ = data.tensors(split)
    gen = torch.Generator().manual_seed(seed)
    return detect(model, x, num_classes=data.num_classes, steps=steps, generator=gen).flagged


def stamped_loss(
    masks: torch.Tensor, patterns: torch.Tensor, share: float, generator: torch.Generator
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy where a `share` of each batch carries one of the triggers, labels kept."""

    def loss(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        xb = xb.clone()
        pick = torch.rand(len(xb), generator=generator) < share
        if pick.any() and len(masks):
            which = torch.randint(0, len(masks), (int(pick.sum()),), generator=generator)
            xb[pick] = stamp(xb[pick], masks[which], patterns[which])
        return F.cross_entropy(m(xb), yb)

    return loss


@register("neuralcleanse")
class NeuralCleanse(Attack):
    Config = NeuralCleanseConfig
    config: NeuralCleanseConfig
    needs_data = True
    summary = "reverse a trigger per class, flag the outlier (MAD), unlearn it by fine-tuning"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        if data.task != "classification":
            raise NNMarkError("neuralcleanse needs a classification model")
        c = self.config
        x, y = data.tensors("thief")
        report = detect(
            model,
            x,
            num_classes=data.num_classes,
            steps=c.steps,
            lam=c.lam,
            threshold=c.threshold,
            generator=generator,
        )
        chosen = [report.flagged] if report.flagged is not None else []
        loss = stamped_loss(report.masks[chosen], report.patterns[chosen], c.stamped, generator)
        train_on(
            model,
            x,
            y,
            task=data.task,
            epochs=c.epochs,
            lr=c.lr,
            generator=generator,
            batch_size=c.batch_size,
            loss=loss,
        )
        model.nnmark_flagged_class = report.flagged
        note(
            model,
            flagged_class=report.flagged,
            mask_norms=[round(v, 3) for v in report.norms],
            anomaly=[round(v, 3) for v in report.anomaly],
        )
        return model
