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
    """ST-DM reads raw weights on a lattice; realignment sets every channel's scale to the
    twin's, which differs from the marked model's by however much two models trained apart
    differ: a permuted copy is read off the lattice points (p 1e-51 to 1e-30 over 12 keys, and
    at BER up to 0.2, 6 of 12 keys found, while the activations' norms set the scales:
    benchmarks/results/realign_keys_stdm.md). The view with the scales kept reads it exactly,
    and the verdict counts it as a third look."""
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


def test_stdm_scaled_is_read_realigned_at_ber_0(plain_cnn: nn.Module, digits: DataBundle) -> None:
    """`scale` multiplies every hidden channel by a factor in [1/4, 4]: the view with the
    scales kept keeps those factors, so only the realigned view can read ST-DM's lattice. Each
    channel's scale is set back from its weights (the BatchNorm's, else its producing layer's,
    against the twin's), one layer after the other: from the activations' norms on random
    inputs, 7 of 10 cnn keys were lost after `scale`, read at BER up to 0.36
    (benchmarks/results/realign_null_views.json before session 42; 10 of 10 found since)."""
    key = OwnerKey.new("stdm scales 0", nonce=f"{0x60:02x}" * 16)
    marked, key = embed(
        new_model("cnn", digits, seed=0), digits, "stdm", key=key, config=TrainConfig(),
        reference=plain_cnn,
    )  # fmt: skip
    schemes = [bound_scheme(key, m.index) for m in key.marks]
    copy = attack(marked, "scale", digits, seed=3)
    suspect = realign_suspect(ModuleSuspect(copy), plain_cnn, schemes, unmarked=True)
    assert suspect.scales_kept is not None and suspect.realigned is not None
    assert verify(suspect.scales_kept, key).ber > 0.25  # the thief's factors, kept
    assert verify(suspect.realigned, key).ber == 0.0
    v = verify(suspect, key)
    assert v.verdict == "found" and v.details["read_from"].endswith("(realigned to the reference)")
