"""Fine-tuning on the thief's own data: the removal attack every watermark paper measures.

Threat model: the thief has the weights and some labelled data from the same (or another)
domain: the `thief` split by default, which the owner's training never reads. The learning rate
`lr` defaults to 1e-3 with Adam, nnmark's own training default, so it is the owner's rate only
when the owner trained with nnmark's defaults: model files do not record the training rate, so
set `lr` to the owner's rate when it is known (the issue's "training learning rate"). WRT's
variants: `last_layer_only` trains the head alone on frozen features (every other tensor,
BatchNorm statistics included, stays bit-identical: those modules stay in eval mode);
`reinit_head` draws a fresh head first.

Cross-domain (`domain=NAME[:PATH]`, e.g. `fashion-mnist:/data/fashion-mnist`): the thief tunes on
another dataset, loaded and resized (area interpolation; channels averaged or repeated) to the
input shape of `--data` (the suspect's own task, still used for fidelity), with a re-initialised
head. The domain must have the suspect's number of classes (the head keeps its shape).

Example::

    nnmark attack finetune marked.safetensors --data digits --set epochs=10 --out ft.safetensors
    nnmark attack finetune marked.safetensors --data digits \
        --set domain=fashion-mnist:/work/shared/data/fashion-mnist --set fraction=0.2
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle, check_split
from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers
from nnmark.train import TrainConfig, fit


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 5
    lr: float = 1e-3
    split: str = "thief"
    fraction: float = 1.0
    batch_size: int = 64
    optimizer: Literal["adam", "sgd"] = "adam"
    last_layer_only: bool = False
    reinit_head: bool = False
    domain: str | None = None
    #: recompute BatchNorm statistics on the thief's data at the end (nnmark's trainer does for
    #: the owner). Off by default, as in a plain PyTorch loop, whose running averages still
    #: carry the owner's statistics after a short fine-tune: recomputed from the 24 thief tiles
    #: of BBBC039 they cost the U-Net 0.92 -> 0.60 Dice after one epoch.
    recalibrate_bn: bool = False

    def __post_init__(self) -> None:
        check(self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 < self.fraction <= 1, f"fraction must be in (0, 1], got {self.fraction}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check_split(self.split)


def domain_data(spec: str, like: DataBundle) -> DataBundle:
    """Dataset `spec` resized to the input shape of `like` (the suspect's own data)."""
    import torch.nn.functional as F

    from nnmark.data import load_data

    other = load_data(spec)
    if other.task != like.task or other.num_classes != like.num_classes:
        raise NNMarkError(
            f"domain {spec!r}: {other.task} with {other.num_classes} classes; the suspect's data"
            f" is {like.task} with {like.num_classes}"
        )
    x = other.x
    channels, size = like.in_channels, tuple(like.input_shape[1:])
    if x.shape[1] != channels:
        x = (
            x.mean(1, keepdim=True).expand(-1, channels, -1, -1)
            if channels > 1
            else x.mean(1, True)
        )
    if tuple(x.shape[2:]) != size:
        x = torch.cat(
            [F.interpolate(x[i : i + 4096], size=size, mode="area") for i in range(0, len(x), 4096)]
        )
    return DataBundle(
        f"{other.name}@{'x'.join(map(str, size))}",
        other.task,
        x.contiguous(),
        other.y,
        other.splits,
        other.num_classes,
    )


@contextmanager
def held_in_eval(model: nn.Module, keep: nn.Module) -> Iterator[None]:
    """Every leaf module outside `keep` in eval mode while a trainer calls `model.train()`:
    frozen features, BatchNorm running statistics untouched, no dropout."""
    inside = {id(m) for m in keep.modules()}
    held = [m for m in model.modules() if id(m) not in inside and not any(m.children())]
    for m in held:
        m.eval()
        m.train = lambda mode=True, _m=m: _m
    try:
        yield
    finally:
        for m in held:
            del m.train


@register("finetune")
class Finetune(Attack):
    Config = FinetuneConfig
    config: FinetuneConfig
    needs_data = True
    summary = "fine-tune on the thief's data (all layers or the head only, optional head reset)"
    ladder = ("epochs", (1, 5, 10))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        if c.domain:
            data = domain_data(c.domain, data)
        head = list(weighted_layers(model).values())[-1]
        if c.reinit_head or c.domain:
            head.reset_parameters()
        if c.last_layer_only:
            for p in model.parameters():
                p.requires_grad_(False)
            for p in head.parameters():
                p.requires_grad_(True)
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        cfg = TrainConfig(
            epochs=c.epochs,
            lr=c.lr,
            batch_size=c.batch_size,
            optimizer=c.optimizer,
            seed=seed,
            split=c.split,
            fraction=c.fraction,
            recalibrate_bn=c.recalibrate_bn,
        )
        if c.last_layer_only:
            with held_in_eval(model, head):
                fit(model, data, (), cfg)
        else:
            fit(model, data, (), cfg)
        for p in model.parameters():
            p.requires_grad_(True)
        return model
