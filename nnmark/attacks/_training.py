"""The thief's training recipe, shared by the training-based attacks.

A configuration of nnmark's one loop (`nnmark.train.run_epochs`): the attacks change the loss
(label smoothing, adversarial examples, gradient ascent on a forget set) and the targets (a
suspect's own answers) and train on tensors the thief holds, with a constant-rate Adam and
optional early stopping on the thief's own validation data; no scheme hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn

from nnmark.device import device_of
from nnmark.hooks import Batch
from nnmark.tasks import get_task
from nnmark.train import run_epochs

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def train_on(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    task: str,
    epochs: int,
    lr: float,
    generator: torch.Generator,
    batch_size: int = 64,
    loss: LossFn | None = None,
    params: Iterable[nn.Parameter] | None = None,
    weight_decay: float = 0.0,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    patience: int = 0,
) -> nn.Module:
    """Adam on (x, y) for `epochs`, batches shuffled by `generator`; returns the model.

    The thief's recipe as a configuration of nnmark's one training loop (`run_epochs`), on the
    model's device. With `val` (the thief's own held-out inputs and targets), training stops
    once the loss there has not improved for `patience` epochs and the model of the best epoch
    is returned: trained to convergence, as a competent thief would, rather than for a guessed
    length.
    """
    t = get_task(task)
    per_batch = loss or (lambda m, xb, yb: t.loss(m(xb), yb))
    chosen = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.Adam(chosen, lr=lr, weight_decay=weight_decay)

    def epoch_batches() -> Iterator[Batch]:
        order = torch.randperm(len(x), generator=generator)
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]

    run_epochs(
        model,
        epoch_batches,
        lambda m, batch: per_batch(m, *batch),
        opt,
        epochs,
        validate=None if val is None else (lambda m: held_out_loss(m, per_batch, *val)),
        patience=patience,
    )
    model.eval()
    return model


@torch.no_grad()
def held_out_loss(
    model: nn.Module, loss: LossFn, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512
) -> float:
    """The mean loss on held-out data, in eval mode."""
    model.eval()
    device = device_of(model)
    total = 0.0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        total += float(loss(model, xb, yb)) * len(xb)
    return total / max(1, len(x))


def hold_out(
    n: int, fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices of n items: a `fraction` (at least one item) held out."""
    order = torch.randperm(n, generator=generator)
    k = max(1, round(n * fraction)) if fraction > 0 and n > 1 else 0
    return order[k:], order[:k]


def fresh_copy(model: nn.Module, arch: str | None = None) -> nn.Module:
    """A newly initialised model of the suspect's architecture (or of zoo `arch`)."""
    from nnmark.models import create_model

    kwargs = dict(getattr(model, "nnmark_kwargs", {}))
    name = arch or getattr(model, "nnmark_arch", None)
    if name is None:
        import copy

        student = copy.deepcopy(model)
        for m in student.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return student
    return create_model(name, **kwargs)


def head(model: nn.Module) -> nn.Module:
    from nnmark.layers import weighted_layers

    return list(weighted_layers(model).values())[-1]


def seed_of(generator: torch.Generator) -> int:
    """A seed drawn from the attack's generator, for libraries that take an int."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """The suspect's outputs on `x`, in eval mode and in batches (the thief's queries)."""
    model.eval()
    device = device_of(model)
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """Apply a trigger: (1 - mask) * x + mask * pattern (mask (1, H, W), pattern (C, H, W))."""
    return (1 - mask) * x + mask * pattern
