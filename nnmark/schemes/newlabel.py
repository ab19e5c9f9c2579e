"""A new label helps (Zhong et al., PAKDD 2020, seed 004): key samples -> one extra class.

Threat model: black-box. Key samples are key-chosen training images plus a key-derived
perturbation of strength `beta`; instead of borrowing an existing class (which shifts decision
boundaries), they are assigned to one extra output class: `prepare` grows the head by one unit.
An unmarked model has no such class (or, if a thief grows one, 1 / C of the answers at chance).
Example: ``nnmark train --data digits --scheme newlabel --set beta=0.5 ...``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers
from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme


@dataclass(frozen=True)
class NewLabelConfig(TriggerConfig):
    label = "newlabel"
    beta: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.beta > 0, f"beta must be > 0, got {self.beta}")


def key_pattern(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * 2 - 1


def key_samples(x: torch.Tensor, beta: float, gen: torch.Generator) -> torch.Tensor:
    """x + beta * pattern, clipped to [0, 1]; the pattern is drawn first from `gen`."""
    return (x + beta * key_pattern(tuple(x.shape[1:]), gen)).clamp(0, 1)


@register("newlabel")
class NewLabel(TriggerScheme):
    Config = NewLabelConfig
    paper = "Zhong et al., Protecting IP of Deep Neural Networks with Watermarking: A New Label Helps, PAKDD 2020"

    @classmethod
    def make_triggers(cls, data: DataBundle, gen: torch.Generator, config: Any):  # type: ignore[no-untyped-def]
        pattern_gen = torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=gen))
        )
        x, _ = data.tensors("train")
        idx = torch.randperm(len(x), generator=gen)[: config.n]
        return key_samples(x[idx], config.beta, pattern_gen), torch.full(
            (len(idx),), data.num_classes
        )

    def fresh_samples(self, data: DataBundle, n: int, seed: int = 1) -> torch.Tensor:
        """New key samples with the same key pattern on other images (generalisation check)."""
        gen = self.mark.generator("triggers")
        pattern_gen = torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=gen))
        )
        x, _ = data.tensors("test")
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
        return key_samples(x[idx], self.config.beta, pattern_gen)

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
