"""Tartaglione (frozen key values, in-place replicas) and the fragile integrity mark."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from nnmark import (
    ATTACKS,
    OwnerKey,
    TrainConfig,
    attack,
    embed,
    evaluate,
    model_info,
    new_model,
    save_model,
    verify,
)
from nnmark.data.base import DataBundle
from nnmark.schemes.tartaglione import Tartaglione


@pytest.fixture(scope="module")
def tartaglione_cnn(digits: DataBundle):  # type: ignore[no-untyped-def]
    key = OwnerKey.new("tartaglione owner", nonce="71" * 16)
    cfg = TrainConfig(epochs=10, seed=0, weight_decay=1e-3)
    return embed(
        new_model("cnn", digits, seed=0),
        digits,
        "tartaglione",
        options={"R": 2, "one_replica": True},
        key=key,
        config=cfg,
    )


def test_tartaglione_found_frozen_and_deterministic(tartaglione_cnn, plain_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    model, key = tartaglione_cnn
    v = verify(model, key)
    assert v.verdict == "found" and v.ber == 0.0 and v.n > 500
    accuracy = evaluate(model, digits.loader("test"), digits.task)["accuracy"]
    print(f"tartaglione (R=2, one replica, 10 epochs, weight decay): accuracy {accuracy:.4f}")
    assert accuracy > 0.9  # it trained; the fidelity cost is measured in benchmarks, not here
    scheme = Tartaglione(key.marks[0])
    params = dict(model.named_parameters())
    for name, idx in scheme.index.items():  # Adam momentum + weight decay did not move them
        assert torch.equal(params[name].detach().view(-1)[idx], scheme.values[name])
    assert verify(plain_cnn, key).verdict == "not_found"
    other = OwnerKey.new("tartaglione owner", nonce="72" * 16)
    other_mark = Tartaglione.plan(model, other, scheme.config)
    assert verify(model, other.with_mark(other_mark)).verdict == "not_found"
    again, _ = embed(
        new_model("cnn", digits, seed=0),
        digits,
        "tartaglione",
        options={"R": 2, "one_replica": True},
        key=OwnerKey.new("tartaglione owner", nonce="71" * 16),
        config=TrainConfig(epochs=10, seed=0, weight_decay=1e-3),
    )
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values())
    )


@pytest.fixture(scope="module")
def fragile_models(digits: DataBundle):  # type: ignore[no-untyped-def]
    out = {}
    for arch in ("cnn", "resnet20"):
        key = OwnerKey.new("integrity", nonce="f0" * 16)
        out[arch] = embed(
            new_model(arch, digits, seed=0),
            digits,
            "fragile",
            key=key,
            config=TrainConfig(epochs=2, seed=0),
        )
    return out


def test_fragile_intact_also_after_a_file_round_trip(
    fragile_models, digits, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    for model, key in fragile_models.values():
        assert verify(model, key).verdict == "intact"
        path = tmp_path / "m.safetensors"
        save_model(model, model_info(model, digits), path)
        v = verify(path, key)
        assert v.verdict == "intact" and v.exit_code == 0 and v.p_value == 2.0**-256


def test_fragile_mark_changes_outputs_negligibly(fragile_models, digits) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_models["cnn"]
    from nnmark.schemes import scheme_for

    before = copy.deepcopy(model)
    with torch.no_grad():  # undo the LSB writing: clear every carrier bit
        state = before.state_dict()
        for name, pos in scheme_for(key.marks[0]).slots:
            ints = state[name].view(torch.int32).view(-1)
            ints[pos] = ints[pos] & ~1
    x = digits.tensors("test")[0]
    diff = (model(x) - before(x)).abs().max().item()
    print(f"fragile: max absolute output difference on the test set {diff:.3g}")
    assert diff < 1e-4


@pytest.mark.parametrize("target", ["conv1.weight", "fc2.bias", "conv3.weight"])
def test_fragile_one_flipped_bit_is_localised(target: str, fragile_models) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_models["cnn"]
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.state_dict()[target].view(torch.int32).view(-1)[5] ^= 1 << 7
    v = verify(bad, key)
    assert v.verdict == "modified" and v.exit_code == 1 and v.details["changed"] == [target]


def test_fragile_batchnorm_buffer_change_is_localised(fragile_models) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_models["resnet20"]
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.layers[2].bn2.running_var[0] += 1e-6
    v = verify(bad, key)
    assert v.verdict == "modified" and v.details["changed"] == ["layers.2.bn2.running_var"]


@pytest.mark.parametrize("name", ATTACKS.names())
def test_fragile_detects_every_attack(name: str, fragile_models, digits) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_models["cnn"]
    fast = {"finetune": {"epochs": 1}, "distill": {"epochs": 1}, "overwrite": {"epochs": 1}}
    attacked = attack(model, name, digits, options=fast.get(name), seed=0)
    assert verify(attacked, key).verdict == "modified"
