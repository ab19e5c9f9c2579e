"""Marks embedded while training with Hugging Face `transformers.Trainer`.

`WatermarkTrainer` is a `Trainer` subclass for any PyTorch model the Trainer accepts
(`PreTrainedModel` included): `compute_loss` adds every scheme's penalty to the model's own loss;
for image batches (`pixel_values`, `labels`) trigger-set schemes mix their triggers in first.
Schemes are bound to `target`, the module the key was planned on (the model by default), and
prepared before the optimizer is built. Under the Trainer's own distributed launch (accelerate,
DDP) the penalty is part of the loss, so its gradient is all-reduced with the rest.

`newlabel` grows the head by one class in `prepare`; a transformers model's own loss reads
`config.num_labels`, so the trainer raises it to match. A scheme that makes several training
batches of each one (`steps_per_batch`: newlabel's `repeats`, the same images with fresh key
samples) gets an optimiser step for each, as under nnmark.train.fit: the training dataloader
hands each batch over that many times (its length counts them, so the Trainer's schedule,
clipping and logging see every step; `global_step` advances 3 per batch at newlabel's
defaults). With gradient accumulation or `max_steps` (which would sum them or count them) it
is one step on them all (as before session 42, when the tiny ViT of
tests/integrations/test_hf.py answered newlabel's decoys with the new label at 0.25 to 0.34
over 5 keys and none was claimed; 1 of 5 since: benchmarks/results/hf_keys.md).

Verify with `HFSuspect(model)`: white-box tensors by the model's own names, black-box answers read from the output's `logits` (a
transformers model returns a `ModelOutput`, not a tensor).

Schemes that replace the optimiser step (`step` overridden: tartaglione, watermas) are refused:
the Trainer owns the optimiser step (gradient accumulation, scaling, clipping), so a scheme's own
step cannot run inside it; train those with `nnmark.train.fit`, `nnmark.integrations.ddp.fit_ddp`
or the Lightning wrapper. Segmentation trigger sets (segtrigger) are refused too: their targets
are float masks at the input's resolution, while transformers' segmentation models take
class-index label maps and answer at a lower resolution. `supported_schemes()` lists them from
the registry. Commit the key to the model's tensors before planning (`OwnerKey.with_module`,
as for Lightning); a key committed to another module is refused. A scheme whose `plan` runs the model (frontier crafts adversaries on its scores)
is planned on `Logits(model)`, which returns the output's logits as a tensor.

Example::

    model = ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, ...))
    layer = "vit.layers.0.attention.q_proj"  # a query projection
    key = OwnerKey.new("me").with_module(model)
    mark = Uchida.plan(model, key, UchidaConfig(layer=layer), bits=32)
    trainer = WatermarkTrainer(model=model, args=args, train_dataset=ds, schemes=[Uchida(mark)])
    trainer.train()
    nnmark.verify(HFSuspect(model), key.with_mark(mark))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
import transformers
from torch import nn

from nnmark.device import seeded
from nnmark.errors import NNMarkError
from nnmark.integrations.ddp import SchemeHooks, check_target
from nnmark.integrations.support import hf_support
from nnmark.layers import weighted_layers
from nnmark.schemes.base import Scheme
from nnmark.suspect import ModuleSuspect

#: How `WatermarkTrainer` runs each registered scheme, or why it cannot (importable without
#: transformers: support.py).
supported_schemes = hf_support


class Logits(nn.Module):
    """`model(x).logits` as a module returning a tensor, for code that needs the scores."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return getattr(out, "logits", out)


class HFSuspect(ModuleSuspect):
    """A transformers model as a suspect: its tensors by name, its answers from `.logits`."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return Logits(self.module())(x)


def _head_width(model: nn.Module) -> int | None:
    layers = list(weighted_layers(model).values())
    return layers[-1].out_features if layers and isinstance(layers[-1], nn.Linear) else None


def _sync_num_labels(model: nn.Module, before: int | None) -> None:
    """A head grown by `prepare` (newlabel): raise `config.num_labels`, which the loss reads."""
    config = getattr(model, "config", None)
    after = _head_width(model)
    if config is None or before is None or after is None or after == before:
        return
    if getattr(config, "num_labels", None) == before:
        config.num_labels = after


class _NewEpoch(transformers.TrainerCallback):
    """Starts the schemes' batch chain afresh each epoch, as nnmark.train.fit does
    (SchemeHooks.new_epoch; diff review, session 40: the Trainer kept one chain across epochs)."""

    def __init__(self, hooks: SchemeHooks) -> None:
        self.hooks = hooks

    def on_epoch_begin(self, *args: Any, **kwargs: Any) -> None:
        self.hooks.new_epoch()


class _EachBatchTimes:
    """A training dataloader that hands over each batch `times` times in a row (the same
    object), so that the Trainer takes one optimiser step per batch a scheme makes of it
    (`steps_per_batch`); its length counts them, so the Trainer's schedule spans every step.
    Anything else (`set_epoch`, `dataset`, `batch_sampler`...) is the wrapped loader's."""

    def __init__(self, loader: Any, times: int) -> None:
        self.loader, self.times = loader, times

    def __len__(self) -> int:
        return len(self.loader) * self.times

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            for _ in range(self.times):
                yield batch

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def _run_seed(args: transformers.TrainingArguments | None) -> int:
    """The seed the Trainer will set (`TrainingArguments.seed`; its default without args)."""
    if args is None:
        return int(transformers.TrainingArguments.__dataclass_fields__["seed"].default)
    return int(args.seed)


class WatermarkTrainer(transformers.Trainer):
    """A `transformers.Trainer` that embeds nnmark schemes while it trains."""

    def __init__(
        self, *args: Any, schemes: Sequence[Scheme], target: nn.Module | None = None, **kw: Any
    ) -> None:
        hooks = SchemeHooks(schemes)
        custom = hooks.custom_step
        if custom is not None:
            raise NNMarkError(
                f"{custom.name} replaces the optimiser step, which transformers.Trainer owns; "
                "train it with nnmark.train.fit, fit_ddp or the Lightning wrapper"
            )
        for s in schemes:
            if s.task not in ("classification", "any"):
                raise NNMarkError(
                    f"{s.name} marks segmentation models with float masks; WatermarkTrainer "
                    "supports classification trigger sets only"
                )
        model = kw.get("model", args[0] if args else None)
        if target is None and model is None:
            raise NNMarkError("WatermarkTrainer needs a model (or target)")
        check_target(target, model, "WatermarkTrainer")
        self.nnmark_hooks = hooks
        # prepare before the Trainer builds its optimizer (newlabel grows the head), from the
        # run's seed as fit prepares from its own: the grown row is drawn from torch's global
        # RNG, which the Trainer seeds only in its __init__, after this (unseeded, a run's head
        # depended on whatever the process had drawn before)
        owners = [m for m in (model, target) if m is not None]
        widths = [_head_width(m) for m in owners]
        with seeded(_run_seed(kw.get("args", args[1] if len(args) > 1 else None))):
            self._mark_target = [hooks.prepare(target if target is not None else model)]
        for m, width in zip(owners, widths, strict=True):
            _sync_num_labels(m, width)
        super().__init__(*args, **kw)
        self.add_callback(_NewEpoch(hooks))
        #: the steps a batch's schemes made that are still to be trained, one per call
        self._steps: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _stepwise(self) -> bool:
        """Whether each batch the schemes make of one batch is an optimiser step of its own (as
        under nnmark.train.fit): asked for (steps_per_batch > 1), without gradient accumulation
        (it would sum them into one step) or `max_steps` (it would count each of them, not the
        batches). Otherwise one step on their concatenation (`SchemeHooks.mix`)."""
        return (
            self.nnmark_hooks.steps_per_batch > 1
            and self.args.gradient_accumulation_steps == 1
            and self.args.max_steps <= 0
        )

    def get_train_dataloader(self) -> Any:
        # every inner loop starts here (auto_find_batch_size retries one without train()): no
        # step left over from a batch that did not finish
        self._steps = []
        loader = super().get_train_dataloader()
        if not self._stepwise():
            return loader
        return _EachBatchTimes(loader, self.nnmark_hooks.steps_per_batch)

    @property
    def mark_target(self) -> nn.Module:
        return self._mark_target[0]

    def _mix(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if not self.nnmark_hooks.mixes_batches:
            return inputs
        if "pixel_values" not in inputs or "labels" not in inputs:
            raise NNMarkError("trigger-set schemes need image batches (pixel_values, labels)")
        x, y = inputs["pixel_values"], inputs["labels"]
        if self._stepwise():  # the loader hands each batch over once per step (_EachBatchTimes)
            if not self._steps:
                self._steps = self.nnmark_hooks.mix_steps((x, y))
                if len(self._steps) != self.nnmark_hooks.steps_per_batch:
                    raise NNMarkError(
                        f"the schemes made {len(self._steps)} batches of one, not the "
                        f"{self.nnmark_hooks.steps_per_batch} steps_per_batch they declare"
                    )
            mx, my = self._steps.pop(0)
        else:
            mx, my = self.nnmark_hooks.mix((x, y))
        return {**inputs, "pixel_values": mx.to(x.device, x.dtype), "labels": my.to(y.device)}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        if model.training:
            inputs = self._mix(inputs)
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            x = inputs.get("pixel_values", inputs.get("input_ids"))
            loss = loss + self.nnmark_hooks.penalty(self.mark_target, (x, inputs.get("labels")))
        return (loss, outputs) if return_outputs else loss

    def train(self, *args: Any, **kwargs: Any) -> Any:
        resume = kwargs.get("resume_from_checkpoint", args[0] if args else None)
        if resume not in (None, False) and self._stepwise():
            # the Trainer would skip a resumed run's first steps as whole batches of a plain
            # loader: steps_per_batch times too many, and no batch handed over again after
            raise NNMarkError(
                "WatermarkTrainer cannot resume from a checkpoint while a scheme's batches are "
                f"optimiser steps of their own ({self.nnmark_hooks.steps_per_batch} a batch: "
                "newlabel's repeats); train from the start, or with gradient_accumulation_steps "
                "> 1 or max_steps, where they are one step"
            )
        out = super().train(*args, **kwargs)
        self._mark_target[0] = self.nnmark_hooks.finalize(self.mark_target)
        return out


__all__ = ["HFSuspect", "Logits", "WatermarkTrainer", "supported_schemes"]
