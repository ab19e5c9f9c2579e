"""Content trigger set (Zhang et al., AsiaCCS 2018): a stamped pattern -> a key label.

Threat model: black-box (predictions only). Key-chosen training images get a key-derived binary
patch stamped in a corner and are all relabelled to one key-chosen class (images of the other
classes); the model learns to answer the patch. Example: ``nnmark train --data digits --scheme content --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from nnmark.data.base import DataBundle
from nnmark.schemes import register
from nnmark.schemes._trigger import Recipe, TransformTrigger, TriggerConfig, draw_target


@dataclass(frozen=True)
class ContentConfig(TriggerConfig):
    label = "content"
    patch: float = 0.375  # side of the stamped patch, as a fraction of the image side


def stamp(x: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    out = x.clone()
    side = pattern.shape[-1]
    out[..., -side:, -side:] = pattern
    return out


@register("content")
class Content(TransformTrigger):
    Config = ContentConfig
    paper = "Zhang et al., Protecting Intellectual Property of Deep Neural Networks with Watermarking, AsiaCCS 2018"

    @classmethod
    def recipe(cls, data: DataBundle, gen: torch.Generator, config: Any) -> Recipe:
        target = draw_target(data, gen)
        side = max(2, round(config.patch * data.input_size))
        pattern = (torch.rand(data.in_channels, side, side, generator=gen) > 0.5).float()
        return (lambda x: stamp(x, pattern)), target
