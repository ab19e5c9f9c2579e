"""`nnmark bench` (schema, failures recorded, resumable, Ray) and `nnmark report` in a browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from nnmark.attacks import ATTACKS
from nnmark.bench import PRESETS, ROW_SCHEMA, BenchSpec, load_spec, read_rows
from nnmark.bench.grid import SHARED_DATA, VARIANTS
from nnmark.cli import app
from nnmark.errors import NNMarkError
from nnmark.schemes import SCHEMES

runner = CliRunner()

# 1 scheme x 2 attacks on digits; prune's third strength is invalid: that cell must fail alone.
# The models at the bench's default task recipe (`Task().epochs`): the rows assert the mark is
# found, which a shortened run (5 epochs here until session 40) would only happen to give.
TINY = {
    "data": "digits",
    "schemes": ["uchida"],
    "attacks": ["prune", "permute"],
    "chains": [],
    "composites": [],
    "calibration_models": 1,
    "ladders": {"prune": {"fraction": [0.3, 0.6, 1.5]}},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny grid run once through the CLI: (config file, results directory)."""
    root = tmp_path_factory.mktemp("bench")
    config = root / "bench.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = root / "res"
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0, r.output
    assert "11 cells: 11 run, 0 skipped (done before), 2 failed" in r.stdout
    return config, out


def test_rows_follow_the_schema(tiny: tuple[Path, Path]) -> None:
    rows = read_rows(tiny[1])
    # (none, uchida) x (no attack, prune x 3, permute) + the unmarked model under uchida's key.
    assert len(rows) == 11 and len({r["cell"] for r in rows}) == 11
    assert all(set(r) == set(ROW_SCHEMA) for r in rows)
    by = {(r["scheme"], r["attack_spec"]): r for r in rows if r["kind"] == "attack"}
    clean = by[("uchida", "none")]
    assert clean["verdict"] == "found" and clean["p_value"] < 1e-6
    assert clean["statistic_name"] == "ber" and clean["statistic"] == 0.0
    assert clean["fidelity_metric"] == "accuracy" and 0.5 < clean["fidelity_before"] <= 1
    weak = by[("uchida", "prune:fraction=0.3")]
    assert (weak["strength_option"], weak["strength"], weak["level"]) == ("fraction", 0.3, 0)
    assert weak["seconds"] > 0 and weak["peak_rss_mib"] > 50
    assert weak["cpu_seconds"] > 0 and weak["skipped"] is None
    assert by[("none", "prune:fraction=0.6")]["verdict"] is None  # the plain model has no key
    # Permuting hidden units moves Uchida's projected weights: the mark is lost at no cost.
    perm = by[("uchida", "permute")]
    assert perm["verdict"] == "not_found"
    assert perm["fidelity_after"] == pytest.approx(perm["fidelity_before"], abs=1e-9)
    (cal,) = [r for r in rows if r["kind"] == "calibration"]
    assert cal["scheme"] == "uchida" and cal["verdict"] == "not_found" and cal["p_value"] > 1e-6


def test_a_failing_cell_records_its_error_and_the_sweep_goes_on(tiny: tuple[Path, Path]) -> None:
    rows = read_rows(tiny[1])
    failed = [r for r in rows if r["error"]]
    assert {r["attack_spec"] for r in failed} == {"prune:fraction=1.5"}
    assert all(
        r["error"] == "NNMarkError: prune: fraction must be in [0, 1], got 1.5" for r in failed
    )
    assert sum(1 for r in rows if not r["error"]) == 9


def test_rerun_skips_finished_cells_and_redoes_a_lost_one(tiny: tuple[Path, Path]) -> None:
    config, out = tiny
    before = (out / "results.jsonl").read_text()
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0 and "11 cells: 0 run, 11 skipped" in r.stdout
    assert (out / "results.jsonl").read_text() == before
    # A sweep killed mid-write leaves a torn last line: that cell alone is run again.
    lines = before.splitlines()
    lost = json.loads(lines[3])
    (out / "results.jsonl").write_text("\n".join(lines[:3] + lines[4:]) + "\n" + lines[3][:40])
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0 and "11 cells: 1 run, 10 skipped" in r.stdout
    rows = read_rows(out)
    assert len(rows) == 11  # the torn line was cut, not kept beside its rerun
    again = next(x for x in rows if x["cell"] == lost["cell"])
    same = ("verdict", "p_value", "fidelity_after", "error")
    assert {k: again[k] for k in same} == {k: lost[k] for k in same}  # deterministic
    # --retry-failed reruns the failed cells; each new row replaces its old one.
    args = ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"]
    r = runner.invoke(app, [*args, "--retry-failed"])
    assert r.exit_code == 0 and "11 cells: 2 run, 9 skipped (done before), 2 failed" in r.stdout
    assert len(read_rows(out)) == 11


def test_result_lines_that_are_not_rows_are_skipped_and_counted(  # type: ignore[no-untyped-def]
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    """A results.jsonl ending in `null`, `42`, `[1]` or `{}` (hand edits, another tool) stops
    neither the bench nor the report: the lines are skipped and counted."""
    import shutil

    config, src = tiny
    out = tmp_path / "res"
    shutil.copytree(src, out)
    with (out / "results.jsonl").open("a") as fh:
        fh.write("null\n42\n[1]\n{}\n")
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0 and "11 cells: 0 run, 11 skipped" in r.stdout, r.output
    assert "4 line(s)" in r.stderr and "not result rows" in r.stderr
    r = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "4 line(s)" in r.stderr, r.output
    assert len(read_rows(out)) == 11
    # fields of a type the schema does not allow aborted the whole report (red team, session
    # 26: a string fidelity, `parts` that is not a list of objects): skipped and counted too
    row = read_rows(out)[0]
    with (out / "results.jsonl").open("a") as fh:
        for bad in ({"fidelity_before": "0.9"}, {"parts": "zzz"}, {"parts": [1]}, {"seed": True}):
            fh.write(json.dumps({**row, "cell": f"x{len(bad)}{list(bad)[0]}", **bad}) + "\n")
    r = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "8 line(s)" in r.stderr, r.output
    # review, session 36: an attacked cell with neither an error nor its fidelity ended the
    # report in a TypeError; fields the schema does not name were kept (1.8 GB for 62 MB)
    hit = next(r for r in read_rows(out) if r["attack"] != "none" and not r["error"])
    with (out / "results.jsonl").open("a") as fh:
        unmeasured = {k: v for k, v in hit.items() if k != "fidelity_after"}
        fh.write(json.dumps({**unmeasured, "cell": "unmeasured"}) + "\n")
        fh.write(json.dumps({**hit, "cell": "extra", "junk": [[]] * 1000}) + "\n")
    r = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "9 line(s)" in r.stderr, r.output
    extra = next(r for r in read_rows(out) if r["cell"] == "extra")
    assert set(extra) == set(ROW_SCHEMA)
    # review, session 37: `parts` of 350,000 empty objects a row held 1.9 GB; a string p-value
    # in a part would end the report. At most a key's 16 parts, each of its own four fields
    part = {"scheme": "uchida", "verdict": "found", "statistic": 0.0, "p_value": 1e-9}
    with (out / "results.jsonl").open("a") as fh:
        for cell, parts in (("many", [{}] * 17), ("strp", [{**part, "p_value": "1e-9"}])):
            fh.write(json.dumps({**hit, "cell": cell, "parts": parts}) + "\n")
        fh.write(json.dumps({**hit, "cell": "one", "parts": [{**part, "junk": [[]] * 99}]}) + "\n")
    r = runner.invoke(app, ["report", str(out), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "11 line(s)" in r.stderr, r.output
    assert next(r for r in read_rows(out) if r["cell"] == "one")["parts"] == [part]


def test_rerun_with_more_attacks_retrains_no_model(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """Models are cached by content hash: new cells on the same models train nothing."""
    out = tmp_path / "res"
    shutil.copytree(tiny[1], out)

    def stamps() -> dict[str, int]:
        files = (out / "models").glob("*")
        return {m.name: m.stat().st_mtime_ns for m in files if m.suffix != ".json"}

    before = stamps()
    assert len(before) == 4  # plain, uchida (+ its key), one unmarked model
    config = tmp_path / "more.yaml"
    config.write_text(yaml.safe_dump({**TINY, "attacks": ["prune", "permute", "scale"]}))
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0 and "17 cells: 6 run, 11 skipped" in r.stdout, r.output
    phases = json.loads((out / "meta.json").read_text())["runs"][-1]["phases"]
    assert phases["models"]["count"] == 2 and phases["models"]["trained"] == 0
    assert phases["cells"]["count"] == 6 and phases["cells"]["cpu_seconds"] > 0
    assert stamps() == before
    first = json.loads((tiny[1] / "meta.json").read_text())["runs"][0]["phases"]
    assert first["models"]["trained"] == 3  # the same count from scratch, for contrast


def test_a_scheme_that_cannot_mark_the_task_is_skipped_not_failed(tmp_path: Path) -> None:
    """content is for classification: on the BBBC039 U-Net its plan() refuses, so its cells
    (and the calibration cells under its key) are recorded as skipped with that reason."""
    config = tmp_path / "seg.yaml"
    grid = {
        "data": f"seg:{SHARED_DATA / 'seg-bbbc039'}",
        "arch": "unet",
        "epochs": 0,  # the plain U-Net need not learn: only the bookkeeping is under test
        "schemes": ["content"],
        "attacks": ["permute"],
        "chains": [],
        "composites": [],
        "calibration_models": 1,
    }
    config.write_text(yaml.safe_dump(grid))
    out = tmp_path / "res"
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert r.exit_code == 0, r.output
    assert "5 cells: 2 run, 0 skipped (done before), 0 failed, 3 skipped as unsupported" in (
        r.stdout
    )
    rows = read_rows(out)
    skipped = [x for x in rows if x["skipped"]]
    # content's own cells (unattacked, permuted) and the unmarked U-Net under content's key
    assert sorted((x["kind"], x["attack_spec"]) for x in skipped) == [
        ("attack", "none"),
        ("attack", "permute"),
        ("calibration", "none"),
    ]
    assert {x["scheme"] for x in skipped} == {"content"}
    assert all(x["error"] is None for x in skipped)
    assert all("content is for classification" in x["skipped"] for x in skipped)
    assert all(x["error"] is None and x["scheme"] == "none" for x in rows if not x["skipped"])
    assert not any("content" in m.name for m in (out / "models").iterdir())  # never trained
    page = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(out), "--out", str(page)])
    assert r.exit_code == 0, r.output
    assert "3 skipped (scheme does not support the task)" in page.read_text()
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"])
    assert "5 cells: 0 run, 5 skipped (done before)" in r.stdout  # skip rows are resumable


def test_a_frontier_key_is_tested_without_a_calibration(tmp_path: Path) -> None:
    """frontier's key labels are key coins, so its test is exact as issued: the grid stamps its
    key (for priority; it waives no search cost) and calibrates nothing; the unattacked cell is a real test
    (queries spent, the coins' null named), not a refusal."""
    from nnmark import OwnerKey

    config = tmp_path / "frontier.yaml"
    grid = {
        "data": "digits",
        "epochs": 3,
        "schemes": ["frontier"],
        "attacks": ["permute"],
        "chains": [],
        "composites": [],
        "calibration_models": 0,
        "scheme_options": {"frontier": {"n": 40}},
    }
    config.write_text(yaml.safe_dump(grid))
    out = tmp_path / "res"
    args = ["bench", "--config", str(config), "--out", str(out), "--jobs", "1"]
    r = runner.invoke(app, [*args, "--tsa", "loopback"])  # frontier is claimed only stamped
    assert r.exit_code == 0, r.output
    (key_file,) = (out / "models").glob("frontier-*.nnkey")
    assert OwnerKey.load(key_file).timestamp is not None
    assert "calibration" not in OwnerKey.load(key_file).derived
    (row,) = [x for x in read_rows(out) if x["scheme"] == "frontier" and x["attack"] == "none"]
    print(
        f"bench frontier unattacked: {row['verdict']}, p {row['p_value']:.1e}, {row['queries']} q"
    )
    assert row["error"] is None and row["queries"] > 0


@pytest.mark.browser
def test_report_renders_in_a_real_browser(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    out = tiny[1]
    page, md = tmp_path / "report.html", tmp_path / "summary.md"
    r = runner.invoke(app, ["report", str(out), "--out", str(page), "--md", str(md)])
    assert r.exit_code == 0, r.output
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 4  # matrix, strength, trade-off, calibration
    assert "src='http" not in text and "<script" not in text  # self-contained
    assert "fraction must be in [0, 1], got 1.5" in text
    summary = md.read_text()
    assert "| uchida | whitebox |" in summary and "| permute (0.00 pts) | 1/2 attacks |" in summary
    # costs near the budget in two decimals (0.0501 printed 5.0 pts), the machine line without
    # ray when it was not used, and the claim threshold named in the strength figure's caption
    # (as the y label it was taller than a panel; review, session 39)
    assert "jobs=1 on " in text and "ray=" not in text and "ray=" not in summary
    assert "the dashed line is one mark" in text and "claim threshold (above it" in text
    assert "drops by less than 5 points" in summary and "nnmark bench --config" in summary

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is installed by `make browser` (part of make test)"
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape == (2000, 1280, 3)
    assert pixels.std() > 20  # not a blank page
    colours = np.unique(pixels.reshape(-1, 3).astype(np.uint8), axis=0)
    assert len(colours) > 200  # plots (heatmap, lines, anti-aliased text), not a flat page


def test_ray_runs_the_cells_like_the_local_pool(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """The four cells of (none, uchida) x (no attack, permute) as Ray tasks give the local
    pool's rows. One Ray worker (num_cpus 1, --jobs 1; two until session 40): the cost here is
    Ray's start and each worker's import of torch, not the cells, and one worker process
    already runs every cell away from the driver."""
    import ray

    config = tmp_path / "ray.yaml"
    config.write_text(yaml.safe_dump({**TINY, "attacks": ["permute"], "calibration_models": 0}))
    out = tmp_path / "ray"
    # Models are cached by a content hash of their recipe: the tiny grid's are reused here.
    shutil.copytree(tiny[1] / "models", out / "models")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        r = runner.invoke(
            app,
            ["bench", "--config", str(config), "--out", str(out), "--ray", "local", "--jobs", "1"],
        )
    finally:
        ray.shutdown()
    assert r.exit_code == 0, r.output
    assert "4 cells: 4 run, 0 skipped (done before), 0 failed" in r.stdout
    local = {x["cell"]: x for x in read_rows(tiny[1])}
    for row in read_rows(out):
        ref = local[row["cell"]]
        for k in ("verdict", "p_value", "fidelity_before", "fidelity_after"):
            assert row[k] == ref[k], k
    assert json.loads((out / "meta.json").read_text())["runs"][0]["ray"] == "local"


def test_presets_enumerate_the_registries() -> None:
    quick = PRESETS["quick"]
    assert quick.resolved_schemes() == SCHEMES.names()
    families = {c.family for c in quick.attack_cells()}
    assert families == set(ATTACKS.names()) | set(quick.chains) | set(VARIANTS)
    sgd = [c.spec for c in quick.attack_cells() if c.family == "finetune-sgd"]
    assert sgd == [f"finetune:optimizer=sgd,epochs=10,lr={lr}" for lr in (0.001, 0.01, 0.05)]
    assert not BenchSpec.from_dict({"attacks": ["prune"], "chains": []}).resolved_variants()
    with pytest.raises(NNMarkError, match="unknown attack variant"):
        BenchSpec.from_dict({"variants": ["finetune-rmsprop"]})
    (composite,) = quick.resolved_composites()
    kinds = {SCHEMES.get(p).kind for p in composite.split("+")}
    assert kinds == {"whitebox", "blackbox"}
    ladder = [c.spec for c in quick.attack_cells() if c.family == "quantize"]
    assert ladder == ["quantize:bits=8", "quantize:bits=4", "quantize:bits=2"]
    spec = BenchSpec.from_dict({"attacks": ["prune+finetune"], "chains": []})
    with pytest.raises(NNMarkError, match="unknown attack 'prune\\+finetune'"):
        spec.attack_cells()


def test_the_example_grid_loads_and_plans() -> None:
    """examples/bench.yaml, the grid a new user starts from, is a grid this version reads."""
    from nnmark.bench.jobs import plan

    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "bench.yaml")
    spec.check_options()
    assert spec.resolved_schemes() == ["uchida", "content"] and len(plan(spec)[2]) == 43


def test_bench_and_report_errors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["bench"])
    assert r.exit_code == 2 and "exactly one of --preset NAME or --config FILE" in r.stderr
    r = runner.invoke(app, ["bench", "--preset", "huge"])
    assert r.exit_code == 2 and "unknown preset 'huge' (known: cifar, quick, seeds)" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    r = runner.invoke(app, ["bench", "--config", str(bad)])
    assert r.exit_code == 2 and "unknown bench option(s) epochz" in r.stderr
    bad.write_text("schemes: [nosuch]\n")
    r = runner.invoke(app, ["bench", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown scheme 'nosuch'" in r.stderr
    # review, session 36: nested aliases (566 bytes) grew past 2.8 GB as the grid was copied;
    # fields of the wrong shape ran the sweep or were tracebacks; --jobs 400000000 started
    # allocating; each is one line now, and nothing is written
    laughs = ["about:", "  - &a0 [x, x, x, x, x, x, x, x, x, x]"]
    laughs += [f"  - &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    cases = {
        "\n".join(laughs): "aliases (*name) are not read in a bench config",
        "about: 5": "about must be a list of names (strings), got 5",
        "chains: [5]": "chains must be a list of names (strings)",
        "ladders: {prune: 5}": "ladders must be a mapping {attack: {option: [strengths]}}",
        "ladders: {prune: {fraction: [0.5, x]}}": "ladders must be a mapping",
        "attack_options: {prune: {fraction: [1]}}": "attack_options must be a mapping {name: ",
        "# " + "x" * (256 * 1024): "more than 262,144 bytes is not a bench grid",
        # the diff's review: each a traceback before
        "ladders: {prune: {}}": "ladders must be a mapping",
        "ladders: {prune: {fraction: [0.5], sparsity: [0.5]}}": "ladders must be a mapping",
        "ladders: {prune: {fraction: []}}": "ladders must be a mapping",
        "chains: ['+']": "chains: '+' names no attack",
        "data: 5": "bad task: data must be a name (a string), got 5",
        "[" * 20_000: "not a bench grid (RecursionError)",
        "seed: " + "9" * 5000: "not a bench grid (ValueError)",
    }
    out = tmp_path / "never"
    for text, says in cases.items():
        bad.write_text(text + "\n")
        r = runner.invoke(app, ["bench", "--config", str(bad), "--out", str(out)])
        assert r.exit_code == 2 and says in r.stderr.replace("\n", ""), (text[:40], r.stderr)
    bad.write_text("schemes: [uchida]\nattacks: [prune]\n")
    for jobs, says in (("400000000", "must be an integer in [1, 1024]"), ("0", "[1, 1024]")):
        r = runner.invoke(app, ["bench", "--config", str(bad), "--out", str(out), "--jobs", jobs])
        assert r.exit_code == 2 and says in r.stderr, r.stderr
    cpus = os.cpu_count() or 1
    r = runner.invoke(
        app, ["bench", "--config", str(bad), "--out", str(out), "--jobs", str(4 * cpus + 1)]
    )
    assert r.exit_code == 2 and f"processes on this machine's {cpus} CPUs" in r.stderr
    assert not out.exists()
    # an option left to its config's default (None) is still taken; a list from Python too
    bad.write_text("scheme_options: {uchida: {lam: null, layer: null}}\n")
    load_spec(bad).check_options()
    assert BenchSpec(schemes=["uchida"]).schemes == ("uchida",)  # type: ignore[arg-type]
    (tmp_path / "a_file").write_text("")
    r = runner.invoke(app, ["bench", "--preset", "quick", "--out", str(tmp_path / "a_file")])
    lines = r.stderr.splitlines()  # one line: no blank line of a progress bar before it
    assert r.exit_code == 2 and lines == [
        f"error: --out {tmp_path / 'a_file'} is not a directory (results are a folder of files)"
    ]
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "results directory not found" in r.stderr
    (tmp_path / "empty").mkdir()
    r = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "no results.jsonl rows to report" in r.stderr


def test_docs_list_every_row_field() -> None:
    """docs/bench.md repeats ROW_SCHEMA: a field added to one must be added to the other."""
    import re

    doc = (Path(__file__).resolve().parents[2] / "docs" / "bench.md").read_text()
    table = doc.split("## Row schema", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(\w+)` \|", table, flags=re.M)) == set(ROW_SCHEMA)


def test_cached_models_are_keyed_by_the_recipe_and_the_version_not_source_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 17: a bench model's cache name changes with what makes it (task, scheme, options,
    seed, epochs) and with the package version; where fidelity is measured does not change it."""
    import nnmark._version
    from nnmark.bench.grid import Task
    from nnmark.bench.jobs import ModelJob

    job = ModelJob(Task(), "uchida", 0, {})
    same = ModelJob(Task(test_fraction=0.5), "uchida", 0, {})
    assert job.ident == same.ident and job.ident.startswith("uchida-")
    others = [
        ModelJob(Task(epochs=3), "uchida", 0, {}),
        ModelJob(Task(), "stdm", 0, {}),
        ModelJob(Task(), "uchida", 1, {}),
        ModelJob(Task(), "uchida", 0, {"bits": 32}),
        ModelJob(Task(), "uchida", 0, {}, epochs=2),
    ]
    assert len({job.ident, *(o.ident for o in others)}) == 1 + len(others)
    ident, nonce = job.ident, job.nonce  # properties: read again after the version changes
    monkeypatch.setattr(nnmark._version, "__version__", "999.0")
    assert job.ident != ident
    assert job.nonce == nonce  # a key's nonce: the recipe alone


def test_a_cached_key_of_a_refused_format_is_trained_again(tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """Version 3 keys came under the same package version as version 2 ones: a cached model's
    version-2 key was loaded and refused, and calibration.py stopped. It is made again."""
    from nnmark import OwnerKey, new_model
    from nnmark.bench.cache import ModelCache, model_id

    cache = ModelCache(tmp_path)
    made: list[int] = []

    def make():  # type: ignore[no-untyped-def]
        from nnmark.schemes.uchida import Uchida, UchidaConfig

        made.append(1)
        model, owner = new_model("cnn", digits, seed=0), OwnerKey.new("o", nonce="ab" * 16)
        return model, owner.with_mark(Uchida.plan(model, owner, UchidaConfig(), bits=16)), digits

    cache.get("x", ["r"], make, keyed=True)
    cache.get("x", ["r"], make, keyed=True)
    assert len(made) == 1  # cached
    path = cache.key_path(model_id("x", ["r"]))
    doc = json.loads(path.read_text())
    path.write_text(json.dumps({**doc, "version": 2}))
    _, key = cache.get("x", ["r"], make, keyed=True)
    assert len(made) == 2 and key is not None  # trained again, the key in today's format


def test_the_headline_counts_an_attack_that_ruined_the_model_as_too_weak_not_survived() -> None:
    """Issue 18: "survives" counts only attacks that left a model within the fidelity budget at
    some strength; one that never did is listed as too weak here."""
    from nnmark.bench.report import tables

    def row(attack: str, level: int, verdict: str, after: float) -> dict:
        return {
            "kind": "attack",
            "data": "digits",
            "arch": "cnn",
            "scheme": "x",
            "scheme_kind": "whitebox",
            "attack": attack,
            "attack_spec": f"{attack}:{level}" if attack != "none" else "none",
            "level": level,
            "verdict": verdict,
            "p_value": 1e-9 if verdict == "found" else 0.5,
            "fidelity_before": 0.98,
            "fidelity_after": after,
            "error": None,
            "parts": None,
        }

    rows = [
        row("none", 0, "found", 0.98),
        row("removes", 0, "found", 0.97),
        row("removes", 1, "not_found", 0.96),  # removed within the 5-point budget
        row("survived", 0, "found", 0.97),  # within the budget, mark still found
        row("survived", 1, "found", 0.50),
        row("ruins", 0, "found", 0.70),  # never within the budget: no evidence either way
        row("ruins", 1, "not_found", 0.30),
    ]
    (header, line) = tables(rows, 0.05)["headline"]
    got = dict(zip(header, line, strict=True))
    removed = "attacks that remove it within the budget (the removal that cost least; its cost)"
    assert got[removed] == "removes:1 (2.00 pts)"
    assert got["robust to"] == "1/3 attacks"
    too_weak = "attack too weak here (no strength within the budget; its least fidelity cost)"
    assert got[too_weak] == "ruins (28.00 pts)"
    assert got["robust to adaptive attacks"] == "none run"
    # an attack that knows how marks are read (Attack.adaptive: obfuscate) is counted apart
    (header, line) = tables([*rows, row("obfuscate", 0, "not_found", 0.98)], 0.05)["headline"]
    got = dict(zip(header, line, strict=True))
    assert got["robust to adaptive attacks"] == "0/1 (removed by obfuscate)"
    assert got["robust to"] == "1/4 attacks"
    # rows without `kind` read as attacks everywhere (red team, session 26: the unattacked row
    # was not counted as embedded, so "removes" read "none: survives every attack")
    bare = [{k: v for k, v in r.items() if k != "kind"} for r in rows]
    (header, line) = tables(bare, 0.05)["headline"]
    assert dict(zip(header, line, strict=True))[removed] == "removes:1 (2.00 pts)"
    # a mark that itself costs more than the budget is said beside the verdict (walkthrough,
    # session 36: a 12-point mark read "survives every attack"); within it, nothing is added
    plain = {**row("none", 0, "not_found", 0.99), "scheme": "none", "scheme_kind": None}
    survivor = [r for r in rows if r["attack"] in ("none", "survived")]
    (header, line) = tables([*survivor, plain], 0.05)["headline"]
    assert dict(zip(header, line, strict=True))[removed] == "none: survives every attack"
    (header, line) = tables([*survivor, {**plain, "fidelity_after": 1.0}], 0.015)["headline"]
    assert dict(zip(header, line, strict=True))[removed] == (
        "none: survives every attack (the mark itself costs 2.00 pts, past the budget)"
    )


def test_a_task_names_only_the_optimiser_fields_it_changes() -> None:
    """Tasks gained the owner's optimiser (issue 15: the papers' CIFAR models train with SGD);
    a task at the defaults keeps the recipe, and so the cache names, nonces and cells, it had
    before the fields existed."""
    from nnmark.bench.grid import Task
    from nnmark.bench.jobs import ModelJob
    from nnmark.bench.models import _train_config

    plain = ModelJob(Task(), "none", 0, {})
    assert set(plain.recipe[0]) == {"data", "arch", "epochs", "fraction", "batch_size", "lr"}
    sgd = Task(optimizer="sgd", lr=0.1, weight_decay=1e-4)
    assert sgd.optimiser_changes() == {"optimizer": "sgd", "weight_decay": 1e-4}
    assert sgd.label.endswith(",optimizer=sgd,weight_decay=0.0001)")
    job = ModelJob(sgd, "none", 0, {})
    assert job.recipe[0]["optimizer"] == "sgd" and job.ident != plain.ident
    cfg = _train_config(sgd, 0)
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    with pytest.raises(NNMarkError, match="optimizer adam or sgd"):
        BenchSpec.from_dict({"tasks": [{"optimizer": "rmsprop"}]})


def test_report_outputs_never_replace_inputs_devices_or_an_old_report(  # type: ignore[no-untyped-def]
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    """Red team, session 26: `--out RES/spec.json` replaced the grid with HTML (every later
    report failed), `--out` on a FIFO or device replaced it with a file (as root, /dev/null),
    and a failing `--md` came after the HTML had been overwritten. All are refused before any
    work, the files as they were; a report keeps the mode of the one it replaces."""
    import os
    import stat

    _, res = tiny
    spec = (res / "spec.json").read_bytes()
    r = runner.invoke(app, ["report", str(res), "--out", str(res / "spec.json")])
    assert r.exit_code == 2 and "--out must be a .html file" in r.stderr, r.stderr
    assert (res / "spec.json").read_bytes() == spec
    claims = res / "false_claims.md"
    was = claims.read_bytes() if claims.exists() else None
    r = runner.invoke(app, ["report", str(res), "--md", str(claims)])
    assert r.exit_code == 2 and "name the same file" in r.stderr, r.stderr
    assert (claims.read_bytes() if claims.exists() else None) == was
    key = tmp_path / "acme.nnkey"  # usability review, session 38: it became Markdown
    key.write_text("{}")
    r = runner.invoke(app, ["report", str(res), "--md", str(key)])
    assert r.exit_code == 2 and "--md must be a .md file" in r.stderr, r.stderr
    assert key.read_text() == "{}"
    fifo = tmp_path / "fifo.html"
    os.mkfifo(fifo)
    r = runner.invoke(app, ["report", str(res), "--out", str(fifo)])
    assert r.exit_code == 2 and "not a regular file" in r.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    readme = tmp_path / "README.md"  # diff review, session 38: it became the summary
    readme.write_text("# my project")
    r = runner.invoke(app, ["report", str(res), "--md", str(readme)])
    assert r.exit_code == 2 and "refusing to overwrite" in r.stderr, r.stderr
    assert readme.read_text() == "# my project"
    old = tmp_path / "old.html"
    old.write_text("the old report")
    old.chmod(0o644)
    r = runner.invoke(
        app,
        ["report", str(res), "--out", str(old), "--md", str(tmp_path / "no" / "s.md"), "--force"],
    )
    assert r.exit_code == 2 and "output folder does not exist" in r.stderr
    assert old.read_text() == "the old report"
    args = ["report", str(res), "--out", str(old), "--md", str(tmp_path / "s.md")]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "refusing to overwrite" in r.stderr  # not a report: --force
    r = runner.invoke(app, [*args, "--force"])
    assert r.exit_code == 0, r.stderr
    assert old.read_text().startswith("<!doctype html>") and old.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "s.md").stat().st_mode & 0o777 == 0o644
    r = runner.invoke(app, args)  # a previous report is replaced as it is regenerated
    assert r.exit_code == 0, r.stderr


def test_the_markdown_summary_is_inert(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """Labels, errors and commands come from results files another hand may have written: in
    the Markdown they stay text (the HTML was already escaped; the Markdown passed `<script>`,
    `[x](javascript:...)` and new headings through)."""
    _, res = tiny
    hostile = tmp_path / "res"
    shutil.copytree(res, hostile, ignore=shutil.ignore_patterns("models"))
    evil = "x<script>alert(1)</script>[y](javascript:alert(2))\n# FOUND `a|b"
    rows = [json.loads(line) for line in (hostile / "results.jsonl").read_text().splitlines()]
    for row in rows:
        if row.get("scheme") == "uchida":
            row["scheme"] = evil
        if row.get("error"):
            row["error"] = evil
    (hostile / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = tmp_path / "s.md"
    r = runner.invoke(
        app, ["report", str(hostile), "--out", str(tmp_path / "r.html"), "--md", str(md)]
    )
    assert r.exit_code == 0, r.stderr
    text = md.read_text()
    assert "x\\<script\\>" in text and "<script>" not in text and "[y](javascript" not in text
    assert "\n# FOUND" not in text and "\n\\# FOUND" not in text


def test_the_machine_line_names_ray_only_when_it_ran() -> None:
    """`ray=None` on every local run told the reader nothing (review, session 39)."""
    from nnmark.bench.report.render import _machine_lines

    run = {"command": "nnmark bench", "jobs": 2, "machine": {"cpu_count": 2}}
    assert ", jobs=2 on " in _machine_lines({"runs": [run]})[0]
    assert ", jobs=2, ray=local on " in _machine_lines({"runs": [{**run, "ray": "local"}]})[0]
