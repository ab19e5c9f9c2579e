"""The embedding hooks as the training loop sees them: a batch, a loss, one optimiser step, and
`Hooks`, the defaults every scheme inherits (nnmark.schemes.base.Scheme) and overrides where it
needs to. They live below both the schemes and the loop (nnmark.train), so the loop never
imports a scheme and a scheme may call the loop (frontier's warm-up).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def plain_step(
    model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
) -> float:
    """One ordinary optimiser step on loss_fn (task loss plus every scheme's penalty)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


class Hooks:
    """The hooks with their do-nothing defaults (all optional for a scheme): `prepare` once,
    `batches` around each epoch's batches, `penalty` added to the loss, `step` replacing the
    optimiser step (a scheme that overrides it has a custom step), `finalize` at the end."""

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        return batches

    @property
    def steps_per_batch(self) -> int:
        """How many batches, each one optimiser step, `batches` makes of every training batch
        (newlabel's repeats). A loop nnmark does not own takes them as steps of their own where
        it can (Lightning's manual optimization), else as one step on all of them."""
        return 1

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return torch.zeros(())

    def step(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
    ) -> float:
        return plain_step(model, batch, loss_fn, optimizer)

    def finalize(self, model: nn.Module) -> nn.Module:
        return model


def has_custom_step(hooks: Hooks) -> bool:
    """Whether `hooks` replaces the optimiser step (tartaglione, watermas)."""
    return type(hooks).step is not Hooks.step
