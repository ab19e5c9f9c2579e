"""Tasks: the training loss and the fidelity metrics (every number says which metric it is)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.device import device_of
from nnmark.errors import NNMarkError
from nnmark.registry import Registry


@dataclass(frozen=True)
class Task:
    """A task: its loss, its distillation loss, and how fidelity is measured."""

    name: str
    primary: str  # the headline fidelity metric

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distill_loss(
        self,
        out: torch.Tensor,
        teacher_out: torch.Tensor,
        temperature: float = 1.0,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss against a teacher's outputs (no data label read): distill-to-embed and
        extraction. `y`, where given, holds the labels a key gave (a trigger set's), and -1
        for the data's rows: those rows follow the teacher, the key's its labels."""
        raise NotImplementedError

    def counts(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        raise NotImplementedError

    def finish(self, counts: dict[str, float]) -> dict[str, float]:
        raise NotImplementedError

    def output_problem(self, out: torch.Tensor, y: torch.Tensor, classes: int) -> str | None:
        """Why the loss cannot read `out` against labels `y` (a batch), or None."""
        raise NotImplementedError


class Classification(Task):
    def output_problem(self, out: torch.Tensor, y: torch.Tensor, classes: int) -> str | None:
        if y.dim() != 1:
            return f"the data's labels have shape {tuple(y.shape[1:])} per input, not a class"
        if out.dim() != 2 or out.shape[1] < classes:
            return (
                f"the model answers {tuple(out.shape[1:])} per input, where this task needs "
                f"one score for each of {classes} classes: pick a classifier"
            )
        return None

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    def distill_loss(
        self,
        out: torch.Tensor,
        teacher_out: torch.Tensor,
        temperature: float = 1.0,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """KL to the teacher's softened answers, per row averaged over the batch; rows a key
        labelled (`y` >= 0: trigger sets mixed into the batches) take cross-entropy with their
        key labels instead, as without a teacher (distilled too, a trigger set was never
        learnt: content and adi not found, p 0.14 and 1; determinism review, session 37). A
        student grown by extra classes (newlabel's new label) is taught that the teacher never
        gives them: probability 0 (their sizes differing was a RuntimeError)."""
        t = temperature
        extra = out.shape[1] - teacher_out.shape[1]
        if extra > 0:
            teacher_out = F.pad(teacher_out, (0, extra), value=float("-inf"))
        keyed = (y >= 0) if y is not None else out.new_zeros(len(out), dtype=torch.bool)
        kl = F.kl_div(
            F.log_softmax(out[~keyed] / t, 1),
            F.softmax(teacher_out[~keyed] / t, 1),
            reduction="sum",
        ) * (t * t)
        own = 0.0
        if y is not None and bool(keyed.any()):
            own = F.cross_entropy(out[keyed], y[keyed], reduction="sum")
        return (kl + own) / max(len(out), 1)

    def counts(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        return {"correct": float((out.argmax(1) == y).sum()), "n": float(len(y))}

    def finish(self, counts: dict[str, float]) -> dict[str, float]:
        return {"accuracy": counts["correct"] / max(counts["n"], 1.0)}


class Segmentation(Task):
    """Binary segmentation: BCE + soft Dice loss; Dice and IoU over all pixels of a split."""

    def output_problem(self, out: torch.Tensor, y: torch.Tensor, classes: int) -> str | None:
        if y.dim() != 4:
            return f"the data's labels have shape {tuple(y.shape[1:])} per input, not a mask"
        if out.shape[1:] != y.shape[1:]:
            return (
                f"the model answers {tuple(out.shape[1:])} per input, where this task needs a "
                f"mask of shape {tuple(y.shape[1:])}: pick a segmentation model (unet)"
            )
        return None

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(out)
        inter = (p * y).sum()
        dice = (2 * inter + 1.0) / (p.sum() + y.sum() + 1.0)
        return F.binary_cross_entropy_with_logits(out, y) + (1 - dice)

    def distill_loss(
        self,
        out: torch.Tensor,
        teacher_out: torch.Tensor,
        temperature: float = 1.0,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss against the teacher's softened masks; a row whose mask a key gave (`y`
        >= 0 everywhere: segtrigger's) against that mask (distilled, it was never learnt:
        BER 0.5; diff review, session 37)."""
        target = torch.sigmoid(teacher_out / temperature)
        if y is not None:
            keyed = (y >= 0).flatten(1).all(1)
            target = torch.where(keyed.view(-1, *[1] * (y.dim() - 1)), y.to(target.dtype), target)
        return self.loss(out, target)

    def counts(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        pred = out > 0
        truth = y > 0.5
        return {
            "tp": float((pred & truth).sum()),
            "fp": float((pred & ~truth).sum()),
            "fn": float((~pred & truth).sum()),
        }

    def finish(self, counts: dict[str, float]) -> dict[str, float]:
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        return {
            "dice": 2 * tp / max(2 * tp + fp + fn, 1.0),
            "iou": tp / max(tp + fp + fn, 1.0),
        }


TASKS: Registry[Task] = Registry("task")
TASKS.register("classification")(Classification("classification", "accuracy"))
TASKS.register("segmentation")(Segmentation("segmentation", "dice"))


def get_task(name: str) -> Task:
    return TASKS.get(name)


@torch.no_grad()
def check_fits(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: Task, classes: int
) -> None:
    """Refuse a model whose outputs the task's loss cannot read (a classifier on masks, a U-Net
    on class labels), on one batch in eval mode: one line naming both shapes, before training,
    not a shape error from inside the loss."""
    was_training = model.training
    model.eval()
    try:
        out = model(x.to(device_of(model)))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NNMarkError(
            f"the model cannot run on this data's inputs {tuple(x.shape[1:])}: {first}"
        ) from None
    finally:
        model.train(was_training)
    why = task.output_problem(out, y, classes) if isinstance(out, torch.Tensor) else None
    if why is not None:
        raise NNMarkError(f"{task.name}: {why}")


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], task: Task | str
) -> dict[str, float]:
    """Fidelity metrics of `model` over batches (accuracy, or Dice and IoU), in eval mode."""
    task = get_task(task) if isinstance(task, str) else task
    was_training = model.training
    model.eval()
    device = device_of(model)
    totals: dict[str, float] = {}
    try:
        for x, y in batches:
            out = model(x.to(device))
            if not totals and isinstance(out, torch.Tensor):  # a model file whose metadata
                # names another task: one line, not a shape error from inside the counts
                classes = int(y.max()) + 1 if y.dim() == 1 and y.numel() else 1
                why = task.output_problem(out, y, classes)
                if why is not None:
                    raise NNMarkError(f"{task.name} (the task evaluated): {why}")
            for k, v in task.counts(out, y.to(device)).items():
                totals[k] = totals.get(k, 0.0) + v
    finally:
        model.train(was_training)
    if not totals:
        raise NNMarkError("no data to evaluate: the split is empty (too few images to split?)")
    return task.finish(totals)
