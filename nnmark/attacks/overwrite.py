"""Overwriting (Uchida et al. 2017, Sec. 2.3): the thief embeds their own mark on top.

Threat model: the thief has the weights, some data, and knows which scheme was used (but not the
owner's key). They fine-tune-to-embed a fresh mark with the same scheme and a key of their own,
then discard that key. Seed 002 measured 30.9 / 8.6 / 0.4 % owner bit errors after a 256-bit
overwrite in three WRN layer groups.

An overwrite that never got the thief's own mark in proves nothing, and a fixed epoch count does
not know the thief's data size (5 epochs of the 270-image digits thief split embed only 60 % of
a 64-bit mark). So the thief trains in rounds of `epochs` (each a cosine schedule from `lr`) and
checks their own mark after each, stopping when it is in (BER 0, or found for marks without
bits) or after `rounds`. Their final BER, verdict, host layer and the epochs spent are noted on
the result (`nnmark.attacks.base.findings`).

Example: ``nnmark attack overwrite marked.safetensors --data digits --set bits=256``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks.base import Attack, note
from nnmark.config import check
from nnmark.data.base import DataBundle, check_split
from nnmark.keys import OwnerKey
from nnmark.verdict import Verdict


@dataclass(frozen=True)
class OverwriteConfig:
    scheme: str = "uchida"
    bits: int = 64
    epochs: int = 5  # per round
    rounds: int = 20  # at most; stops as soon as the thief's own mark is in
    lr: float = 1e-3
    split: str = "thief"

    def __post_init__(self) -> None:
        check(self.bits >= 1, f"bits must be >= 1, got {self.bits}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}")
        check_split(self.split)


def thief_key(generator: torch.Generator) -> tuple[OwnerKey, int]:
    """The thief's fresh key and training seed, both drawn from the attack's generator."""
    nonce = f"{int(torch.randint(0, 2**62, (1,), generator=generator)):032x}"
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    # a fixed creation time: the attack must depend on its seed alone
    return OwnerKey.new("thief", nonce=nonce, created="2000-01-01T00:00:00+00:00"), seed


@register("overwrite")
class Overwrite(Attack):
    Config = OverwriteConfig
    config: OverwriteConfig
    needs_data = True
    summary = "embed the thief's own mark with the same scheme (fine-tune-to-embed)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        from nnmark.config import build_config
        from nnmark.schemes import SCHEMES
        from nnmark.schemes._embed import embed_one
        from nnmark.train import TrainConfig, fit

        assert data is not None
        c = self.config
        key, seed = thief_key(generator)

        def config(r: int) -> TrainConfig:
            # on the thief split, as finetune: running statistics kept, not recomputed
            return TrainConfig(
                epochs=c.epochs, lr=c.lr, seed=seed + r, split=c.split, recalibrate_bn=False
            )

        cls = SCHEMES.get(c.scheme)
        cfg: Any = build_config(cls.Config, {})
        marked, thief, scheme = embed_one(model, data, cls, key, cfg, config(0), bits=c.bits)
        own = scheme.verify(marked)
        rounds = 1
        while not embedded(own) and rounds < c.rounds:
            marked = fit(marked, data, [scheme], config(rounds))
            own = scheme.verify(marked)
            rounds += 1
        note(
            marked,
            thief_ber=own.ber,
            thief_verdict=own.verdict,
            thief_layer=thief.marks[0].layer,
            thief_epochs=rounds * c.epochs,
        )
        return marked


def embedded(verdict: Verdict) -> bool:
    """The thief's own mark is in: every bit right, or found for marks without bits."""
    return verdict.positive and (verdict.ber is None or verdict.ber == 0.0)
