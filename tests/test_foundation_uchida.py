"""Uchida et al. 2017 end to end on digits: the acceptance figures of the foundation issue."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from nnmark import (
    OwnerKey,
    TrainConfig,
    attack,
    embed,
    evaluate,
    new_model,
    train,
    verify,
)
from nnmark.attacks.detect import detect_layers
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.layers import get_layer, host_vector, unit_kernel_vector
from nnmark.schemes import scheme_for
from nnmark.schemes.uchida import Uchida, UchidaConfig, embed_without_training

EPOCHS = 20
#: One seed here; the mean over 3 seeds (the foundation issue's figure) is measured by
#: benchmarks/uchida_key_types.py (benchmarks/results/uchida_key_types.md).
SEEDS = (0,)


def acc(model: torch.nn.Module, data: DataBundle) -> float:
    return evaluate(model, data.loader("test", 512), data.task)["accuracy"]


@pytest.fixture(scope="module")
def per_seed(digits: DataBundle, plain_cnn: torch.nn.Module, uchida_cnn) -> dict:  # type: ignore[no-untyped-def]
    """Per seed: the plain model and a marked model per key type, from the same init."""
    out: dict = {}
    for seed in SEEDS:
        cfg = TrainConfig(epochs=EPOCHS, seed=seed)
        init = new_model("cnn", digits, seed=seed)
        # seed 0's plain and random-key models are the session's (the same init, recipe,
        # batches and bits; the default key type is random)
        out[seed] = {"plain": plain_cnn if seed == 0 else train(init, digits, cfg)}
        if seed == 0:
            out[seed]["random"] = uchida_cnn
        for key_type in ("direct", "diff", "random"):
            if key_type in out[seed]:
                continue
            key = OwnerKey.new(f"owner-{seed}", nonce=f"{seed:032x}")
            out[seed][key_type] = embed(
                init,
                digits,
                "uchida",
                options={"key_type": key_type},
                bits=64,
                key=key,
                config=cfg,
            )
    return out


@pytest.mark.parametrize("key_type", ["direct", "diff", "random"])
def test_mark_found_with_fidelity(per_seed: dict, digits: DataBundle, key_type: str) -> None:
    plain_acc, marked_acc = [], []
    for seed in SEEDS:
        model, key = per_seed[seed][key_type]
        v = verify(model, key)
        assert v.verdict == "found" and v.ber == 0.0 and v.p_value < 1e-6 and v.n == 64
        plain_acc.append(acc(per_seed[seed]["plain"], digits))
        marked_acc.append(acc(model, digits))
    print(f"{key_type}: marked {marked_acc} plain {plain_acc}")
    # Issue 3's requirement (the bound is the spec, not tuned): the mean marked accuracy within
    # 1 point of plain; measured per seed -0.84 to +0.56 points over seeds 0..2 and the three
    # key types, plain 0.9805 on average (`python benchmarks/uchida_key_types.py`,
    # benchmarks/results/uchida_key_types.md). 0.97: that plain mean less the point, rounded
    # down, so a recipe that lost the task as well as the mark's cost fails.
    assert np.mean(marked_acc) >= 0.97, marked_acc
    assert abs(np.mean(marked_acc) - np.mean(plain_acc)) <= 0.01, (marked_acc, plain_acc)


def test_unit_kernel_vector_ignores_positive_channel_rescaling() -> None:
    """What `vector=unit_kernels` reads does not change when a conv layer's output units or
    input channels are rescaled by positive factors (the `scale` attack's transform)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 8, 3, 3, generator=g)
    out_f = torch.rand(16, generator=g) * 15 + 0.1
    in_f = torch.rand(8, generator=g) * 15 + 0.1
    scaled = w * out_f.view(-1, 1, 1, 1) * in_f.view(1, -1, 1, 1)
    assert torch.allclose(unit_kernel_vector(scaled), unit_kernel_vector(w), atol=1e-6)
    assert not torch.allclose(host_vector(scaled), host_vector(w), atol=1e-3)
    lin = torch.randn(10, 32, generator=g)  # a linear layer: its rows (output units) only
    assert torch.allclose(
        unit_kernel_vector(lin * out_f[:10].view(-1, 1)), unit_kernel_vector(lin), atol=1e-6
    )


@pytest.mark.parametrize("vector", ["mean", "unit_kernels"])
def test_no_reader_claims_unmarked_models_over_many_keys(
    vector: str, digits: DataBundle, unmarked_cnns: list[torch.nn.Module]
) -> None:
    """Either host vector, 10 keys per architecture never used to mark anything: no claim on
    the ten unmarked trained CNNs nor on freshly initialised resnet20s and MLPs, and bits that
    read as coins (mean BER near 1/2), since the key's mask is independent of any such model.
    The scores' statistic z is standard normal there (Kolmogorov-Smirnov against N(0, 1)): its
    p-value is exact, whatever the model. The keys derive their secrets at a cheap KDF cost
    (`nnmark.forge.SPLIT_KDF`, 128 KiB): the null is about the scores of a key's secrets, not
    what deriving them costs (60 derivations at the default 64 MiB were most of this test's
    time: session 40)."""
    from nnmark.forge import SPLIT_KDF

    models = {
        "cnn": unmarked_cnns,
        "resnet20": [new_model("resnet20", digits, seed=s) for s in (1, 2)],
        "mlp": [new_model("mlp", digits, seed=s) for s in (1, 2)],
    }
    bers, zs = [], []
    for arch, group in models.items():
        for i in range(10):
            owner = OwnerKey.new(f"null {arch} {i}", nonce=f"{i:032x}", kdf=SPLIT_KDF)
            config = UchidaConfig(vector=vector, loss="hinge")  # how it was embedded: irrelevant
            key = owner.with_mark(Uchida.plan(group[0], owner, config, bits=64))
            for model in group:
                v = verify(model, key)
                assert v.verdict == "not_found" and v.p_value >= 1e-6, (arch, i, v.ber)
                bers.append(v.ber)
                zs.append(v.details["scores"]["z"])
    assert 0.45 < float(np.mean(bers)) < 0.55, np.mean(bers)
    assert kstest(zs, "norm").pvalue > 1e-3, (np.mean(zs), np.std(zs))


def test_scores_do_not_move_with_the_hosts_scale(
    digits: DataBundle, unmarked_cnns: list[torch.nn.Module]
) -> None:
    """A thief may scale the host layer (a ReLU network absorbs it in the next layer): the
    scores are x_j.w / |w|, so z is the same at any scale, tiny (where |w| underflowed in
    float32 and inflated z: 12 of 300 keys past the claim bound on an unmarked model) or huge."""
    model = unmarked_cnns[0]
    owner = OwnerKey.new("scale", nonce="5d" * 16)
    key = owner.with_mark(Uchida.plan(model, owner, UchidaConfig(), bits=64))
    z = verify(model, key).details["scores"]["z"]
    for factor in (3e-21, 1e-30, 1e30):
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            get_layer(scaled, key.marks[0].layer or "").weight.mul_(factor)
        v = verify(scaled, key)
        assert v.details["scores"]["z"] == pytest.approx(z, rel=1e-5), factor
        assert v.verdict == "not_found"


def test_keys_written_before_the_new_options_stay_canonical(digits: DataBundle) -> None:
    """A default mark's key holds exactly the options it held before `loss`, `margin` and
    `vector` existed (every secret is derived from them), and spelling a default out is refused
    like any non-canonical config."""
    owner = OwnerKey.new("canonical", nonce="ab" * 16)
    model = new_model("cnn", digits, seed=0)
    mark = Uchida.plan(model, owner, UchidaConfig(), bits=16)
    assert mark.config == {"key_type": "random", "lam": 0.05, "layer": None}
    hinge = Uchida.plan(model, owner, UchidaConfig(loss="hinge", vector="unit_kernels"), bits=16)
    assert hinge.config == {
        "key_type": "random",
        "lam": 0.002,
        "layer": None,
        "loss": "hinge",
        "vector": "unit_kernels",
    }
    spelled = owner.new_mark("uchida", {**mark.config, "vector": "mean"}, mark.layer, mark.bits,
                             data=mark.data)  # fmt: skip
    with pytest.raises(NNMarkError, match="not complete and canonical"):
        Uchida(spelled)


def test_hinge_loss_leaves_the_host_histogram_as_the_plain_models(
    per_seed: dict, digits: DataBundle
) -> None:
    """`loss=hinge` moves the host weights only as far as the bits need: the mark is found
    (BER 0) and the host layer's weights keep their plain twin's spread (same initial weights
    and batches), where the paper's cross-entropy inflates them; the detector that finds the
    bce mark's layer does not flag the hinge's, and read from unit-length kernels
    (`vector=unit_kernels`) the small-margin bits survive any rescaling of channels. Over 3
    seeds, with what each loss buys and costs: benchmarks/results/uchida_loss_tradeoff.md."""
    plain = per_seed[0]["plain"]
    bce, _ = per_seed[0]["random"]
    key = OwnerKey.new("owner-0", nonce=f"{0:032x}")
    hinge, key = embed(
        new_model("cnn", digits, seed=0),
        digits,
        "uchida",
        options={"loss": "hinge", "vector": "unit_kernels"},
        bits=64,
        key=key,
        config=TrainConfig(epochs=EPOCHS, seed=0),
    )
    v = verify(hinge, key)
    assert v.verdict == "found" and v.ber == 0.0
    layer = key.marks[0].layer or ""

    def std(m: torch.nn.Module) -> float:
        return float(get_layer(m, layer).weight.detach().std())

    print(f"host std / plain: hinge {std(hinge) / std(plain):.3f}, bce {std(bce) / std(plain):.3f}")
    # host std / plain over seeds 0..2: hinge (unit kernels) 0.944 to 0.974, bce 1.634 to 1.705
    # (`python benchmarks/uchida_loss_tradeoff.py --jobs 2`, its json's runs): the bounds leave
    # 0.044 of margin to the hinge's worst and 0.33 to the bce's. The detector flags the bce host at seed 0 (the
    # session's model) but at 2 of those 3 seeds; it flags the hinge's at none.
    assert abs(std(hinge) / std(plain) - 1) < 0.1
    assert std(bce) / std(plain) > 1.3
    assert layer in detect_layers(bce) and layer not in detect_layers(hinge)
    rescaled = verify(attack(hinge, "scale:max_factor=16", seed=7), key)
    assert rescaled.verdict == "found" and rescaled.ber == 0.0


def test_unmarked_models_are_not_claimed(
    per_seed: dict, unmarked_cnns: list[torch.nn.Module]
) -> None:
    """The plain models and 10 plain models with other seeds: not_found with the marks' keys."""
    plains = [per_seed[s]["plain"] for s in SEEDS] + unmarked_cnns
    for key_type in ("direct", "diff", "random"):
        _, key = per_seed[0][key_type]
        for model in plains:
            v = verify(model, key)
            assert v.verdict == "not_found" and v.p_value >= 1e-6 and 0.2 < v.ber < 0.8


def test_other_key_is_not_claimed(per_seed: dict) -> None:
    model, key = per_seed[0]["random"]
    other = OwnerKey.new(key.owner)  # fresh nonce: another projection and payload
    other = other.with_mark(
        other.new_mark(
            "uchida",
            key.marks[0].config,
            key.marks[0].layer,
            _bits(other, 64),
            data=key.marks[0].data,
        )
    )
    assert verify(model, other).verdict == "not_found"


def _bits(key: OwnerKey, n: int) -> tuple[int, ...]:
    from nnmark.keys import payload_bits

    return payload_bits(key.owner, key.nonce, n)


def test_same_key_and_seed_give_the_same_mark_bit_for_bit(digits: DataBundle) -> None:
    key = OwnerKey.new("det", nonce="11" * 16)
    cfg = TrainConfig(epochs=3, seed=5)
    a, ka = embed(new_model("cnn", digits, seed=5), digits, "uchida", key=key, bits=32, config=cfg)
    b, kb = embed(new_model("cnn", digits, seed=5), digits, "uchida", key=key, bits=32, config=cfg)
    assert ka.commitment == kb.commitment
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_and_attacks_leave_the_callers_random_stream_alone(digits: DataBundle) -> None:
    """A seeded run is reproducible from its seed without resetting the caller's global RNG: a
    script that draws after `train` or `attack` gets what it would have got without them."""
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    model = train(new_model("cnn", digits, seed=1), digits, TrainConfig(epochs=1, seed=7))
    attacked = attack(model, "finetune:epochs=1", digits, seed=3)
    assert torch.equal(torch.rand(4), expected)
    torch.manual_seed(99)  # and the run itself does not depend on the caller's stream
    again = attack(model, "finetune:epochs=1", digits, seed=3)
    sa, sb = attacked.state_dict(), again.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finetune_to_embed_and_table7(per_seed: dict, digits: DataBundle, uchida_finetuned) -> None:  # type: ignore[no-untyped-def]
    """Fine-tune-to-embed keeps accuracy; Eq. (6) (editing the weights without training) does
    not reach both BER 0 and that accuracy (Uchida's Table 7, at the paper's 256 bits)."""
    plain = per_seed[0]["plain"]  # the session's plain_cnn
    base = acc(plain, digits)
    marked, key = uchida_finetuned  # `nnmark embed`'s recipe, into plain_cnn (tests/conftest.py)
    v = verify(marked, key)
    assert v.ber == 0.0 and v.verdict == "found"
    # issue 3's bound (the requirement, not tuned): within 1 point of the plain model
    assert abs(acc(marked, digits) - base) <= 0.01
    assert verify(plain, key).verdict == "not_found"
    # embed trains a copy: the input model is not modified (one epoch shows it)
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    other = OwnerKey.new("input", nonce="79" * 16)
    embed(plain, digits, "uchida", key=other, config=TrainConfig(epochs=1, seed=0))
    assert all(torch.equal(before[k], t) for k, t in plain.state_dict().items())

    key = OwnerKey.new("table 7", nonce="78" * 16)
    tuned, key = embed(
        plain, digits, "uchida", key=key, bits=256, config=TrainConfig(epochs=20, seed=9)
    )
    tuned_ber, tuned_acc = verify(tuned, key).ber, acc(tuned, digits)
    scheme = scheme_for(key.marks[0])
    rows = []
    for lam in (0.1, 1.0, 10.0, 100.0):
        edited = embed_without_training(copy.deepcopy(plain), scheme, lam)
        rows.append((lam, verify(edited, key).ber, acc(edited, digits)))
    print(
        f"Table 7 on digits, 256 bits: fine-tune-to-embed BER {tuned_ber} acc {tuned_acc:.4f};"
        f" Eq. (6) (lam, BER, acc): {rows}"
    )
    assert tuned_ber == 0.0 and abs(tuned_acc - base) <= 0.01
    # Every lam leaves bit errors or costs more than a point of accuracy against fine-tune-to-
    # embed: never both (how lam 1 misses, by a few bits or by accuracy, depends on the key's
    # draw; `pytest -s` prints the rows).
    assert all(b > 0.0 or a < tuned_acc - 0.01 for _, b, a in rows), rows
