"""The attack suite: registry-wide contract, output invariance, Uchida's robustness, realignment,
forging, and the `nnmark attack` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nnmark import (
    ATTACKS,
    NNMarkError,
    attack,
    create_model,
    evaluate,
    list_attacks,
    model_info,
    save_model,
    verify,
)
from nnmark.attacks.forge import forge_key
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.defenses.realign import realign

FAST = {"finetune": {"epochs": 1}}  # attacks with training get the smallest honest setting


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa
    )


@pytest.mark.parametrize("name", list_attacks())
def test_attack_contract(name: str, plain_cnn: torch.nn.Module, digits: DataBundle) -> None:
    before = {k: v.clone() for k, v in plain_cnn.state_dict().items()}
    a = ATTACKS.get(name)(FAST.get(name, {}))
    out1 = a(plain_cnn, digits, seed=3)
    out2 = a(plain_cnn, digits, seed=3)
    assert out1 is not plain_cnn
    assert all(torch.equal(before[k], v) for k, v in plain_cnn.state_dict().items())  # untouched
    assert states_equal(out1, out2)  # deterministic under a seed
    assert not states_equal(out1, plain_cnn)  # the weights changed
    assert not out1.training


@pytest.mark.parametrize("spec", ["permute", "scale", "morph"])
@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_function_preserving_attacks(spec: str, arch: str, digits: DataBundle) -> None:
    model = create_model(arch, **digits.model_kwargs()).eval()
    x = digits.x[:64]
    attacked = attack(model, spec, seed=1)
    assert torch.allclose(attacked(x), model(x), atol=1e-5)
    assert not states_equal(attacked, model)


@pytest.mark.parametrize("arch", ["resnet20", "unet"])
def test_unit_attacks_refuse_coupled_architectures(arch: str) -> None:
    model = create_model(arch, in_channels=1, num_classes=10 if arch != "unet" else 1)
    with pytest.raises(NNMarkError, match="chain models"):
        attack(model, "permute")


@pytest.mark.parametrize(
    "spec",
    ["prune:fraction=0.5", "finetune:epochs=10", "quantize:bits=8", "noise:sigma=0.1"],
)
def test_uchida_survives(spec: str, uchida_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    attacked = attack(model, spec, digits, seed=1)
    v = verify(attacked, key)
    accuracy = evaluate(attacked, digits.loader("test", 512), digits.task)["accuracy"]
    print(f"{spec}: BER {v.ber:.4f}, p {v.p_value:.2e}, test accuracy {accuracy:.4f}")
    assert v.ber <= 0.05 and v.verdict == "found"


@pytest.mark.parametrize("spec", ["permute", "morph", "scale", "permute,scale,morph"])
def test_realignment_restores_the_mark(spec: str, uchida_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    before = verify(model, key).ber
    attacked = attack(model, spec, seed=2)
    blind = verify(attacked, key)
    if spec == "permute":
        assert 0.3 <= blind.ber <= 0.7 and blind.verdict == "not_found"
    if "morph" in spec:
        assert blind.verdict == "not_found" and "shape" in (blind.reason or "")
    assert verify(realign(attacked, model), key).ber == before


def test_realignment_after_permute_then_finetune(uchida_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    tuned = attack(model, "finetune:epochs=5", digits, seed=4)
    both = attack(tuned, "permute", seed=5)
    assert 0.3 <= verify(both, key).ber <= 0.7
    assert verify(realign(both, model), key).ber == verify(tuned, key).ber


def test_forged_key_is_rejected_and_the_owner_passes(uchida_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    forged = forge_key(model, layer=key.marks[0].layer, bits=64, tries=50)
    v = verify(model, forged)
    assert v.verdict == "not_found" and v.p_value > 1e-6
    assert verify(model, key).verdict == "found"


runner = CliRunner()


def test_attack_cli(tmp_path: Path, uchida_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    src, wide, ref = tmp_path / "m.safetensors", tmp_path / "w.safetensors", tmp_path / "k.nnkey"
    save_model(model, model_info(model, digits), src)
    key.save(ref)
    r = runner.invoke(app, ["attack", "--list"])
    assert r.exit_code == 0 and all(n in r.stdout for n in list_attacks())
    r = runner.invoke(
        app,
        [
            "attack",
            "prune:fraction=0.3,quantize:bits=8",
            str(src),
            "--out",
            str(tmp_path / "p.safetensors"),
            "--data",
            "digits",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["after"]["accuracy"] > 0.9 and res["before"]["accuracy"] > 0.9
    assert (
        runner.invoke(app, ["verify", str(tmp_path / "p.safetensors"), "--key", str(ref)]).exit_code
        == 0
    )
    r = runner.invoke(app, ["attack", "morph", str(src), "--out", str(wide)])
    assert r.exit_code == 0, r.stderr
    assert runner.invoke(app, ["verify", str(wide), "--key", str(ref)]).exit_code == 1
    r = runner.invoke(
        app, ["verify", str(wide), "--key", str(ref), "--reference", str(src), "--json"]
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["ber"] == 0.0
    for args, msg in [
        (["attack", "nope", str(src), "--out", str(wide)], "unknown attack 'nope'"),
        (
            ["attack", "prune", str(src), "--out", str(wide), "--set", "fraction=2"],
            "fraction must be in",
        ),
        (
            ["attack", "prune", str(tmp_path / "missing.safetensors"), "--out", str(wide)],
            "not found",
        ),
        (["attack", "finetune", str(src), "--out", str(wide)], "needs data"),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
            r.stderr
        )
