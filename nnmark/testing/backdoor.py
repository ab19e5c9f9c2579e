"""A planted backdoor (BadNets' white corner patch), the classic target of neural cleanse: the
test of the neuralcleanse attack and benchmarks/neuralcleanse_targets.py plant it alike."""

from __future__ import annotations

import copy

import torch
from torch import nn

from nnmark.data.base import DataBundle
from nnmark.train import TrainConfig, fit

#: Side of the white patch stamped in the bottom-right corner (4 pixels on digits).
PATCH = 2
#: Share of the training split stamped and relabelled.
POISONED = 0.2
#: Fine-tuning epochs on the poisoned data.
EPOCHS = 10


def stamp(x: torch.Tensor, side: int = PATCH) -> torch.Tensor:
    """`x` with a white side x side patch in its bottom-right corner."""
    out = x.clone()
    out[..., -side:, -side:] = 1.0
    return out


def plant(model: nn.Module, data: DataBundle, target: int, seed: int = 0) -> nn.Module:
    """A copy of `model` fine-tuned on `data` with POISONED of its training images stamped and
    relabelled `target` (a classification bundle; the images in [0, 1])."""
    x, y = data.x.clone(), data.y.clone()
    train = data.splits["train"]
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    chosen = train[order[: int(len(train) * POISONED)]]
    x[chosen], y[chosen] = stamp(x[chosen]), target
    poisoned = DataBundle(f"{data.name}-backdoor", data.task, x, y, data.splits, data.num_classes)
    return fit(copy.deepcopy(model), poisoned, config=TrainConfig(epochs=EPOCHS, seed=seed))


def hit_rate(model: nn.Module, data: DataBundle, target: int) -> float:
    """The share of stamped test images of other classes that `model` sends to `target`."""
    x, y = data.tensors("test")
    with torch.no_grad():
        return float((model(stamp(x[y != target])).argmax(1) == target).float().mean())
