"""Noise trigger set (Zhang et al., AsiaCCS 2018): Gaussian noise patterns on images -> key
labels.

Threat model: black-box. Key-chosen training images plus one of `patterns` key-derived Gaussian
noise patterns (std `sigma`, clipped to [0, 1]); each pattern has its own key label, drawn
uniformly from the classes, so the test is exact (nnmark.schemes._trigger; Zhang et al. use one
class, a false null when it is a class unmarked models send noisy images to).
Example: ``nnmark train --data digits --scheme noise --set sigma=0.4 --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from nnmark.config import check
from nnmark.schemes import register
from nnmark.schemes._trigger import PatternConfig, Transform, TransformTrigger


@dataclass(frozen=True)
class NoiseTriggerConfig(PatternConfig):
    sigma: float = 0.6  # 16 patterns at 0.4: 0.64 of the triggers learned in 20 epochs; 0.6: 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.sigma <= 10, f"sigma must be in (0, 10], got {self.sigma}")


def add_noise(x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return (x + noise).clamp(0, 1)


@register("noise")
class NoiseTrigger(TransformTrigger):
    Config = NoiseTriggerConfig
    config: NoiseTriggerConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    def transforms(self) -> list[Transform]:
        gen = self.mark.generator("patterns")
        noise = self.config.sigma * torch.randn(
            (self.config.patterns, *self.input_shape), generator=gen
        )
        return [functools.partial(add_noise, noise=z) for z in noise]
