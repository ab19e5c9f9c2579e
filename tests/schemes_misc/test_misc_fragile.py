"""fragile: any change is detected and localised to exactly the changed tensors; the untouched
model (also after a file round trip) is intact; every registered attack is detected."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from nnmark import OwnerKey, TrainConfig, attack, embed, model_info, new_model, verify
from nnmark.attacks import ATTACKS, list_attacks
from nnmark.data.base import DataBundle
from nnmark.io import load_model, save_model
from nnmark.schemes import scheme_for
from nnmark.schemes.fragile import Fragile


@pytest.fixture(scope="module")
def fragile_cnn(base_cnn: nn.Module, digits: DataBundle) -> tuple[nn.Module, OwnerKey]:
    key = OwnerKey.new("integrity", nonce="fa" * 16)
    return embed(base_cnn, digits, "fragile", key=key, config=TrainConfig(epochs=0))


@pytest.fixture(scope="module")
def fragile_resnet(digits: DataBundle) -> tuple[nn.Module, OwnerKey]:
    """resnet20 (BatchNorm) on 8x8 digits, one short epoch so the BN statistics are trained."""
    key = OwnerKey.new("integrity", nonce="fb" * 16)
    net = new_model("resnet20", digits, seed=0)
    return embed(net, digits, "fragile", key=key, config=TrainConfig(epochs=1, fraction=0.25))


def _flip(model: nn.Module, name: str, index: int, bit: int) -> nn.Module:
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.state_dict()[name].view(torch.int32).view(-1)[index] ^= 1 << bit
    return bad


def test_output_change_caused_by_the_mark_is_tiny(fragile_cnn, base_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_cnn
    x = digits.tensors("test")[0]
    with torch.no_grad():
        diff = (model(x) - base_cnn(x)).abs().max().item()
        scale = base_cnn(x).abs().max().item()
    print(
        f"fragile on the digits cnn: max |output change| on the test set {diff:.3g} "
        f"(largest |logit| {scale:.3g}); {len(scheme_for(key.marks[0]).slots)} LSBs written"
    )
    assert 0 < diff < 1e-5 * scale


@pytest.mark.parametrize(
    ("name", "index", "bit"),
    [
        ("conv1.weight", 5, 7),  # a low mantissa bit
        ("conv2.bias", 0, 22),  # the top mantissa bit of a bias
        ("fc1.weight", 1000, 31),  # a sign bit
        ("fc2.bias", 9, 0),  # an LSB of a small bias (not a carrier)
        ("conv3.weight", 123, 26),  # an exponent bit
    ],
)
def test_one_flipped_bit_is_detected_and_localised(name, index, bit, fragile_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_cnn
    v = verify(_flip(model, name, index, bit), key)
    assert v.verdict == "modified" and v.exit_code == 1 and v.details["changed"] == [name]
    assert v.p_value == 1.0 and v.statistic == 0.0


def test_a_flipped_carrier_lsb_is_detected_and_localised(fragile_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_cnn
    scheme = Fragile(key.marks[0])
    digest_slot = scheme.digest_slots["fc2.bias"][3]  # held by some carrier, not by fc2.bias
    for name, pos in (digest_slot, scheme.hash_slots[17]):
        v = verify(_flip(model, name, pos, 0), key)
        assert v.verdict == "modified" and v.details["changed"] == [name]


def test_two_tensors_changed_are_both_named(fragile_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_cnn
    bad = _flip(_flip(model, "conv1.bias", 2, 20), "fc1.weight", 7, 12)
    assert verify(bad, key).details["changed"] == ["conv1.bias", "fc1.weight"]


def test_batchnorm_buffers_are_covered_and_localised(fragile_resnet) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_resnet
    assert verify(model, key).verdict == "intact"
    for name, change in (
        ("layers.2.bn2.running_var", lambda t: t.__setitem__(0, t[0] + 1e-6)),
        ("layers.5.bn1.running_mean", lambda t: t.__setitem__(3, -t[3])),
        ("bn1.num_batches_tracked", lambda t: t.add_(1)),
    ):
        bad = copy.deepcopy(model)
        with torch.no_grad():
            change(bad.state_dict()[name])
        v = verify(bad, key)
        assert v.verdict == "modified" and v.details["changed"] == [name], name


def test_untouched_model_is_intact_after_a_file_round_trip(
    fragile_cnn, fragile_resnet, digits, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    for i, (model, key) in enumerate((fragile_cnn, fragile_resnet)):
        path = tmp_path / f"m{i}.safetensors"
        save_model(model, model_info(model, digits), path)
        v = verify(path, key)
        assert v.verdict == "intact" and v.exit_code == 0 and v.p_value == 2.0**-256
        loaded, _ = load_model(path)
        assert verify(loaded, key).verdict == "intact"


def test_a_missing_or_retyped_tensor_is_named(fragile_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = fragile_cnn
    half = copy.deepcopy(model).double()
    v = verify(half, key)
    assert v.verdict == "modified" and len(v.details["changed"]) == len(model.state_dict())


def tiny(name: str) -> dict[str, Any]:
    """The smallest run of each attack: every *epochs option set to 1, forget sets to 32."""
    fields = {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}
    opts: dict[str, Any] = {f: 1 for f in fields if f.endswith("epochs")}
    if "forget" in fields:
        opts["forget"] = 32
    return opts


@pytest.mark.parametrize("name", list_attacks())
def test_every_registered_attack_is_detected(name: str, fragile_cnn, digits) -> None:
    model, key = fragile_cnn
    attacked = attack(model, name, digits, options=tiny(name), seed=0)
    v = verify(attacked, key)
    assert v.verdict == "modified" and v.exit_code == 1
    assert v.details["changed"], f"{name}: no tensor named"
