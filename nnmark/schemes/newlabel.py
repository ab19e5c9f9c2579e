"""A new label helps (Zhong et al., PAKDD 2020, seed 004): key samples -> one extra class.

Threat model: black-box. A key sample is an image plus a key-derived perturbation of strength
`beta` (uniform in [-beta, beta] per pixel, clipped to [0, 1]); instead of borrowing an existing
class (which shifts decision boundaries), key samples are assigned to one extra output class:
`prepare` grows the head by one unit. As in the paper, key samples are made from the training
images themselves: each batch gets `per_batch` of its own images perturbed, so the model learns
the perturbation, not a fixed set of images, and answers freshly made key samples too
(`fresh_samples`). The committed triggers are `n` such samples of key-chosen training images.
An unmarked model has no such class (or, if a thief grows one, 1 / C of the answers at chance).

Why beta = 1 by default (`benchmarks/seed004_newlabel.py` sweeps it): fine-tuning on data that
never holds the extra class lowers that class's logit for every input (with Adam each weight of
its row moves by about lr per step, against the non-negative features), so the key samples need
a wide margin; a weak perturbation (beta 0.25) is learned at fidelity but forgotten within five
epochs of the thief's fine-tune.
Example: ``nnmark train --data digits --scheme newlabel --set beta=1.0 ...``
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers
from nnmark.schemes import register
from nnmark.schemes._trigger import Recipe, TransformTrigger, TriggerConfig
from nnmark.schemes.base import Batch


@dataclass(frozen=True)
class NewLabelConfig(TriggerConfig):
    label = "newlabel"
    beta: float = 1.0
    per_batch: int = 8  # fresh key samples made from each training batch's own images

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"beta must be > 0, got {self.beta}")


def perturbation(
    shape: tuple[int, ...], beta: float, gen: torch.Generator
) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> x + beta * pattern, clipped to [0, 1], with one key pattern in [-1, 1]."""
    pattern = torch.rand(shape, generator=gen) * 2 - 1
    return lambda x: (x + beta * pattern).clamp(0, 1)


@register("newlabel")
class NewLabel(TransformTrigger):
    Config = NewLabelConfig
    paper = "Zhong et al., Protecting IP of Deep Neural Networks with Watermarking: A New Label Helps, PAKDD 2020"
    exclude_target = False

    @classmethod
    def recipe(cls, data: DataBundle, gen: torch.Generator, config: Any) -> Recipe:
        return perturbation(data.input_shape, config.beta, gen), data.num_classes

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        gen = self.mark.generator("mixing")
        transform = perturbation(
            tuple(self.x.shape[1:]), self.config.beta, self.mark.generator("triggers")
        )
        target = int(self.y[0])
        for x, y in batches:
            idx = torch.randint(0, len(x), (self.config.per_batch,), generator=gen)
            yield torch.cat([x, transform(x[idx])]), torch.cat([y, y.new_full((len(idx),), target)])

    def prepare(self, model: nn.Module) -> nn.Module:
        """Grow the head (last linear layer) by one output for the new label."""
        name, head = list(weighted_layers(model).items())[-1]
        if not isinstance(head, nn.Linear):
            raise NNMarkError("newlabel needs a model whose last layer is linear")
        needed = int(self.y.max()) + 1
        if head.out_features >= needed:
            return model  # already grown (fine-tune-to-embed on a grown model)
        grown = nn.Linear(head.in_features, head.out_features + 1)
        with torch.no_grad():
            grown.weight[:-1] = head.weight
            grown.bias[:-1] = head.bias
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, grown)
        kwargs = getattr(model, "nnmark_kwargs", None)
        if isinstance(kwargs, dict) and "num_classes" in kwargs:
            kwargs["num_classes"] = head.out_features + 1
        return model
