"""Contract tests of tartaglione, watermas and stdm: found / not_found / wrong key / determinism,
truly frozen key values, WaterMAS fidelity and the landscape property on the fixture models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from nnmark import OwnerKey, TrainConfig, embed, evaluate, new_model, train, verify
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.schemes import SCHEMES, scheme_for
from nnmark.schemes._positions import POSITION_NULL, perturbation_losses

# One intra-op thread: on the shared 2-core machine two threads per process oversubscribe the
# cores and a digits epoch takes 8x longer.
torch.set_num_threads(1)

#: scheme -> (options, training) of the marked fixture models; weight decay on, so "frozen"
#: is tested against the optimiser's decay and Adam's momentum.
RECIPES: dict[str, tuple[dict, TrainConfig]] = {
    "tartaglione": (
        {"R": 4, "one_replica": True},
        TrainConfig(epochs=4, seed=0, weight_decay=1e-3),
    ),
    "watermas": ({}, TrainConfig(epochs=6, seed=0, weight_decay=1e-3)),
    "stdm": ({}, TrainConfig(epochs=4, seed=0, weight_decay=1e-3)),
}
BITS = {"stdm": 256}
ACCURACY_EPOCHS = 6  # watermas vs plain, same init, seed and epochs


def owner_key(nonce: str) -> OwnerKey:
    return OwnerKey.new("landscape owner", nonce=nonce * 16)


@pytest.fixture(scope="session")
def landscape_marks(digits: DataBundle) -> dict[str, tuple[torch.nn.Module, OwnerKey]]:
    out = {}
    for scheme, (options, config) in RECIPES.items():
        out[scheme] = embed(
            new_model("cnn", digits, seed=0),
            digits,
            scheme,
            options=options,
            key=owner_key("a5"),
            bits=BITS.get(scheme),
            config=config,
        )
    return out


@pytest.fixture(scope="session")
def plain_short(digits: DataBundle) -> torch.nn.Module:
    """Plain digits CNN with the watermas fixture's recipe (no mark, no weight decay change)."""
    return train(
        new_model("cnn", digits, seed=0),
        digits,
        TrainConfig(epochs=ACCURACY_EPOCHS, seed=0, weight_decay=1e-3),
    )


SCHEMES_HERE = ["tartaglione", "watermas", "stdm"]
POSITION_SCHEMES = ["tartaglione", "watermas"]


@pytest.mark.parametrize("name", SCHEMES_HERE)
def test_registered_with_paper_and_docstring(name: str) -> None:
    import sys

    cls = SCHEMES.get(name)
    doc = sys.modules[cls.__module__].__doc__ or ""
    assert cls.kind == "whitebox" and cls.paper and "Threat model" in doc and "Example" in doc


@pytest.mark.parametrize("name", SCHEMES_HERE)
def test_embed_found_plain_and_other_key_not_found(name: str, landscape_marks, plain_cnn) -> None:  # type: ignore[no-untyped-def]
    model, key = landscape_marks[name]
    v = verify(model, key)
    print(f"{name}: {v.statistic_name}={v.statistic:.4f} p={v.p_value:.3g} n={v.n}")
    assert v.verdict == "found" and v.ber == 0.0 and v.p_value < 1e-15
    plain = verify(plain_cnn, key)
    assert plain.verdict == "not_found" and plain.ber is not None and 0.3 < plain.ber < 0.7
    cls = SCHEMES.get(name)
    other = owner_key("b6")  # same owner, new nonce
    mark = cls.plan(model, other, scheme_for(key.marks[0]).config, bits=BITS.get(name))
    wrong = verify(model, other.with_mark(mark))
    assert wrong.verdict == "not_found" and wrong.p_value > 1e-3


@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_key_values_frozen_bit_identical_under_weight_decay(name: str, landscape_marks) -> None:  # type: ignore[no-untyped-def]
    model, key = landscape_marks[name]
    scheme = scheme_for(key.marks[0])
    params = dict(model.named_parameters())
    for tensor, idx in scheme.index.items():
        assert torch.equal(params[tensor].detach().view(-1)[idx], scheme.values[tensor])
    v = verify(model, key)
    assert v.details["exact_values"] == v.n and v.null == POSITION_NULL
    # every layer carries marked entries, the output layer included (Tartaglione et al.)
    assert len(scheme.index) == 5 and "fc2.weight" in scheme.index


@pytest.mark.parametrize("name", SCHEMES_HERE)
def test_same_key_and_seed_give_bit_identical_weights(name: str, digits: DataBundle) -> None:
    options = {"tartaglione": {"R": 2}, "watermas": {}, "stdm": {}}[name]
    cfg = TrainConfig(
        epochs=1, seed=3, fraction=0.3, optimizer="sgd", momentum=0.9, weight_decay=1e-2
    )
    runs = [
        embed(
            new_model("cnn", digits, seed=0),
            digits,
            name,
            options=options,
            key=owner_key("c7"),
            bits=BITS.get(name),
            config=cfg,
        )[0]
        for _ in range(2)
    ]
    a, b = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if name in POSITION_SCHEMES:  # frozen under SGD momentum + strong weight decay too
        _, key = embed(
            new_model("cnn", digits, seed=0),
            digits,
            name,
            options=options,
            key=owner_key("c7"),
            config=TrainConfig(epochs=0),
        )
        scheme = scheme_for(key.marks[0])
        params = dict(runs[0].named_parameters())
        for tensor, idx in scheme.index.items():
            assert torch.equal(params[tensor].detach().view(-1)[idx], scheme.values[tensor])


def test_watermas_accuracy_within_one_point_of_plain(landscape_marks, plain_short, digits) -> None:  # type: ignore[no-untyped-def]
    model, _ = landscape_marks["watermas"]
    marked = evaluate(model, digits.loader("test"), digits.task)["accuracy"]
    plain = evaluate(plain_short, digits.loader("test"), digits.task)["accuracy"]
    print(f"watermas accuracy {marked:.4f}, plain {plain:.4f} (6 epochs, same init and seed)")
    assert marked >= plain - 0.01


@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_marked_entries_are_in_a_sharper_valley_than_unmarked(
    name: str, landscape_marks, digits
) -> None:  # type: ignore[no-untyped-def]
    """The weak, fast form of the landscape claim (the 2x figure over 3 seeds and R = 0 vs 4 is
    in benchmarks/landscape_robustness.py): Gaussian noise on the marked entries raises the test
    loss more than noise of the same norm on as many unmarked entries of each tensor."""
    model, key = landscape_marks[name]
    scheme = scheme_for(key.marks[0])
    x, y = digits.tensors("test")

    def loss(m: torch.nn.Module) -> float:
        return float(F.cross_entropy(m(x), y))

    probe = copy.deepcopy(model)
    sigma = getattr(scheme.config, "sigma", getattr(scheme.config, "rho", 1.0))
    r = perturbation_losses(
        probe, scheme.positions, loss, sigma, 20, torch.Generator().manual_seed(0)
    )
    print(
        f"{name}: marked +{r['marked_increase']:.4f}, unmarked +{r['unmarked_increase']:.4f}, ratio {r['ratio']:.2f}"
    )
    assert r["ratio"] > 1.0
    assert all(
        torch.equal(a, b) for a, b in zip(probe.state_dict().values(), model.state_dict().values())
    )


def test_cli_rejects_bad_options_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "m.safetensors"
    for scheme, opt, word in [
        ("tartaglione", "R=-1", "R must be >= 0"),
        ("watermas", "fraction=0.9", "fraction must be in (0, 0.5]"),
        ("stdm", "delta=0", "delta must be > 0"),
    ]:
        r = runner.invoke(
            app,
            [
                "train",
                "--data",
                "digits",
                "--scheme",
                scheme,
                "--set",
                opt,
                "--epochs",
                "0",
                "--out",
                str(out),
                "--key-out",
                str(tmp_path / "k.nnkey"),
            ],
        )
        assert r.exit_code == 2, r.output
        assert word in r.output


def test_stdm_capacity_error_names_the_limit(digits: DataBundle) -> None:
    from nnmark.errors import NNMarkError

    with pytest.raises(NNMarkError, match="holds at most 36864 bits"):
        embed(
            new_model("cnn", digits, seed=0),
            digits,
            "stdm",
            bits=40000,
            key=owner_key("d8"),
            config=TrainConfig(epochs=0),
        )
