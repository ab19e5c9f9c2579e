"""Watermark forging (lecture 000): an ambiguity attack on keys, not on weights.

Threat model: the thief holds a marked model and wants a key under which it "verifies" as
theirs. The classic forgery picks any projection, reads the bits it gives, and calls them a
payload. nnmark's key format makes that impossible to express: the projection is re-derived
from a hash of owner, nonce *and payload*, so the thief must commit to a payload before the
projection that reads it exists. Each try (a new nonce) succeeds with probability about 2^-n
for n bits; `forge_key` makes `tries` honest attempts and keeps the best one, which then fails
verification. It returns a key, not a model, so it is a function rather than a registered
model attack.

    from nnmark.attacks.forge import forge_key
    key = forge_key(stolen_model, layer="conv3", bits=64, tries=1000)
    verify(stolen_model, key).verdict      # 'not_found'
"""

from __future__ import annotations

import os

import torch
from torch import nn

from nnmark.config import config_to_dict
from nnmark.keys import OwnerKey
from nnmark.layers import get_layer
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.stats import DEFAULT_ALPHA


def forge_key(
    model: nn.Module,
    *,
    layer: str,
    bits: int = 64,
    tries: int = 200,
    owner: str = "Thief Inc",
    alpha: float = DEFAULT_ALPHA,
) -> OwnerKey:
    """The best of `tries` forged Uchida keys: payload = the bits read under its own projection.

    The payload is read under a projection derived from a *provisional* payload; committing to
    the read bits changes the hash and hence the projection, which is why forging fails.
    """
    weight = get_layer(model, layer).weight
    best: tuple[float, OwnerKey] | None = None
    for _ in range(tries):
        key = OwnerKey.new(owner, nonce=os.urandom(16).hex())
        config = UchidaConfig(layer=layer)
        provisional = Uchida.plan(model, key, config, bits=bits)
        with torch.no_grad():
            read = tuple(int(b) for b in (Uchida(provisional).logits(weight) > 0).tolist())
        forged = key.with_mark(
            key.new_mark("uchida", config_to_dict(config), layer, read, data=provisional.data)
        )
        p = Uchida(forged.marks[0]).verify(model, alpha).p_value
        if best is None or p < best[0]:
            best = (p, forged)
    assert best is not None
    return best[1]
