"""No scheme claims a model it never marked, over keys, architectures and recipes: a null must
hold over keys and models, not over the one key a test drew.

Every classification scheme of the registry (a new one is covered as soon as its file exists):
keys planned on a never-marked model (never embedded), each judged by `verify`'s claim rule
against every never-marked model it can be read from (the key's architecture for marks in the
weights; every model for trigger sets), CNNs and MLPs each trained with Adam and with SGD. The
full sweep (10 keys per scheme, 30 models of three architectures) is `nnmark bench
--false-claims` (nnmark.bench.false_claims); this is its smallest form, run by `make test`.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nnmark import SCHEMES, OwnerKey, verify
from nnmark.config import build_config
from nnmark.data.base import DataBundle

CREATED = "2026-01-01T00:00:00+00:00"
KEYS = 4  # per scheme and owner architecture
CLASSIFICATION = [n for n in SCHEMES.names() if SCHEMES.get(n).task != "segmentation"]


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_never_marked_models_are_not_claimed_over_keys(  # type: ignore[no-untyped-def]
    name: str, never_marked, digits: DataBundle, fashion, key_data, blackbox_options, monkeypatch
) -> None:
    """No claim (found, or intact for an integrity mark) on any (key, model) pair; and the
    p-values are not anti-conservative: at most a quarter of the pairs below 0.05."""
    cls = SCHEMES.get(name)
    in_weights = cls.kind != "blackbox"
    config: Any = build_config(cls.Config, blackbox_options.get(name, {}))
    if cls.needs_source:  # the source the options name, loaded once (the fixture), not per key
        assert [d.ref() for d in cls.config_data(config)] == [fashion.ref()]
        monkeypatch.setattr(cls, "config_data", classmethod(lambda c, cfg: [fashion]))
    ps = []
    for arch in ("cnn", "mlp") if in_weights else ("cnn",):
        owner = never_marked[arch][0]
        suspects = (
            never_marked[arch] if in_weights else [m for ms in never_marked.values() for m in ms]
        )
        for i in range(KEYS):
            key = OwnerKey.new(
                f"null {name} {arch} {i}", nonce=f"{0x40 + i:02x}" * 16, created=CREATED
            )
            key = key.with_mark(cls.plan(copy.deepcopy(owner), key, config, data=digits))
            for model in suspects:
                if cls.needs_trained and model is owner:
                    continue  # a stitched key is crafted on its model: not a null pair
                v = verify(model, key, data=key_data)
                assert not v.positive and v.exit_code == 1, (name, arch, i, v)
                ps.append(v.p_value)
    small = sum(p < 0.05 for p in ps)
    print(f"{name}: {len(ps)} pairs, min p {min(ps):.2e}, {small} below 0.05")
    # pairs share models, so not independent; Binomial(n, 0.05) above n / 4 is below 1e-3
    # for the n here (16 to 20 pairs)
    assert small <= 0.25 * len(ps)
