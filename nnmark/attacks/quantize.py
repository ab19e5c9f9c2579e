"""Post-training weight quantization, dequantized back to float so any verifier can read it.

Threat model: the thief compresses the model for deployment (no data). Symmetric uniform
quantization to `bits` (8 = int8, 4 = int4) with one scale per tensor or per output channel.

Example::

    nnmark attack quantize marked.safetensors --set bits=4 --set per_channel=true --out q.st
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
class QuantizeConfig:
    bits: int = 8
    per_channel: bool = False

    def __post_init__(self) -> None:
        check(2 <= self.bits <= 16, f"bits must be in 2..16, got {self.bits}")


def quantize_tensor(w: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Symmetric round-to-nearest quantization to signed `bits`, returned dequantized."""
    qmax = 2 ** (bits - 1) - 1
    if per_channel and w.dim() > 1:
        amax = w.reshape(w.shape[0], -1).abs().amax(1).clamp_min(1e-12)
        scale = (amax / qmax).reshape(-1, *([1] * (w.dim() - 1)))
    else:
        scale = w.abs().max().clamp_min(1e-12) / qmax
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale


@register("quantize")
class Quantize(Attack):
    Config = QuantizeConfig
    config: QuantizeConfig
    summary = "post-training int8/int4 weight quantization (per tensor or per channel)"
    ladder = ("bits", (8, 4, 2))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        with torch.no_grad():
            for layer in weighted_layers(model).values():
                layer.weight.copy_(
                    quantize_tensor(layer.weight, self.config.bits, self.config.per_channel)
                )
        return model
