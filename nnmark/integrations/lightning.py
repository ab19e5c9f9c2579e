"""Marks embedded while training with Lightning: a wrapper around the user's LightningModule.

A Lightning callback cannot add a term to the loss, so `Watermarked` wraps the user's module:
its `training_step` calls the user's own `training_step` and adds every scheme's penalty; trigger
sets are mixed into each (x, y) batch first; `configure_optimizers`, `forward`, validation and
test steps are the user's. Schemes that replace the optimiser step (`step` overridden, e.g.
tartaglione) switch the wrapper to Lightning's manual optimization: the scheme runs its own
forward/backward passes and optimiser step, with the user's training_step (+ penalties) as loss.
`supported_schemes()` lists, from the scheme registry, how each scheme runs.

The schemes' layer names are those of `target`, the module the key was planned on (the
LightningModule itself by default, or e.g. its `net`); verify that module afterwards. Commit
the key to that module's tensors before planning (`OwnerKey.with_module`): its white-box marks
are then not read from a model holding other tensors (the marked layer moved into a deeper
copy, noise left under its name); a key committed to another module is refused here, and one
committed to none marks with a warning.

Example::

    net = new_model("cnn", data, seed=0)
    key = OwnerKey.new("me").with_module(net)
    lit = MyLitClassifier(net)                       # the user's own LightningModule
    mark = Uchida.plan(net, key, UchidaConfig(), bits=64)
    trainer = lightning.Trainer(max_epochs=5)
    trainer.fit(Watermarked(lit, [Uchida(mark)], target=net), loader)
    nnmark.verify(net, key.with_mark(mark))

Limits: a custom-step scheme runs its extra forward passes outside Lightning's strategy
wrapper, so with manual optimization use a single device (automatic optimization — penalty and
trigger-set schemes — works with Lightning's own DDP strategy, the penalty being part of the
training_step's loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.integrations.ddp import SchemeHooks, check_target
from nnmark.integrations.support import lightning_support
from nnmark.schemes.base import Batch, Scheme

#: How `Watermarked` runs each registered scheme (importable without lightning: support.py).
supported_schemes = lightning_support


def _loss_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict) and isinstance(out.get("loss"), torch.Tensor):
        return out["loss"]
    raise NNMarkError("the wrapped training_step must return the loss (a tensor or {'loss': ...})")


class Watermarked(L.LightningModule):
    """The user's LightningModule with nnmark's schemes in its training step."""

    def __init__(
        self,
        module: L.LightningModule,
        schemes: Sequence[Scheme],
        *,
        target: nn.Module | None = None,
    ) -> None:
        check_target(target, module, "Watermarked")
        super().__init__()
        self.inner = module
        self._schemes = list(schemes)
        self.nnmark_hooks = SchemeHooks(schemes)
        # prepare before configure_optimizers (newlabel grows the head, tartaglione freezes)
        prepared = self.nnmark_hooks.prepare(target if target is not None else module)
        self._target = [prepared]  # a list: not registered twice as a submodule
        self.automatic_optimization = self.nnmark_hooks.custom_step is None

    @property
    def target(self) -> nn.Module:
        return self._target[0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.inner(*args, **kwargs)

    def setup(self, stage: str) -> None:
        self.inner.setup(stage)
        world = self.trainer.world_size
        if world > 1:  # each rank mixes its own shard of every trigger set, as its data shard
            rank = self.trainer.global_rank
            self.nnmark_hooks = SchemeHooks(self._schemes, rank=rank, world_size=world)

    def teardown(self, stage: str) -> None:
        self.inner.teardown(stage)

    def configure_optimizers(self) -> Any:
        return self.inner.configure_optimizers()

    def _mix(self, batch: Any) -> Any:
        if not self.nnmark_hooks.mixes_batches:
            return batch
        if not (isinstance(batch, list | tuple) and len(batch) == 2):
            raise NNMarkError("trigger-set schemes need (x, y) batches")
        x, y = batch
        return self.nnmark_hooks.mix((x, y))

    def _enter(self) -> None:
        """Let the user's module `self.log()` from the step Lightning is running now."""
        self.inner._current_fx_name = self._current_fx_name

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self._enter()
        batch = self._mix(batch)
        if self.automatic_optimization:
            loss = _loss_of(self.inner.training_step(batch, batch_idx))
            return loss + self.nnmark_hooks.penalty(self.target, batch)

        def loss_fn(_model: nn.Module, b: Batch) -> torch.Tensor:
            return _loss_of(self.inner.training_step(b, batch_idx)) + self.nnmark_hooks.penalty(
                self.target, b
            )

        optimizer = self.optimizers()
        if isinstance(optimizer, list):
            raise NNMarkError("a custom-step scheme needs exactly one optimizer")
        loss = self.nnmark_hooks.step(self.target, batch, loss_fn, optimizer)
        self.log("train_loss", loss)
        return None

    def on_train_epoch_end(self) -> None:
        self._enter()
        self.inner.on_train_epoch_end()
        if not self.automatic_optimization:
            schedulers = self.lr_schedulers()
            for s in schedulers if isinstance(schedulers, list) else [schedulers]:
                if s is not None:
                    s.step()

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        return self.inner.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        return self.inner.test_step(*args, **kwargs)

    def on_train_end(self) -> None:
        self.inner.on_train_end()
        self._target[0] = self.nnmark_hooks.finalize(self.target)


__all__ = ["Watermarked", "supported_schemes"]
