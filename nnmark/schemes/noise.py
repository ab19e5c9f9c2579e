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
from nnmark.schemes._trigger import Recipe, TransformTrigger, TriggerConfig, draw_target


@dataclass(frozen=True)
class NoiseTriggerConfig(TriggerConfig):
    label = "noise"
    sigma: float = 0.4

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.sigma > 0, f"sigma must be > 0, got {self.sigma}")


@register("noise")
class NoiseTrigger(TransformTrigger):
    Config = NoiseTriggerConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    @classmethod
    def recipe(cls, data: DataBundle, gen: torch.Generator, config: Any) -> Recipe:
        target = draw_target(data, gen)
        noise = config.sigma * torch.randn(data.input_shape, generator=gen)
        return (lambda x: (x + noise).clamp(0, 1)), target
