"""Marks embedded while training with Lightning: a wrapper around the user's LightningModule.

A Lightning callback cannot add a term to the loss, so `Watermarked` wraps the user's module:
its `training_step` calls the user's own `training_step` and adds every scheme's penalty; trigger
sets are mixed into each (x, y) batch first; `configure_optimizers`, `forward`, validation and
test steps are the user's. Schemes that replace the optimiser step (`step` overridden, e.g.
tartaglione) switch the wrapper to Lightning's manual optimization: the scheme runs its own
forward/backward passes and optimiser step, with the user's training_step (+ penalties) as loss.
So do schemes that make several optimiser steps of each batch (`steps_per_batch`: newlabel's
repeats, extra steps on the same images with fresh key samples): each of those batches is a
step of its own, as under nnmark.train.fit. Automatic optimization would take them as one
larger step, and the digits cnn then answered newlabel's decoys with the new label at 0.12 to
0.25 (0.03 to 0.19 under fit): 4 of 10 keys claimed, against 10 of 10 as steps of their own
(`python benchmarks/lightning_newlabel.py`).
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

Limits: a custom-step or several-step scheme runs its passes outside Lightning's strategy
wrapper, so with manual optimization use a single device (automatic optimization — penalty and
one-step trigger-set schemes — works with Lightning's own DDP strategy, the penalty being part
of the training_step's loss); on several devices, or with gradient clipping, gradient
accumulation (fixed or scheduled) or max_steps set on the Trainer, a several-step scheme takes
one step on its concatenated batches instead (`_several_steps`).
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
        #: the schemes ask for several optimiser steps per batch (steps_per_batch > 1)
        self._stepwise = (
            self.nnmark_hooks.custom_step is None and self.nnmark_hooks.steps_per_batch > 1
        )
        #: the metric each plateau scheduler monitors (Lightning drops it under manual
        #: optimization), read from the user's configure_optimizers
        self._monitors: dict[int, str] = {}
        #: schedulers whose configuration says "reduce_on_plateau" (custom plateau schedulers)
        self._plateaus: set[int] = set()

    @property
    def automatic_optimization(self) -> bool:
        """Manual for a custom-step scheme, and for several steps per batch where the Trainer
        allows them (`_several_steps`); automatic otherwise. Read by Lightning, not set."""
        return self.nnmark_hooks.custom_step is None and not self._several_steps()

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise NNMarkError("Watermarked picks its optimization mode from its schemes")

    def _several_steps(self) -> bool:
        """Whether each of the schemes' batches is a step of its own: asked for, and possible
        under this Trainer. One device (the steps run outside the strategy's wrapper); no
        gradient clipping or accumulation, fixed or scheduled (Lightning's manual optimization
        refuses them); no `max_steps` (it would count each of the steps, not the batches).
        Otherwise one step on their concatenation, as under automatic optimization."""
        if not self._stepwise:
            return False
        trainer = self._trainer
        if trainer is None:
            return True
        from lightning.pytorch.callbacks import GradientAccumulationScheduler

        return (
            trainer.world_size == 1
            and not trainer.gradient_clip_val
            and trainer.accumulate_grad_batches == 1
            and not any(isinstance(c, GradientAccumulationScheduler) for c in trainer.callbacks)
            and trainer.max_steps in (-1, None)
        )

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
        out = self.inner.configure_optimizers()
        self._monitors, self._plateaus = _plateau_settings(out)
        return out

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """The user's (a scheduler outside torch needs it), in either optimization mode."""
        self.inner.lr_scheduler_step(scheduler, metric)

    def _mix(self, batch: Any, *, stepwise: bool) -> list[Any]:
        """The batches to train on: one (the schemes' batches concatenated), or one per step."""
        if not self.nnmark_hooks.mixes_batches:
            return [batch]
        if not (isinstance(batch, list | tuple) and len(batch) == 2):
            raise NNMarkError("trigger-set schemes need (x, y) batches")
        x, y = batch
        if stepwise:
            return self.nnmark_hooks.mix_steps((x, y))
        return [self.nnmark_hooks.mix((x, y))]

    def _enter(self) -> None:
        """Let the user's module `self.log()` from the step Lightning is running now."""
        self.inner._current_fx_name = self._current_fx_name

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        self._enter()
        steps = self._mix(batch, stepwise=self._several_steps())
        if self.automatic_optimization:
            (batch,) = steps
            loss = _loss_of(self.inner.training_step(batch, batch_idx))
            return loss + self.nnmark_hooks.penalty(self.target, batch)

        def loss_fn(_model: nn.Module, b: Batch) -> torch.Tensor:
            return _loss_of(self.inner.training_step(b, batch_idx)) + self.nnmark_hooks.penalty(
                self.target, b
            )

        optimizer = self.optimizers()
        if isinstance(optimizer, list):
            raise NNMarkError(
                "a custom-step or several-step scheme (manual optimization) needs exactly one "
                "optimizer"
            )
        if self.nnmark_hooks.custom_step is not None:
            (batch,) = steps
            loss = self.nnmark_hooks.step(self.target, batch, loss_fn, optimizer)
        else:  # one ordinary step per batch; manual_backward, so a precision plugin scales it
            losses = []
            for b in steps:
                optimizer.zero_grad()
                step_loss = loss_fn(self.target, b)
                self.manual_backward(step_loss)
                optimizer.step()
                losses.append(float(step_loss.detach()))
            loss = sum(losses) / len(losses)
        self.log("train_loss", loss)
        self._schedule("step", batch_idx + 1)
        return None

    def _schedule(self, interval: str, count: int) -> None:
        """Under manual optimization Lightning steps no scheduler: step the user's as they were
        configured (`interval`, every `frequency`), through the user's `lr_scheduler_step`; a
        plateau scheduler on the metric its configuration monitors, once that metric exists."""
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        for cfg in self.trainer.lr_scheduler_configs:
            if cfg.interval != interval or count % max(1, cfg.frequency or 1):
                continue
            metric = None
            key = id(cfg.scheduler)
            if isinstance(cfg.scheduler, ReduceLROnPlateau) or key in self._plateaus:
                metric = self.trainer.callback_metrics.get(self._monitors.get(key, ""))
                if metric is None:
                    continue
            self.lr_scheduler_step(cfg.scheduler, metric)

    def on_train_epoch_start(self) -> None:
        self._enter()  # the user's hook may log
        self.inner.on_train_epoch_start()
        self.nnmark_hooks.new_epoch()  # each epoch mixes in what fit's does

    def on_train_epoch_end(self) -> None:
        self._enter()
        self.inner.on_train_epoch_end()
        if not self.automatic_optimization:
            self._schedule("epoch", self.current_epoch + 1)

    def validation_step(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        return self.inner.validation_step(*args, **kwargs)

    def test_step(self, *args: Any, **kwargs: Any) -> Any:
        self._enter()
        return self.inner.test_step(*args, **kwargs)

    def on_train_end(self) -> None:
        self.inner.on_train_end()
        self._target[0] = self.nnmark_hooks.finalize(self.target)


def _plateau_settings(config: Any, monitor: str | None = None) -> tuple[dict[int, str], set[int]]:
    """From what configure_optimizers returned (an optimizer, lists of them and of schedulers,
    or dicts with "lr_scheduler" / "scheduler", "monitor" and "reduce_on_plateau"): id(scheduler)
    -> the metric it monitors, and the ids of those configured "reduce_on_plateau"."""
    monitors: dict[int, str] = {}
    flagged: set[int] = set()
    if isinstance(config, list | tuple):
        for item in config:
            m, f = _plateau_settings(item, monitor)
            monitors.update(m)
            flagged |= f
    elif isinstance(config, dict):
        monitor = config.get("monitor", monitor)
        if "scheduler" in config:
            if monitor:
                monitors[id(config["scheduler"])] = monitor
            if config.get("reduce_on_plateau"):
                flagged.add(id(config["scheduler"]))
        if "lr_scheduler" in config:
            m, f = _plateau_settings(config["lr_scheduler"], monitor)
            monitors.update(m)
            flagged |= f
    elif monitor and hasattr(config, "step") and not hasattr(config, "param_groups"):
        monitors[id(config)] = monitor  # a bare scheduler under a dict's "monitor"
    return monitors, flagged


__all__ = ["Watermarked", "supported_schemes"]
