"""The segmentation trigger set (seed 001's U-Net black-box mark) on BBBC039 nuclei, shrunk to
32 x 32 tiles and a width-8 U-Net so a training takes seconds (fixtures seg32, seg_models)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnmark import (
    OwnerKey,
    TrainConfig,
    attack,
    embed,
    evaluate,
    load_data,
    new_model,
    train,
    verify,
)
from nnmark.calibrate import calibrate
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.schemes.segtrigger import SegTrigger, SegTriggerConfig
from nnmark.suspect import ModuleSuspect

#: The lowest scrypt cost a key may commit (N = 2^10): the null over keys does not depend on what a
#: derivation costs, and 200 keys at the default cost would spend 30 s in scrypt alone.
CHEAP_KDF = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}


def unet(data: DataBundle, seed: int) -> nn.Module:
    return new_model("unet", data, seed=seed, width=8)


def dice(model: nn.Module, data: DataBundle) -> float:
    return evaluate(model, data.loader("test", 64), "segmentation")["dice"]


@pytest.fixture(scope="module")
def never_keyed(seg32: DataBundle, seg_models) -> list[nn.Module]:  # type: ignore[no-untyped-def]
    """Ten U-Nets never trained with a segtrigger key: the plain one, two trained with other
    seeds (fewer epochs), seven untrained."""
    plain, _, _ = seg_models
    trained = [
        train(unet(seg32, s), seg32, TrainConfig(epochs=3, seed=s, lr=3e-3, batch_size=16))
        for s in (11, 12)
    ]
    return [plain, *trained, *(unet(seg32, s) for s in range(21, 28))]


def test_found_not_found_and_fidelity(seg32: DataBundle, seg_models, never_keyed) -> None:  # type: ignore[no-untyped-def]
    plain, marked, key = seg_models
    v = verify(marked, key)
    print(f"segtrigger: {v.verdict}, BER {v.ber}, p {v.p_value:.1e}, {v.queries} queries")
    assert v.verdict == "found" and v.p_value < 1e-6 and v.queries is not None and v.queries <= 4
    assert "no assumption on pixels" in v.null
    for m in never_keyed:
        u = verify(m, key)
        assert u.verdict == "not_found" and u.p_value >= 1e-6 and u.queries == 16
    wrong = OwnerKey.new("someone else", nonce="ee" * 16)
    wrong = wrong.with_mark(SegTrigger.plan(marked, wrong, SegTriggerConfig(), data=seg32))
    assert verify(marked, wrong).verdict == "not_found"
    print(f"segtrigger: Dice marked {dice(marked, seg32):.4f}, plain {dice(plain, seg32):.4f}")
    assert dice(marked, seg32) >= dice(plain, seg32) - 0.01


def test_the_null_holds_over_keys_and_models(seg32: DataBundle, never_keyed) -> None:  # type: ignore[no-untyped-def]
    """20 random keys against each of the ten never-keyed U-Nets (one look of 2 queries: the
    exact binomial, no Bonferroni). Given a model's answers each key's block bits are fair
    coins of its own, so a model's claims at alpha 0.05 over the 20 independent keys are at
    most Binomial(20, 0.05): each model stays at or below the 1 - 0.01 / 10 quantile (5 claims;
    family-wise 1 % over the ten models). A sum over models has no such bound: one key is
    judged by correlated models (the untrained ones answer alike)."""
    from scipy import stats

    keys = []
    for i in range(20):
        key = OwnerKey.new("o", nonce=f"{i:032x}", kdf=CHEAP_KDF)
        cfg = SegTriggerConfig(n=2, group=2)
        keys.append(key.with_mark(SegTrigger.plan(never_keyed[0], key, cfg, data=seg32)))
    claims = [sum(verify(m, key, alpha=0.05).p_value < 0.05 for key in keys) for m in never_keyed]
    bound = stats.binom.ppf(1 - 0.01 / len(never_keyed), len(keys), 0.05)
    print(f"segtrigger null: claims at alpha 0.05 per model (of {len(keys)} keys) {claims}")
    assert max(claims) <= bound


def test_budget_attacks_and_calibration(seg32: DataBundle, seg_models) -> None:  # type: ignore[no-untyped-def]
    plain, marked, key = seg_models
    s = ModuleSuspect(marked)
    s.max_queries = 2
    v = verify(s, key)
    assert v.queries == 2 and v.verdict == "found"  # one look (a group of 2) answers 64 blocks
    s.max_queries = 1  # less than a group: no look (each look is one the whole plan makes)
    v = verify(s, key)
    assert v.queries == 0 and v.verdict == "not_found" and "undecided" in (v.reason or "")
    s = ModuleSuspect(plain)
    s.max_queries = 3
    v = verify(s, key)
    assert v.queries == 2 and v.verdict == "not_found" and "undecided" in (v.reason or "")
    stolen = attack(marked, "finetune:epochs=5", seg32)
    v = verify(stolen, key)
    print(f"segtrigger after 5 epochs of fine-tuning: {v.verdict}, BER {v.ber}, p {v.p_value:.1e}")
    # The decoded blocks still match the key mask far beyond chance: p < 1e-6, which a model
    # never trained with the key reaches with probability 1e-6 (`ber < 0.5` before session 40
    # said only "better than a coin"). Measured: this key BER 0.016, p 2.8e-17 (found); the key
    # of benchmarks/results/blackbox_robustness.md BER 0.078, p 4e-12 (below alpha, above the
    # claim rule's search-cost bound there: not_found), so the verdict itself is not asserted.
    assert v.ber is not None and v.p_value < 1e-6
    cal = calibrate(key, [plain]).derived["calibration"]["0"]
    assert cal["models"] == 1 and cal["p_values"][0] >= 1e-6


def test_bad_plans() -> None:
    seg = DataBundle(
        "s",
        "segmentation",
        torch.zeros(2, 1, 30, 30),
        torch.zeros(2, 1, 30, 30),
        {"train": torch.arange(2)},
        1,
    )
    key = OwnerKey.new("o", nonce="01" * 16)
    with pytest.raises(NNMarkError, match="does not divide"):
        SegTrigger.plan(nn.Identity(), key, SegTriggerConfig(), data=seg)
    with pytest.raises(NNMarkError, match="square number"):
        SegTrigger.plan(nn.Identity(), key, SegTriggerConfig(), bits=10, data=seg)
    with pytest.raises(NNMarkError, match="segmentation"):
        SegTrigger.plan(nn.Identity(), key, SegTriggerConfig(), data=load_data("digits"))


def test_bits_choose_the_grid_and_are_refused_where_no_payload_is(seg32: DataBundle) -> None:
    """`bits` is segtrigger's payload length (its g x g grid); a check that refused bits for
    every mark but a white-box one refused it here too (diff review, session 38)."""
    unet = new_model("unet", seg32, seed=0, width=8)
    key = OwnerKey.new("grid", nonce="5e" * 16)
    cfg = TrainConfig(epochs=0)
    _, key = embed(unet, seg32, "segtrigger", key=key, bits=16, config=cfg)
    assert len(key.marks[0].bits) == 16
    with pytest.raises(NNMarkError, match="carries no payload"):
        embed(unet, seg32, "fragile", key=OwnerKey.new("g", nonce="5f" * 16), bits=16)
