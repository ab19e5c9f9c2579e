"""Noise trigger set (Zhang et al., AsiaCCS 2018): Gaussian noise on images -> a key label.

Threat model: black-box. Key-chosen training images plus one key-derived Gaussian noise pattern
(std `sigma`, clipped to [0, 1]) are all relabelled to one key-chosen class.
Example: ``nnmark train --data digits --scheme noise --set sigma=0.4 --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme, target_images


@dataclass(frozen=True)
class NoiseTriggerConfig(TriggerConfig):
    label = "noise"
    sigma: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.sigma > 0, f"sigma must be > 0, got {self.sigma}")


@register("noise")
class NoiseTrigger(TriggerScheme):
    Config = NoiseTriggerConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    @classmethod
    def make_triggers(cls, data: DataBundle, gen: torch.Generator, config: Any):  # type: ignore[no-untyped-def]
        x, y = target_images(data, config.n, gen)
        noise = config.sigma * torch.randn(tuple(x.shape[1:]), generator=gen)
        return (x + noise).clamp(0, 1), y
