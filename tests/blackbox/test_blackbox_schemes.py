"""Black-box (trigger-set) schemes: found / not found, fidelity, the query budget, calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nnmark import SCHEMES, OwnerKey, TrainConfig, embed, evaluate, new_model, verify
from nnmark.api import bound_scheme
from nnmark.calibrate import calibrate
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.schemes.newlabel import NewLabel
from nnmark.sequential import LookPlan
from nnmark.suspect import ModuleSuspect

FASHION = Path(__file__).resolve().parents[3] / "shared" / "data" / "fashion-mnist"
BLACKBOX = [n for n in SCHEMES.names() if SCHEMES.get(n).kind == "blackbox"]
OPTIONS = {"unrelated": {"source": f"fashion-mnist:{FASHION}"}}


def acc(model: torch.nn.Module, data: DataBundle) -> float:
    return evaluate(model, data.loader("test", 512), data.task)["accuracy"]


@pytest.fixture(scope="module")
def marked(digits: DataBundle) -> dict[str, tuple[torch.nn.Module, OwnerKey]]:
    """Every black-box scheme embedded in the digits CNN, same init and seed as `plain_cnn`."""
    out = {}
    for name in BLACKBOX:
        key = OwnerKey.new(f"owner {name}", nonce=f"{len(name):032x}")
        out[name] = embed(
            new_model("cnn", digits, seed=0),
            digits,
            name,
            options=OPTIONS.get(name),
            key=key,
            config=TrainConfig(epochs=20, seed=0),
        )
    return out


def test_the_registry_has_the_black_box_schemes() -> None:
    assert {"content", "noise", "unrelated", "adi", "newlabel"} <= set(BLACKBOX)


@pytest.mark.parametrize("name", BLACKBOX)
def test_found_on_marked_and_not_on_unmarked(
    name: str,
    marked,
    plain_cnn,
    unmarked_cnns,
    digits: DataBundle,  # type: ignore[no-untyped-def]
) -> None:
    model, key = marked[name]
    v = verify(model, key)
    assert v.verdict == "found" and v.p_value < 1e-6 and v.queries is not None
    assert v.queries <= 30  # the required figure: p < 1e-6 within 30 queries
    for other in [plain_cnn, *unmarked_cnns]:
        u = verify(other, key)
        assert u.verdict == "not_found" and u.p_value >= 1e-6
    # wrong key: the same scheme, another nonce -> other triggers
    wrong = OwnerKey.new("someone else", nonce="ee" * 16)
    wrong_model, wrong = embed(
        new_model("cnn", digits, seed=0),
        digits,
        name,
        options=OPTIONS.get(name),
        key=wrong,
        config=TrainConfig(epochs=1, seed=0),
    )
    assert verify(model, wrong).verdict == "not_found"
    print(f"{name}: marked accuracy {acc(model, digits):.4f}, plain {acc(plain_cnn, digits):.4f}")
    assert acc(model, digits) >= acc(plain_cnn, digits) - 0.01


def test_newlabel_grows_the_head_and_generalises(marked, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    model, key = marked["newlabel"]
    assert model.fc2.out_features == 11 and model.nnmark_kwargs["num_classes"] == 11
    scheme = NewLabel(key.marks[0])
    with torch.no_grad():
        fresh = model(scheme.fresh_samples(digits, 100)).argmax(1)
    print(f"newlabel: key accuracy on 100 fresh key samples {(fresh == 10).float().mean():.2f}")
    assert (fresh == 10).float().mean() >= 0.5


def test_query_budget_and_undecided(marked) -> None:  # type: ignore[no-untyped-def]
    model, key = marked["content"]
    suspect = ModuleSuspect(model)
    suspect.max_queries = 5
    v = verify(suspect, key)
    assert v.verdict == "not_found" and v.queries == 5 and v.reason and "undecided" in v.reason


def test_sequential_test_keeps_its_false_positive_rate() -> None:
    """Unmarked answers at the null rate p0: claims at alpha = 0.05 stay at or below 0.05."""
    rng = np.random.default_rng(0)
    p0, alpha, n, trials = 0.1, 0.05, 50, 4000
    plan = LookPlan.make(n, 10, None)
    claims = 0
    for _ in range(trials):
        hits = rng.random(n) < p0
        k = q = 0
        while q < n:
            k += int(hits[q : q + 10].sum())
            q += 10
            d = plan.decide(k, q, p0, alpha, n)
            if d != "continue":
                claims += d == "found"
                break
    assert claims / trials <= alpha


def test_calibration_is_stored_and_used(marked, unmarked_cnns, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, key = marked["noise"]
    cal = calibrate(key, unmarked_cnns)
    entry = cal.derived["calibration"]["0"]
    assert entry["models"] == 10 and len(entry["rates"]) == 10 and 0 <= entry["ucb"] <= 1
    assert all(p >= 1e-6 for p in entry["p_values"])
    path = tmp_path / "k.nnkey"
    cal.save(path)
    loaded = OwnerKey.load(path)
    scheme = bound_scheme(loaded, 0)
    assert scheme.calibration == entry
    forced = loaded.with_derived("calibration", {"0": {**entry, "ucb": 0.3, "models": 10}})
    v = verify(model, forced)
    assert v.details["p0"] == 0.3 and "calibrated" in v.null


def test_calibrate_cli(marked, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, key = marked["adi"]
    path = tmp_path / "adi.nnkey"
    key.save(path)
    r = CliRunner().invoke(
        app, ["calibrate", str(path), "--data", "digits", "--models", "2", "--epochs", "1"]
    )
    assert r.exit_code == 0, r.stderr
    assert OwnerKey.load(path).derived["calibration"]["0"]["models"] == 2
    r = CliRunner().invoke(app, ["calibrate", str(path), "--models", "0"])
    assert r.exit_code == 2 and "--models must be >= 1" in r.stderr
