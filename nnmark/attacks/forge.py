"""Watermark forging (lecture 000): an ambiguity attack on keys, not on weights.

Threat model: the thief holds a marked model (white-box) and wants a key under which it
"verifies" as theirs, to muddy the owner's claim. The classic forgery picks any projection, reads
the bits the model gives under it, and calls them a payload. nnmark's key format makes that
impossible to express: a key stores no projection; verification re-derives it from a hash of
owner, nonce, layer, config *and payload*. So the thief must commit to a payload before the
projection that reads it exists; committing to the bits just read changes the hash, hence the
projection, and each try (a new nonce) matches all n bits with probability about 2^-n.
`forge_key` makes `tries` such honest attempts and keeps the one with the smallest p-value,
which still fails verification.

It returns a key, not a model, so it is a plain function rather than a registered model attack
(the attack registry's contract is model in, model out, and the contract tests enumerate it).

    from nnmark.attacks.forge import forge_key
    key = forge_key(stolen_model, bits=64, tries=1000)
    verify(stolen_model, key).verdict      # 'not_found'
"""

from __future__ import annotations

import hashlib
import logging

import torch
from torch import nn

from nnmark.config import config_to_dict
from nnmark.errors import NNMarkError
from nnmark.keys import OwnerKey
from nnmark.layers import default_host_layer, get_layer
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.stats import DEFAULT_ALPHA

log = logging.getLogger(__name__)


def forge_key(
    model: nn.Module,
    *,
    scheme: str = "uchida",
    layer: str | None = None,
    bits: int = 64,
    tries: int = 200,
    owner: str = "thief",
    alpha: float = DEFAULT_ALPHA,
    seed: int = 0,
) -> OwnerKey:
    """The best of `tries` forged keys: payload = the bits read under its own projection.

    Each try reads the model's bits under the projection of a *provisional* key, then commits to
    them as the payload; the committed key's projection is a different one, so the claim rarely
    survives. Deterministic under `seed` (the nonces are hashed from it).
    """
    if scheme != "uchida":
        raise NNMarkError(f"forging is implemented for the uchida scheme, not {scheme!r}")
    if tries < 1:
        raise NNMarkError(f"tries must be >= 1, got {tries}")
    layer = layer or default_host_layer(model)
    weight = get_layer(model, layer).weight.detach()
    config = UchidaConfig(layer=layer)
    best: tuple[float, OwnerKey] | None = None
    for i in range(tries):
        nonce = hashlib.sha256(f"forge|{seed}|{i}".encode()).hexdigest()[:32]
        key = OwnerKey.new(owner, nonce=nonce)
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
    log.info("forging: best of %d tries has p = %.3g", tries, best[0])
    return best[1]
