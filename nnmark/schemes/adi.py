"""Abstract-image backdoor (Adi et al., USENIX Security 2018): unrelated abstract images with
random labels.

Threat model: black-box. Key-derived abstract images (random low-resolution colour fields,
upsampled, with random strokes) are learned with uniformly random key labels, by training or
fine-tuning. Example: ``nnmark embed plain.safetensors --data digits --scheme adi ...``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from nnmark.data.base import DataBundle
from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme


@dataclass(frozen=True)
class AdiConfig(TriggerConfig):
    label = "adi"
    per_batch: int = 8  # random labels are memorised one by one: more repetitions


@register("adi")
class Adi(TriggerScheme):
    Config = AdiConfig
    paper = "Adi et al., Turning Your Weakness Into a Strength: Watermarking DNNs by Backdooring, USENIX Security 2018"

    @classmethod
    def make_triggers(cls, data: DataBundle, gen: torch.Generator, config: Any):  # type: ignore[no-untyped-def]
        n, c, s = config.n, data.in_channels, data.input_size
        coarse = torch.rand(n, c, 3, 3, generator=gen)
        x = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
        rows = torch.randint(0, s, (n, 2), generator=gen)
        for i in range(n):  # one horizontal and one vertical stroke per image
            x[i, :, rows[i, 0], :] = 1.0
            x[i, :, :, rows[i, 1]] = 0.0
        return x, torch.randint(0, data.num_classes, (n,), generator=gen)
