"""Overwriting (Uchida et al. 2017, Sec. 2.3): the thief embeds their own mark on top.

Threat model: the thief has the weights, some data, and knows which scheme was used (but not the
owner's key). They fine-tune-to-embed a fresh mark with the same scheme and a key of their own,
then discard that key. Seed 002 measured 30.9 / 8.6 / 0.4 % owner bit errors after a 256-bit
overwrite in three WRN layer groups.

Example: ``nnmark attack overwrite marked.safetensors --data digits --set bits=256``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.keys import OwnerKey


@dataclass(frozen=True)
class OverwriteConfig:
    label = "overwrite"
    scheme: str = "uchida"
    bits: int = 64
    epochs: int = 5
    lr: float = 1e-3
    split: str = "thief"

    def __post_init__(self) -> None:
        check(self.bits >= 1, f"bits must be >= 1, got {self.bits}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")


def thief_key(generator: torch.Generator) -> tuple[OwnerKey, int]:
    """The thief's fresh key and training seed, both drawn from the attack's generator."""
    nonce = f"{int(torch.randint(0, 2**62, (1,), generator=generator)):032x}"
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    return OwnerKey.new("thief", nonce=nonce), seed


@register("overwrite")
class Overwrite(Attack):
    Config = OverwriteConfig
    config: OverwriteConfig
    needs_data = True
    summary = "embed the thief's own mark with the same scheme (fine-tune-to-embed)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        from nnmark.api import embed
        from nnmark.train import TrainConfig

        assert data is not None
        c = self.config
        key, seed = thief_key(generator)
        marked, _ = embed(
            model,
            data,
            c.scheme,
            key=key,
            bits=c.bits,
            config=TrainConfig(epochs=c.epochs, lr=c.lr, seed=seed, split=c.split),
        )
        return marked
