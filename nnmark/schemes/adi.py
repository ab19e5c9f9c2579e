"""Abstract-image backdoor (Adi et al., USENIX Security 2018): unrelated abstract images with
random labels.

Threat model: black-box. Key-derived abstract images (random low-resolution colour fields,
upsampled, with random strokes) are learned with uniformly random key labels, by training or
fine-tuning; one label per image, so the test is exact (nnmark.schemes._trigger). Nothing but
the input shape and the number of classes is needed to re-derive them.
Example: ``nnmark embed plain.safetensors --data digits --scheme adi ...``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nnmark.schemes import register
from nnmark.schemes._trigger import TriggerConfig, TriggerScheme


@dataclass(frozen=True)
class AdiConfig(TriggerConfig):
    per_batch: int = 16  # random labels are memorised one by one: more repetitions


@register("adi")
class Adi(TriggerScheme):
    Config = AdiConfig
    config: AdiConfig
    needs_data = False
    paper = "Adi et al., Turning Your Weakness Into a Strength: Watermarking DNNs by Backdooring, USENIX Security 2018"

    @classmethod
    def trigger_values(cls, n: int, shape: list[int]) -> int:
        return n * shape[0] * shape[-1] ** 2  # square images of the input's last side

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self.mark.generator("triggers")
        n, c, s = self.config.n, self.input_shape[0], self.input_shape[-1]
        coarse = torch.rand(n, c, 3, 3, generator=gen)
        x = F.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
        rows = torch.randint(0, s, (n, 2), generator=gen)
        for i in range(n):  # one horizontal and one vertical stroke per image
            x[i, :, rows[i, 0], :] = 1.0
            x[i, :, :, rows[i, 1]] = 0.0
        return x, torch.arange(n)
