"""The weight-space attack suite: the registry-wide contract, output invariance on every zoo
family, Uchida's robustness, realignment, forging, and the `nnmark attack` CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from nnmark import (
    ATTACKS,
    OwnerKey,
    TrainConfig,
    attack,
    evaluate,
    list_attacks,
    model_info,
    new_model,
    train,
    verify,
)
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.defenses.realign import realign
from nnmark.errors import NNMarkError
from nnmark.io import model_sha256, save_model
from nnmark.models import create_model

#: Cost knobs lowered for every attack that has them (other helpers add attacks at the same
#: time, so the table is generic): epochs, passes, optimisation steps, queries, members.
FAST_INTS = {
    "epochs": 1,
    "decay_epochs": 1,
    "steps": 5,
    "queries": 128,
    "members": 2,
    "rounds": 2,
}
#: Attack-specific fast settings on top.
FAST: dict[str, dict[str, Any]] = {"finetune": {"fraction": 0.5}}
#: Variants of the weight attacks that have their own code path.
VARIANTS = [
    "prune:structured=true,fraction=0.25",
    "prune:order=random,scope=layer",
    "quantize:bits=4,per_channel=true",
    "scale:absorb=false",
]


def fast_options(name: str) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for f in dataclasses.fields(ATTACKS.get(name).Config):
        if f.name in FAST_INTS and isinstance(f.default, int) and not isinstance(f.default, bool):
            low = FAST_INTS[f.name]
            opts[f.name] = low if f.default == 0 else min(f.default, low)  # 0 queries = all
    known = {f.name for f in dataclasses.fields(ATTACKS.get(name).Config)}
    return {**opts, **{k: v for k, v in FAST.get(name, {}).items() if k in known}}


@pytest.fixture(scope="module")
def tiny_cnn(digits: DataBundle) -> torch.nn.Module:
    """A narrow digits CNN trained for 2 epochs: the contract needs a model, not a good one."""
    model = new_model("cnn", digits, seed=0, width=4, hidden=16)
    return train(model, digits, TrainConfig(epochs=2, seed=0))


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa
    )


def accuracy(model: torch.nn.Module, data: DataBundle) -> float:
    return evaluate(model, data.loader("test", 512), data.task)["accuracy"]


@pytest.mark.parametrize("spec", list_attacks() + VARIANTS)
def test_attack_contract(spec: str, tiny_cnn: torch.nn.Module, digits: DataBundle) -> None:
    """A new model, the input bit-identical, the same weights under the same seed, and
    different weights from the input."""
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    options = fast_options(spec) if ":" not in spec else None
    out1 = attack(tiny_cnn, spec, digits, options=options, seed=3)
    out2 = attack(tiny_cnn, spec, digits, options=options, seed=3)
    assert out1 is not tiny_cnn
    assert all(torch.equal(before[k], v) for k, v in tiny_cnn.state_dict().items())
    assert states_equal(out1, out2)
    assert not states_equal(out1, tiny_cnn)
    assert not out1.training


ARCHS = {
    "cnn": ({"in_channels": 1, "num_classes": 10, "input_size": 8}, (32, 1, 8, 8)),
    "mlp": ({"in_channels": 1, "num_classes": 10, "input_size": 8}, (32, 1, 8, 8)),
    "resnet20": ({"in_channels": 1, "num_classes": 10, "input_size": 8}, (32, 1, 8, 8)),
    # option A: a stage's channels go on as the first ones of the next stage's
    "resnet32": ({"in_channels": 1, "num_classes": 10, "input_size": 8}, (32, 1, 8, 8)),
    "wrn": (
        {"in_channels": 1, "num_classes": 10, "input_size": 8, "depth": 10, "widen": 2},
        (32, 1, 8, 8),
    ),
    "unet": ({"in_channels": 1, "num_classes": 1, "width": 4, "input_size": 16}, (4, 1, 16, 16)),
}


@pytest.fixture(scope="module")
def zoo() -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    """One model per family, BatchNorm statistics moved off their defaults, and a test batch."""
    models = {}
    for arch, (kw, shape) in ARCHS.items():
        torch.manual_seed(0)
        model = create_model(arch, **kw).train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(*shape) * 2 + 0.5)
        models[arch] = (model.eval(), torch.randn(*shape))
    return models


@pytest.mark.parametrize("spec", ["permute", "scale", "morph"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_function_preserving_attacks(spec: str, arch: str, zoo) -> None:  # type: ignore[no-untyped-def]
    model, x = zoo[arch]
    attacked = attack(model, spec, seed=1)
    with torch.no_grad():
        assert torch.allclose(attacked(x), model(x), atol=1e-5)
    assert not states_equal(attacked, model)
    if spec == "morph":  # every hidden layer wider
        n_before, n_after = (sum(p.numel() for p in m.parameters()) for m in (model, attacked))
        assert n_after > 1.2 * n_before


@pytest.mark.parametrize("arch", list(ARCHS))
def test_realign_undoes_permute_scale_morph_exactly(arch: str, zoo) -> None:  # type: ignore[no-untyped-def]
    model, _ = zoo[arch]
    attacked = attack(model, "permute,scale,morph,permute", seed=2)
    back = realign(attacked, model).state_dict()
    for name, ref in model.state_dict().items():
        if ref.is_floating_point():
            assert torch.allclose(back[name], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_structured_pruning_shrinks_every_hidden_group(arch: str, zoo) -> None:  # type: ignore[no-untyped-def]
    model, x = zoo[arch]
    pruned = attack(model, "prune:structured=true,fraction=0.5", seed=0)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape
    n_before, n_after = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
    assert n_after < 0.4 * n_before
    assert realign(pruned, model).state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    "spec",
    [
        "prune:fraction=0.5",
        "quantize:bits=8",
        "noise:sigma=0.1",
        "finetune:epochs=10",
        "prune:fraction=0.5,finetune:epochs=5",  # `nnmark demo`'s thief (tests it at 1 epoch)
    ],
)
def test_uchida_survives(spec: str, uchida_cnn, digits: DataBundle, record_property) -> None:  # type: ignore[no-untyped-def]
    """Issue 4, item 3: BER <= 0.05 after each attack, with the accuracy beside it."""
    model, key = uchida_cnn
    attacked = attack(model, spec, digits, seed=1)
    v = verify(attacked, key)
    acc = accuracy(attacked, digits)
    record_property("ber", v.ber)
    record_property("accuracy", acc)
    print(f"{spec}: BER {v.ber:.4f}, p {v.p_value:.2e}, test accuracy {acc:.4f}")
    assert v.ber <= 0.05 and v.verdict == "found"
    assert acc >= 0.9


@pytest.mark.parametrize("spec", ["permute", "scale", "morph", "permute,scale,morph"])
def test_realignment_restores_the_mark(spec: str, uchida_cnn, record_property) -> None:  # type: ignore[no-untyped-def]
    """Blind and realigned BER after each function-preserving attack. `scale` does not remove
    Uchida's mark at all (blind BER 0, test below): realignment matters for permutation and
    widening, which break the host layer's order or shape."""
    model, key = uchida_cnn
    before = verify(model, key).ber
    attacked = attack(model, spec, seed=2)
    blind = verify(attacked, key)
    realigned = verify(realign(attacked, model), key)
    record_property("blind_ber", blind.ber)
    record_property("realigned_ber", realigned.ber)
    print(f"{spec}: BER {before:.4f} -> blind {blind.ber} -> realigned {realigned.ber:.4f}")
    if spec == "permute":
        assert 0.3 <= blind.ber <= 0.7 and blind.verdict == "not_found"
    elif spec == "scale":
        assert blind.verdict == "found" and blind.ber == before
    else:  # the host layer changed shape: nothing to read without the reference
        assert blind.verdict == "not_found" and "shape" in (blind.reason or "")
    assert realigned.ber == before and realigned.verdict == "found"


def test_scaling_leaves_uchida_readable_because_every_filter_carries_the_bits(uchida_cnn) -> None:  # type: ignore[no-untyped-def]
    """Why `scale` is no threat to Uchida (measured: blind BER 0 at the default factors up to
    4). The mark is read as the signs of a projection of the mean of the host layer's filters;
    the penalty's gradient reaches every filter equally, so after training each filter alone
    projects to (nearly) the payload. Positive factors on the host's filters (its output
    channels) only reweight that mean, so a bit can flip only where some filter alone has it
    wrong; factors on its input channels (from rescaling the layer before) reweight positions
    inside each filter, which flips bits of small margin only at extreme factors (up to 16x:
    printed). A threat to marks that read raw values at positions, not to this one."""
    from nnmark.schemes.uchida import Uchida

    model, key = uchida_cnn
    scheme = Uchida(key.marks[0])
    weight = scheme.host_weight(model).detach()
    payload = scheme.target  # what is embedded: the payload XOR the key's mask

    def wrong_bits(w: torch.Tensor) -> set[int]:
        return set(torch.nonzero((scheme.logits(w) > 0).long() != payload).flatten().tolist())

    per_filter = [wrong_bits(weight[k : k + 1]) for k in range(weight.shape[0])]
    can_flip = set().union(*per_filter)
    g = torch.Generator().manual_seed(7)
    factors = 16 ** (torch.rand(weight.shape[0], generator=g) * 2 - 1)  # in [1/16, 16]
    flipped = wrong_bits(weight * factors.view(-1, 1, 1, 1))
    extreme = verify(attack(model, "scale:max_factor=16", seed=7), key)
    print(
        f"filters with a wrong bit: {sum(bool(w) for w in per_filter)} of {len(per_filter)} "
        f"({len(can_flip)} bits in all); host filters rescaled up to 16x: {len(flipped)} bits "
        f"flipped; scale attack up to 16x: BER {extreme.ber:.4f}, {extreme.verdict}"
    )
    assert sorted(len(w) for w in per_filter)[len(per_filter) // 2] == 0
    assert flipped <= can_flip
    assert extreme.verdict == "found"


def test_realignment_after_permute_then_finetune(uchida_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    """Fine-tuning a permuted model is fine-tuning the model, permuted (Adam is elementwise):
    realigned, the BER is that of fine-tuning alone, and both are 0 (measured: blind 0.5)."""
    model, key = uchida_cnn
    alone = verify(attack(model, "finetune:epochs=5", digits, seed=4), key)
    both = attack(model, "permute,finetune:epochs=5", digits, seed=4)
    blind = verify(both, key)
    realigned = verify(realign(both, model), key)
    print(
        f"finetune alone BER {alone.ber:.4f}; permute+finetune blind {blind.ber:.4f}, "
        f"realigned {realigned.ber:.4f}"
    )
    assert 0.3 <= blind.ber <= 0.7 and blind.verdict == "not_found"
    assert alone.ber == 0.0 and realigned.ber == 0.0 and realigned.verdict == "found"


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_realignment_after_channel_pruning(  # type: ignore[no-untyped-def]
    fraction: float, uchida_cnn, digits: DataBundle, record_property
) -> None:
    """Surviving channels are matched back; pruned ones read as zero. Measured: BER 0 after
    permuting and removing 25 % of every hidden layer's channels (accuracy 97.2 %), and the
    BER and accuracy at 50 % are printed and recorded."""
    model, key = uchida_cnn
    pruned = attack(model, f"permute,prune:structured=true,fraction={fraction}", seed=5)
    realigned = verify(realign(pruned, model), key)
    acc = accuracy(pruned, digits)
    record_property("ber", realigned.ber)
    record_property("accuracy", acc)
    print(
        f"permute + channel prune {fraction:.0%}: accuracy {acc:.4f}, realigned BER {realigned.ber:.4f}"
    )
    assert verify(pruned, key).verdict == "not_found"
    assert realigned.verdict == "found"
    if fraction == 0.25:
        assert realigned.ber == 0.0


runner = CliRunner()


@pytest.fixture
def fixed_nonce(monkeypatch: pytest.MonkeyPatch) -> None:
    """`nnmark train` draws its key's nonce from os.urandom (`OwnerKey.new`), so every run was
    a new key and a miss could not be rerun (session 40). The CLI runs in-process here: the
    nonce source of `nnmark.keys` (its only use of `os`) reads a seeded stream instead."""
    import random
    import types

    import nnmark.keys

    stream = random.Random(40)
    monkeypatch.setattr(nnmark.keys, "os", types.SimpleNamespace(urandom=stream.randbytes))


def test_attack_cli(tmp_path: Path, plain_cnn, digits: DataBundle, fixed_nonce) -> None:  # type: ignore[no-untyped-def]
    """Attacks through the CLI; a 64-bit Uchida mark trained by `nnmark train` with the key
    committed to its plain twin (`--reference-unmarked`: the same init and recipe without the
    mark), which realigns morphed and channel-pruned copies."""
    src, wide, ref = tmp_path / "m.safetensors", tmp_path / "w.safetensors", tmp_path / "k.nnkey"
    twin = tmp_path / "twin.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), twin)
    train_args = ["train", "--scheme", "uchida", "--bits", "64", "--seed", "0", "--epochs", "20"]
    r = runner.invoke(
        app,
        [*train_args, "--reference-unmarked", str(twin), "--out", str(src), "--key-out", str(ref)],
    )
    assert r.exit_code == 0, r.stderr
    assert OwnerKey.load(ref).reference == model_sha256(plain_cnn)
    r = runner.invoke(app, ["attack", "--list"], env={"COLUMNS": "250"})
    assert r.exit_code == 0 and all(n in r.stdout for n in list_attacks())
    assert "structured=False" in r.stdout and "max_factor=4.0" in r.stdout
    pruned = tmp_path / "p.safetensors"
    chain = "prune:fraction=0.3,quantize:bits=8"
    r = runner.invoke(
        app, ["attack", chain, str(src), "--out", str(pruned), "--data", "digits", "--json"]
    )
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["after"]["accuracy"] > 0.9 and res["before"]["accuracy"] > 0.9
    assert runner.invoke(app, ["verify", str(pruned), "--key", str(ref)]).exit_code == 0
    for spec in ("morph", "prune:structured=true,fraction=0.25"):
        args = ["attack", spec, str(src), "--out", str(wide), "--seed", "3", "--force"]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, r.stderr
        # the attack and its options as the user wrote them, not a dataclass repr
        assert r.stdout.startswith(spec.split(":")[0]) and "Config(" not in r.stdout
        assert ("fraction=0.25" in r.stdout) == ("fraction" in spec)
        assert runner.invoke(app, ["verify", str(wide), "--key", str(ref)]).exit_code == 1
        # uchida refuses realignment to its marked model (tests/defenses/test_realign_null.py)
        args = ["verify", str(wide), "--key", str(ref), "--reference", str(src), "--json"]
        r = runner.invoke(app, args)
        assert r.exit_code == 1 and "reference refused" in json.loads(r.stdout)["reason"]
        args = ["verify", str(wide), "--key", str(ref), "--reference-unmarked", str(twin)]
        r = runner.invoke(app, [*args, "--json"])
        assert r.exit_code == 0, r.stderr
        print(spec, "realigned to the unmarked twin: BER", json.loads(r.stdout)["ber"])
        # The key's nonce is fixed (`fixed_nonce`: a miss reruns). Paired to the twin by
        # activations alone, up to 7 of 64 bits were lost and CI once missed the pruned copy
        # (p 7.6e-11 > the cost bound); paired by weights (realign `_plans_by_weights`) morph
        # and structured pruning read at BER 0 over 12 fresh keys, worst case
        # (`python benchmarks/realign_keys.py --keys 12`, benchmarks/results/realign_keys.md)
        assert json.loads(r.stdout)["ber"] == 0.0
    for args, msg in [
        (["attack", "nope", str(src), "--out", str(wide), "--force"], "unknown attack 'nope'"),
        (
            ["attack", "prune", str(src), "--out", str(wide), "--force", "--set", "fraction=2"],
            "fraction",
        ),
        (
            ["attack", "prune", str(src), "--out", str(wide), "--force", "--set", "nope=1"],
            "unknown option",
        ),
        (
            ["attack", "prune", str(tmp_path / "no.safetensors"), "--out", str(wide), "--force"],
            "not found",
        ),
        (["attack", "finetune", str(src), "--out", str(wide), "--force"], "needs data"),
        # review, session 36: attacks that checked >= 1 alone trained until killed
        (
            ["attack", "distill", str(src), "--out", str(wide), "--force", "--data", "digits"]
            + ["--set", f"epochs={10**15}"],
            "epochs must be at most 10,000 for the attack",
        ),
    ]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and msg in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_every_attacks_epochs_steps_and_rounds_are_bounded() -> None:
    """Whichever attack, an option named epochs, steps or rounds (or ending in one) above the
    common bound (or the attack's own, smaller one) is refused when the attack is made, before
    any training (attacks.base)."""
    from nnmark.attacks import ATTACKS
    from nnmark.attacks.base import TRAINING_BOUNDS

    checked = 0
    for name in ATTACKS.names():
        cls = ATTACKS.get(name)
        for f in dataclasses.fields(cls.Config):
            suffix = f.name.rsplit("_", 1)[-1]
            if suffix in TRAINING_BOUNDS:
                with pytest.raises(NNMarkError, match=f"{f.name} must be"):  # or its own bound
                    cls(**{f.name: TRAINING_BOUNDS[suffix] + 1})
                checked += 1
    assert checked >= 20  # every training attack has one (22 fields of 24 attacks today)
    # knockoff's adaptive sampling queries and fits once per stolen input: at most the thief's
    from nnmark.attacks.art_extraction import thief_queries
    from nnmark.data.base import DataBundle

    splits = {"thief": torch.arange(7)}
    data = DataBundle("d", "classification", torch.zeros(7, 1), torch.zeros(7), splits, 2)
    assert [thief_queries(q, data) for q in (0, 3, 10**12)] == [7, 3, 7]


def test_detection_finds_uchidas_host_and_fires_on_no_unmarked_model(  # type: ignore[no-untyped-def]
    uchida_cnn, plain_cnn, never_marked, unmarked_cnns, digits: DataBundle
) -> None:
    """`detect` (issue 18): Uchida's host layer stands apart from the model's other layers
    (its filter-averaged weights, which the key projects, are far larger than independent
    filters give), and randomising that mean then re-training the layer alone removes the mark.
    No layer of an unmarked model does: judged on models the threshold was not set on (it was
    set looking at `unmarked_cnns`, seeds 100-109: review, session 40): the plain twin (seed 0),
    the SGD CNN and the two MLPs of `never_marked` (benchmarks/mark_detection.py measures false
    alarms on more)."""
    from nnmark.attacks.base import findings
    from nnmark.attacks.detect import detect_layers

    model, key = uchida_cnn
    assert set(detect_layers(model)) == {key.marks[0].layer}
    seen = {id(m) for m in unmarked_cnns}
    unseen = [plain_cnn, *(m for ms in never_marked.values() for m in ms if id(m) not in seen)]
    assert len(unseen) == 4 and not any(id(m) in seen for m in unseen)
    assert [detect_layers(m) for m in unseen] == [{}] * len(unseen)
    hit = attack(model, "detect", digits, seed=1)
    assert findings(hit)["detected_layers"] == [key.marks[0].layer]
    assert verify(hit, key).verdict == "not_found"
    assert accuracy(hit, digits) > accuracy(model, digits) - 0.05  # within the 5-point budget
