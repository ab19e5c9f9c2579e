"""Realigned to the unmarked twin, a mark that reads weight magnitudes is also read with the
suspect's channel scales kept (nnmark/defenses/realign.py `keep_scales`)."""

from __future__ import annotations

import pytest
from torch import nn

from nnmark import OwnerKey, TrainConfig, attack, embed, new_model, verify
from nnmark.api import bound_scheme
from nnmark.data.base import DataBundle
from nnmark.defenses.realign import realign_suspect
from nnmark.suspect import ModuleSuspect


@pytest.mark.parametrize("k", [0, 1])
def test_stdm_trained_from_scratch_and_permuted_is_found_against_its_twin(
    k: int, plain_cnn: nn.Module, digits: DataBundle
) -> None:
    """ST-DM reads raw weights on a lattice; realignment set every channel's scale to the
    twin's, which differs from the marked model's by however much two models trained apart
    differ: a permuted copy read at BER up to 0.2, found for 6 of 12 keys
    (benchmarks/results/realign_keys_stdm.md). The view with the scales kept reads it at BER
    0, and the verdict counts it as a third look."""
    key = OwnerKey.new(f"stdm scales {k}", nonce=f"{k + 0x60:02x}" * 16)
    marked, key = embed(  # the twin: plain_cnn, the same initial weights and recipe
        new_model("cnn", digits, seed=0), digits, "stdm", key=key, config=TrainConfig(),
        reference=plain_cnn,
    )  # fmt: skip
    schemes = [bound_scheme(key, m.index) for m in key.marks]
    copy = attack(marked, "permute", digits, seed=3)
    v = verify(realign_suspect(ModuleSuspect(copy), plain_cnn, schemes, unmarked=True), key)
    reads = v.details["reads_p"]
    assert len(reads) == 3 and v.details["read_from"].endswith("scales kept")
    assert v.verdict == "found" and v.ber == 0.0
    assert v.p_value == pytest.approx(3 * min(reads.values()))
    plain = realign_suspect(ModuleSuspect(plain_cnn), plain_cnn, schemes, unmarked=True)
    assert verify(plain, key).verdict == "not_found"  # the twin never had the mark
