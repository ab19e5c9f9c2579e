"""Resuming `nnmark bench` into a results folder: a grid that changes what a finished cell
computes is refused (reviewer, session 32: a rerun with another `lam` skipped every cell and
overwrote spec.json), a grid that adds cells resumes; option typos are refused before training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nnmark.bench import PRESETS, BenchSpec, read_rows, run_bench
from nnmark.bench.jobs import changed_cells, plan
from nnmark.cli import app
from nnmark.errors import NNMarkError

runner = CliRunner()

# 2 models (plain, uchida) x (no attack, noise at 0.1, noise at -1: that cell fails) = 6 cells
GRID: dict[str, Any] = {
    "data": "digits",
    "arch": "mlp",
    "epochs": 1,
    "schemes": ["uchida"],
    "attacks": ["noise"],
    "ladders": {"noise": {"sigma": [0.1, -1.0]}},
    "chains": [],
    "composites": [],
    "calibration_models": 0,
    "scheme_options": {"uchida": {"lam": 0.1}},
}


def _bench(tmp_path: Path, grid: dict[str, Any], *extra: str) -> tuple[int, str]:
    """(exit code, output with the console's line wrapping undone)."""
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(grid))
    args = ["bench", "--config", str(config), "--out", str(tmp_path / "res"), "--jobs", "1"]
    r = runner.invoke(app, [*args, *extra])
    return r.exit_code, " ".join(r.output.split())


def test_a_resume_under_other_scheme_options_is_refused_and_an_extension_resumes(
    tmp_path: Path,
) -> None:
    rc, text = _bench(tmp_path, GRID)
    assert rc == 0 and "6 cells: 6 run, 0 skipped (done before), 2 failed;" in text, text
    # the failures of an earlier run are named, with the flag that reruns them
    rc, text = _bench(tmp_path, GRID)
    assert rc == 0, text
    assert (
        "6 cells: 0 run, 6 skipped (done before), 2 failed "
        "(2 in an earlier run: --retry-failed runs them again);" in text
    )
    res = tmp_path / "res"
    spec, rows = (res / "spec.json").read_bytes(), (res / "results.jsonl").read_bytes()
    meta = (res / "meta.json").read_bytes()
    other = {**GRID, "scheme_options": {"uchida": {"lam": 0.9}}}
    rc, text = _bench(tmp_path, other)
    assert rc == 2, text
    assert 'scheme_options of uchida: {"lam": 0.1} then, {"lam": 0.9} now' in text
    assert "(3 finished cell(s) would be mixed); use another --out (or the original" in text
    assert (res / "spec.json").read_bytes() == spec  # the record of the rows stands
    assert (res / "results.jsonl").read_bytes() == rows
    assert (res / "meta.json").read_bytes() == meta
    # more attacks on the same models: new cells only, a legitimate resume
    more = {**GRID, "attacks": ["noise", "permute"]}
    rc, text = _bench(tmp_path, more, "--retry-failed")
    assert rc == 0, text
    assert "8 cells: 4 run, 4 skipped (done before), 2 failed;" in text
    assert json.loads((res / "spec.json").read_text())["attacks"] == ["noise", "permute"]
    assert len(read_rows(res)) == 8
    # each run's grid is kept with the run, and the report says the rows span several
    runs = json.loads((res / "meta.json").read_text())["runs"]
    assert [r["spec"]["attacks"] for r in runs] == [["noise"], ["noise"], ["noise", "permute"]]
    r = runner.invoke(
        app, ["report", str(res), "--out", str(tmp_path / "r.html"), "--md", str(tmp_path / "r.md")]
    )
    assert r.exit_code == 0, r.output
    assert "run with 2 different grids" in (tmp_path / "r.md").read_text()


def _spec(**changes: Any) -> BenchSpec:
    return BenchSpec.from_dict({**GRID, "calibration_models": 1, **changes})


def test_which_changes_change_a_finished_cell() -> None:
    """Planned only (nothing trains): what a cell's name leaves out is compared, cell by cell,
    for the cells the folder holds rows of."""
    old = _spec()
    names = {c.ident for c in plan(old)[2]}
    assert changed_cells(old, old, names) == []
    # more schemes, attacks, models: only new cells
    assert (
        changed_cells(old, _spec(attacks=["noise", "permute"], calibration_models=2), names) == []
    )
    assert changed_cells(old, _spec(schemes=["uchida", "stdm"]), names) == []
    # an attack's options and the task's fields are in the cell names: other cells, not changed
    assert changed_cells(old, _spec(attack_options={"noise": {"sigma": 0.3}}), names) == []
    assert changed_cells(old, _spec(epochs=2, seed=1), names) == []
    # the scheme's options: its cells and the calibration cells under its key
    lam = changed_cells(old, _spec(scheme_options={"uchida": {"lam": 0.9}}), names)
    assert {(o.job.scheme, o.attack is None) for o, _ in lam} == {("uchida", False), ("none", True)}
    assert len(lam) == 4  # uchida x (none, noise x 2) + one calibration cell
    # the unmarked calibration models' epochs
    epochs = changed_cells(old, _spec(calibration_epochs=3), names)
    assert [(o.job.epochs, n.job.epochs) for o, n in epochs] == [(None, 3)]
    # rows only: a cell with no row yet is no conflict
    assert changed_cells(old, _spec(calibration_epochs=3), names - {epochs[0][0].ident}) == []


def test_a_row_outside_the_new_grid_is_compared_too() -> None:
    """A `--scheme` subset run would otherwise write a spec.json that contradicts the rows of the
    schemes it leaves out (and a later full run would resume over them)."""
    old = _spec(schemes=["uchida", "stdm"])
    names = {c.ident for c in plan(old)[2]}
    subset = _spec(schemes=["stdm"], scheme_options={"uchida": {"lam": 0.9}})
    changed = changed_cells(old, subset, names)
    assert changed and {n.job.scheme for _, n in changed if n.attack is not None} == {"uchida"}
    assert changed_cells(old, dataclasses.replace(old, schemes=("stdm",)), names) == []


def test_an_unreadable_spec_json_beside_results_is_one_line(tmp_path: Path) -> None:
    res = tmp_path / "res"
    res.mkdir()
    identity = dict.fromkeys(("kind", "data", "arch", "scheme", "attack", "attack_spec"), "x")
    row = {"cell": plan(_spec())[2][0].ident, "seed": 0, **identity}  # a row: store.IDENTITY
    (res / "results.jsonl").write_text(json.dumps(row) + "\n")
    for bad in ("[1, 2]", '{"tasks": 3}', '{"scheme_options": [1]}', "{"):
        (res / "spec.json").write_text(bad)
        with pytest.raises(NNMarkError, match="its spec.json is not a grid this version reads"):
            run_bench(_spec(), res)
        assert (res / "spec.json").read_text() == bad


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"scheme_options": {"uchida": {"lamm": 0.1}}},
            r"scheme_options of uchida: unknown option\(s\) lamm for uchida \(known: .*\blam\b",
        ),
        ({"scheme_options": {"uchda": {}}}, r"scheme_options of uchda: unknown scheme 'uchda'"),
        (
            {"scheme_options": {"uchida": {"lam": "much"}}},
            r"scheme_options of uchida: .*lam",
        ),
        (
            {"attack_options": {"noise": {"sigmaa": 1}}},
            r"attack_options of noise: unknown option\(s\) sigmaa for .*\(known: .*\bsigma\b",
        ),
        (
            {"attack_options": {"finetune-sgd": {"rate": 0.1}}},
            r"attack_options of finetune-sgd: unknown option\(s\) rate .*\blr\b",
        ),
    ],
)
def test_option_typos_are_refused_before_anything_trains(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    spec = BenchSpec.from_dict({**GRID, **options})
    with pytest.raises(NNMarkError, match=message):
        run_bench(spec, tmp_path / "res")
    assert not (tmp_path / "res").exists()


def test_option_typos_are_one_line_exit_2_and_the_presets_pass(tmp_path: Path) -> None:
    rc, text = _bench(tmp_path, {**GRID, "scheme_options": {"uchida": {"lamm": 0.1}}})
    assert rc == 2 and "scheme_options of uchida: unknown option(s) lamm for uchida" in text
    assert not (tmp_path / "res").exists()
    for spec in PRESETS.values():
        spec.check_options()
    BenchSpec.from_dict({**GRID, "scheme_options": {"uchida": {"bits": 64}}}).check_options()
