"""Additive Gaussian noise on the weights (lecture 000's noise attack).

Threat model: the thief has the weights and no data. Each conv / linear weight tensor gets
N(0, (sigma * std(tensor))^2) noise: sigma is relative, so every layer is hit in proportion.

Example: ``nnmark attack noise marked.safetensors --set sigma=0.1 --out noisy.safetensors``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class NoiseConfig:
    sigma: float = 0.1
    biases: bool = False

    def __post_init__(self) -> None:
        check(self.sigma >= 0, f"sigma must be >= 0, got {self.sigma}")


@register("noise")
class Noise(Attack):
    Config = NoiseConfig
    config: NoiseConfig
    summary = "Gaussian noise on weights, sigma relative to each tensor's std"
    ladder = ("sigma", (0.1, 0.5, 1.0))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        with torch.no_grad():
            for layer in weighted_layers(model).values():
                tensors = [layer.weight] + (
                    [layer.bias] if self.config.biases and layer.bias is not None else []
                )
                for t in tensors:
                    std = float(t.std()) if t.numel() > 1 else float(t.abs().mean())
                    t.add_(torch.randn(t.shape, generator=generator) * self.config.sigma * std)
        return model
