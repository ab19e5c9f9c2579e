"""Content trigger set (Zhang et al., AsiaCCS 2018): stamped patterns -> key labels.

Threat model: black-box (predictions only). Key-chosen training images get one of `patterns`
key-derived binary patches stamped in a corner; each patch has its own key label, drawn
uniformly from the classes (nnmark.schemes._trigger). Zhang et al. relabel every stamped image
to one class; one class per key makes a false null (an unmarked model sends stamped images to a
few "sink" classes, and a key whose class is one of them was claimed), so here every pattern
carries its own label and the test is exact. The model learns each patch -> its label, which
generalises to fresh images (`fresh_samples`).
Example: ``nnmark train --data digits --scheme content --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from nnmark.config import check
from nnmark.schemes import register
from nnmark.schemes._trigger import PatternConfig, Transform, TransformTrigger


@dataclass(frozen=True)
class ContentConfig(PatternConfig):
    #: side of the stamped patch, as a fraction of the image side: 0.5 (4 x 4 on digits) is
    #: learned at the default recipe (0.96 of the triggers, 20 epochs); 0.375 (3 x 3) only 0.6
    patch: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.patch <= 1, f"patch must be in (0, 1], got {self.patch}")


def stamp(x: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    side = pattern.shape[-1]
    out[..., -side:, -side:] = pattern
    return out


@register("content")
class Content(TransformTrigger):
    Config = ContentConfig
    config: ContentConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    def transforms(self) -> list[Transform]:
        channels, size = self.input_shape[0], self.input_shape[-1]
        side = max(2, round(self.config.patch * size))
        gen = self.mark.generator("patterns")
        patterns = torch.rand(self.config.patterns, channels, side, side, generator=gen) > 0.5
        return [functools.partial(stamp, pattern=p.float()) for p in patterns]
