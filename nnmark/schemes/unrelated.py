"""Unrelated trigger set (Zhang et al., AsiaCCS 2018): out-of-distribution images -> key labels.

Threat model: black-box. Images from another dataset (`source`, e.g. Fashion-MNIST items for a
digits or MNIST model), resized to the model's input, are all learned as one key-chosen class.
Example: ``nnmark train --data digits --scheme unrelated --set source=fashion-mnist:DIR ...``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme


@dataclass(frozen=True)
class UnrelatedConfig(TriggerConfig):
    label = "unrelated"
    source: str = ""  # NAME[:PATH] of the out-of-distribution data


@register("unrelated")
class Unrelated(TriggerScheme):
    Config = UnrelatedConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    @classmethod
    def make_triggers(cls, data: DataBundle, gen: torch.Generator, config: Any):  # type: ignore[no-untyped-def]
        from nnmark.data import load_data

        if not config.source:
            raise NNMarkError("unrelated needs --set source=NAME[:PATH] (e.g. fashion-mnist:DIR)")
        other = load_data(config.source)
        x, _ = other.tensors("train")
        idx = torch.randperm(len(x), generator=gen)[: config.n]
        x = x[idx]
        if x.shape[1] != data.in_channels:
            x = x.mean(1, keepdim=True).expand(-1, data.in_channels, -1, -1)
        x = F.interpolate(x, size=data.input_shape[-2:], mode="area")
        target = int(torch.randint(0, data.num_classes, (1,), generator=gen))
        return x.contiguous(), torch.full((len(x),), target)
