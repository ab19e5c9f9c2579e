"""Marks embedded under torch.distributed: DistributedDataParallel (DDP) training.

Every scheme hook works under DDP:

- ``prepare`` runs on the plain module *before* it is wrapped (newlabel grows the head, and DDP
  registers its parameters at construction), on every rank with the same key, so every rank makes
  the same change; DDP then broadcasts rank 0's weights.
- ``penalty`` (uchida, ...) reads the wrapped module's parameters through
  `nnmark.schemes.base.unwrap`; its gradient flows through the same backward pass as the task
  loss, so DDP all-reduces it with the rest (every rank computes the same penalty).
- ``batches`` (trigger sets): a stored trigger set (adi, unrelated, frontier) is sharded like the
  data, rank r keeping triggers r, r + W, r + 2W, ... (TriggerScheme.shard, as
  DistributedSampler does), so the global batch mixes distinct triggers in the single-process
  proportion. Schemes that make their key inputs from each batch's own images (content, noise,
  newlabel) have nothing to shard: each rank marks its own data shard's images.
- ``step`` (tartaglione): a custom step calls ``loss_fn(model, batch)`` on the DDP module and may
  run several forward/backward passes before the optimiser step, and how many backward passes
  it runs may depend on the rank's own batch (tartaglione skips a replica whose loss is over its
  cap). DDP all-reduces in every backward, so ranks that disagree would pair one rank's pass
  with another's (or hang). So the custom step runs under ``no_sync`` and the gradients it
  accumulated are averaged over the ranks once, just before the optimiser step (a step pre-hook,
  `nnmark.train.sync_gradients_before_step`): every rank takes the same step (checked by the
  DDP test: identical weights on every rank).
- ``finalize`` runs on every rank on the unwrapped module (deterministic).

FSDP is not supported: sharded parameters are not whole tensors on any rank, so a penalty on a
layer's weight or in-place writes at key positions would see only a shard. See
docs/integrations.md.

Example (``torchrun --nproc_per_node=2 examples/ddp_embed.py``)::

    dist.init_process_group("gloo")
    model = fit_ddp(new_model("cnn", data, seed=0), data, [Uchida(mark)], TrainConfig(epochs=5))
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.layers import tensor_names
from nnmark.schemes.base import Batch, LossFn, Scheme, plain_step, unwrap
from nnmark.suspect import arch_mismatch
from nnmark.tasks import Task
from nnmark.train import (
    ProgressFn,
    Shard,
    TrainConfig,
    fit,
    pick_step,
    shard_scheme,
)

log = logging.getLogger(__name__)


def overrides(scheme: Scheme | type[Scheme], hook: str) -> bool:
    """Whether a scheme (class) fills `hook` itself instead of the base's no-op."""
    cls = scheme if isinstance(scheme, type) else type(scheme)
    return getattr(cls, hook) is not getattr(Scheme, hook)


def check_target(target: nn.Module | None, owner: nn.Module | None, where: str) -> None:
    """A `target` the framework does not train would be marked by nothing: the model trained
    unmarked, no error (red team, session 26: Lightning with a copy of the net as target, BER
    0.44 after 8 epochs). It must be a submodule of what the framework trains."""
    if target is None or owner is None:
        return
    if not any(m is target for m in owner.modules()):
        raise NNMarkError(
            f"{where}: target is not a submodule of the model it trains, so no training step "
            "would reach it; pass the module itself (e.g. the net inside your LightningModule)"
        )


def check_arch(model: nn.Module, schemes: Sequence[Scheme]) -> None:
    """A white-box mark whose key commits to an architecture `model` is not (OwnerKey.arch)
    would never be read from it (nnmark.suspect.arch_mismatch): refused before training. A
    key committing to none marks all the same, with a warning: the marked layer moved into a
    deeper model, noise left under its name, then reads not_found with no reason."""
    names = tensor_names(model)
    for s in schemes:
        if s.kind != "whitebox":
            continue
        if s.mark.arch is None:
            log.warning(
                "the key of the %s mark commits to no architecture: commit the module it marks "
                "before planning (OwnerKey.new(...).with_module(model)), or a copy of the model "
                "with the marked layer moved and noise left under its name reads not_found with "
                "no reason",
                s.name,
            )
            continue
        why = arch_mismatch(s.mark, None, names)
        if why is not None:
            raise NNMarkError(
                f"the key of the {s.name} mark commits to another model than the one it marks, "
                f"so it would never be read from it: {why}"
            )


class SchemeHooks:
    """The schemes' hooks bundled for a training loop nnmark does not own (DDP, Lightning, HF).

    `prepare` and `finalize` chain over the schemes; `penalty` sums them; `step` is the one custom
    step (at most one scheme may replace it) or the plain one; `batches` wraps an epoch's batches
    and `mix` mixes a single batch (for frameworks that hand over one batch at a time).
    """

    def __init__(self, schemes: Sequence[Scheme], *, rank: int = 0, world_size: int = 1) -> None:
        self.schemes = [shard_scheme(s, rank, world_size) for s in schemes]
        self._step = pick_step(self.schemes)
        self._feed: list[Batch] = []
        self._mixed: Iterator[Batch] | None = None
        self._per_batch = 1

    @property
    def custom_step(self) -> Scheme | None:
        """The scheme that replaces the optimiser step, if any."""
        return next((s for s in self.schemes if overrides(s, "step")), None)

    @property
    def mixes_batches(self) -> bool:
        return any(overrides(s, "batches") for s in self.schemes)

    @property
    def steps_per_batch(self) -> int:
        """Optimiser steps the schemes ask for per training batch (their product: each scheme's
        `batches` wraps the one before)."""
        return math.prod(s.steps_per_batch for s in self.schemes)

    def prepare(self, model: nn.Module) -> nn.Module:
        check_arch(model, self.schemes)
        for s in self.schemes:
            model = s.prepare(model)
        return model

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for s in self.schemes:
            batches = s.batches(batches)
        return batches

    def mix(self, batch: Batch) -> Batch:
        """One batch through every scheme's `batches`, keeping their generators across calls.

        A scheme may make several training batches of each one (newlabel's `repeats`: extra
        steps on the same images with fresh key samples); for a framework that takes one step
        per batch they come back concatenated: one step on their mean loss, every key sample
        and negative still shown. `mix_steps` gives them one by one.
        """
        out = self.mix_steps(batch)
        if len(out) == 1:
            return out[0]
        return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out])

    def new_epoch(self) -> None:
        """Start the schemes' `batches` chain afresh, as nnmark.train.fit does each epoch (every
        `batches` call starts its own generators): a framework's epochs then mix in what fit's
        do. Kept across epochs, the wrapper's second epoch drew other key samples than fit's
        (session 40)."""
        self._mixed = None
        self._feed.clear()

    def mix_steps(self, batch: Batch) -> list[Batch]:
        """The batches every scheme's `batches` makes of one batch, one optimiser step each."""
        if not self.mixes_batches:
            return [batch]
        if self._mixed is None:
            self._per_batch = self._outputs_per_batch(batch)
            self._mixed = self.batches(_Endless(self._feed))
        self._feed.append(batch)
        out = [next(self._mixed) for _ in range(self._per_batch)]
        if self._feed:
            raise NNMarkError(
                "a scheme's batches hook buffers batches; it cannot mix one at a time"
            )
        return out

    def _outputs_per_batch(self, batch: Batch) -> int:
        """How many batches the schemes' chain makes of one batch, counted on a throwaway
        chain (each `batches` call starts its own generators, so the real chain is untouched)."""
        probe = self.batches(_Endless([batch], starve=_Starved))
        count = 0
        try:
            while True:
                next(probe)
                count += 1
                if count > 1024:
                    raise NNMarkError("a scheme's batches hook makes over 1024 batches of one")
        except _Starved:
            pass
        if count == 0:
            raise NNMarkError(
                "a scheme's batches hook buffers batches; it cannot mix one at a time"
            )
        return count

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        total: torch.Tensor | None = None
        for s in self.schemes:
            p = s.penalty(model, batch)
            total = p if total is None else total + p
        return total if total is not None else torch.zeros(())

    def loss_fn(self, task_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> LossFn:
        """task_loss(model(x), y) plus every scheme's penalty: the `loss_fn` of `step`."""

        def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
            x, y = batch
            return task_loss(model(x), y) + self.penalty(model, batch)

        return loss_fn

    def step(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
    ) -> float:
        return self._step(model, batch, loss_fn, optimizer)

    def finalize(self, model: nn.Module) -> nn.Module:
        inner = unwrap(model)
        for s in self.schemes:
            inner = s.finalize(inner)
        return inner


class _Starved(Exception):
    """A probe chain asked for a second batch (see SchemeHooks._outputs_per_batch)."""


class _Endless:
    """An iterator over a list that never raises StopIteration while the caller feeds it."""

    def __init__(self, feed: list[Batch], starve: type[Exception] = NNMarkError) -> None:
        self.feed = feed
        self.starve = starve

    def __iter__(self) -> _Endless:
        return self

    def __next__(self) -> Batch:
        if not self.feed:
            raise self.starve("internal: a scheme asked for a batch that was not fed")
        return self.feed.pop()


def fit_ddp(
    model: nn.Module,
    data: DataBundle,
    schemes: Sequence[Scheme] = (),
    config: TrainConfig | None = None,
    *,
    task: Task | str | None = None,
    teacher: nn.Module | None = None,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    **ddp_kwargs: Any,
) -> nn.Module:
    """`nnmark.train.fit` under DistributedDataParallel; returns the unwrapped module (eval).

    Call it on every rank after `torch.distributed.init_process_group`, with the same model
    seed, key and config. Each rank trains on its shard of the split (`config.batch_size` per
    rank; the local order dealt out as DistributedSampler deals) and its shard of every trigger
    set. It is the same loop as `fit` (teacher, schedule, BatchNorm recalibration, whose
    statistics are then averaged over the ranks); on one process it gives `fit`'s weights.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise NNMarkError("fit_ddp needs torch.distributed initialised (init_process_group)")
    world = dist.get_world_size()

    def average(t: torch.Tensor) -> None:
        dist.all_reduce(t)
        t /= world

    shard = Shard(
        rank=dist.get_rank(),
        world=world,
        wrap=lambda m: nn.parallel.DistributedDataParallel(m, **ddp_kwargs),
        average=average,
    )
    return fit(
        model,
        data,
        schemes,
        config,
        task=task,
        teacher=teacher,
        device=device,
        progress=progress,
        shard=shard,
    )


def state_hash(model: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, bytes): equal on every rank."""
    from nnmark.io import weights_sha256

    return weights_sha256(unwrap(model))


__all__ = [
    "SchemeHooks",
    "fit_ddp",
    "overrides",
    "plain_step",
    "shard_scheme",
    "state_hash",
]
