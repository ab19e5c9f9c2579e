"""Contract of fragile, deepsigns and actsign: embed -> found/intact; an unmarked model or a
wrong key -> not found/modified; same key + seed -> bit-identical models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnmark import OwnerKey, TrainConfig, embed, evaluate, verify
from nnmark.data.base import DataBundle
from nnmark.schemes import SCHEMES
from nnmark.suspect import Suspect

SCHEMES_HERE = ["fragile", "deepsigns", "actsign"]
NONCE = "d0" * 16
EMBED = TrainConfig(epochs=3, seed=0)


@pytest.fixture(scope="module")
def marked(base_cnn: nn.Module, digits: DataBundle) -> dict[str, tuple[nn.Module, OwnerKey]]:
    """Each scheme fine-tuned into the base CNN (fragile only needs its finalize: 0 epochs)."""
    out = {}
    for name in SCHEMES_HERE:
        cfg = TrainConfig(epochs=0) if name == "fragile" else EMBED
        key = OwnerKey.new(f"{name} owner", nonce=NONCE)
        out[name] = embed(base_cnn, digits, name, key=key, bits=64, config=cfg)
    return out


@pytest.mark.parametrize("name", SCHEMES_HERE)
def test_marked_model_is_found_and_keeps_accuracy(name, marked, base_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    model, key = marked[name]
    v = verify(model, key)
    assert v.positive and v.verdict == ("intact" if name == "fragile" else "found")
    assert v.p_value < v.alpha and v.exit_code == 0
    if name != "fragile":
        assert v.ber == 0.0 and v.n == 64 and v.p_value == pytest.approx(2.0**-64)
    test = digits.loader("test", 256)
    acc = evaluate(model, test, digits.task)["accuracy"]
    assert acc >= evaluate(base_cnn, test, digits.task)["accuracy"] - 0.02


@pytest.mark.parametrize("name", SCHEMES_HERE)
def test_unmarked_model_and_wrong_key_are_not_found(name, marked, base_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    model, key = marked[name]
    v = verify(base_cnn, key)
    assert not v.positive and v.exit_code == 1
    assert v.verdict == ("modified" if name == "fragile" else "not_found")
    if name != "fragile":
        assert v.p_value > 1e-3  # 64 fair coins: p is uniform-ish, far from alpha = 1e-6
    other = OwnerKey.new(f"{name} owner", nonce="d1" * 16)
    cls = SCHEMES.get(name)
    mark = cls.plan(base_cnn, other, cls.Config(), bits=64, data=digits)
    w = verify(model, other.with_mark(mark))
    assert not w.positive and (name == "fragile" or w.p_value > 1e-3)


@pytest.mark.parametrize("name", SCHEMES_HERE)
def test_same_key_and_seed_give_bit_identical_models(name, base_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    cfg = TrainConfig(epochs=1, seed=3, fraction=0.25)
    runs = [
        embed(base_cnn, digits, name, key=OwnerKey.new("o", nonce=NONCE), bits=32, config=cfg)
        for _ in range(2)
    ]
    (a, ka), (b, kb) = runs
    assert ka.marks[0].entry() == kb.marks[0].entry()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("name", ["deepsigns", "actsign"])
def test_activation_schemes_need_white_box_access(name, marked) -> None:  # type: ignore[no-untyped-def]
    _, key = marked[name]
    v = verify(Suspect(), key)  # a suspect that offers no module (an answers-only API)
    assert v.verdict == "not_found" and "white-box" in (v.reason or "")
    assert v.details == {} and v.p_value == 1.0
