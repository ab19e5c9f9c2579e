"""`nnmark bench` (resumable, failures recorded) and `nnmark report` seen in a real browser."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from typer.testing import CliRunner

from nnmark.bench.runner import read_rows
from nnmark.cli import app

runner = CliRunner()


def test_bench_resume_failures_and_report(tmp_path: Path) -> None:
    config = tmp_path / "bench.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "schemes": ["uchida"],
                "attacks": ["prune", "quantize"],
                "epochs": 3,
                "chains": ["noise:sigma=-1"],  # an invalid cell: recorded, not fatal
            }
        )
    )
    out = tmp_path / "res"
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out), "--jobs", "2"])
    assert r.exit_code == 0, r.stderr
    rows = read_rows(out)
    cells = [r for r in rows if not r.get("calibration")]
    assert len(cells) == 2 * (
        1 + 3 + 3 + 1
    )  # (none, uchida) x (no attack, 3 prune, 3 quantize, chain)
    failed = [r for r in cells if r["error"]]
    assert len(failed) == 2 and all("sigma must be >= 0" in r["error"] for r in failed)
    ok = [r for r in cells if r["scheme"] == "uchida" and not r["error"]]
    for key in (
        "fidelity_before",
        "fidelity_after",
        "verdict",
        "statistic",
        "p_value",
        "seconds",
        "peak_rss_mib",
        "fidelity_metric",
    ):
        assert all(key in r for r in ok)
    weak = next(r for r in ok if r["attack"] == "prune:fraction=0.3")
    assert weak["verdict"] == "found" and weak["fidelity_metric"] == "accuracy"
    assert any(r.get("calibration") and r["verdict"] == "not_found" for r in rows)
    # A rerun skips every finished cell.
    r = runner.invoke(app, ["bench", "--config", str(config), "--out", str(out)])
    assert r.exit_code == 0 and json.loads(r.stdout.splitlines()[0])["run"] == 0
    assert len(read_rows(out)) == len(rows)

    html, md = tmp_path / "report.html", tmp_path / "summary.md"
    r = runner.invoke(app, ["report", str(out), "--out", str(html), "--md", str(md)])
    assert r.exit_code == 0, r.stderr
    text = html.read_text()
    assert text.count("data:image/png;base64,") >= 3 and "sigma must be &gt;= 0" in text
    assert "| uchida |" in md.read_text()

    chromium = shutil.which("chromium")
    assert chromium, "chromium is installed by the make test set-up"
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
            "--window-size=1200,1800",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # plots, not a flat page


def test_bench_and_report_errors(tmp_path: Path) -> None:
    r = runner.invoke(app, ["bench"])
    assert r.exit_code == 2 and "exactly one of --preset" in r.stderr
    r = runner.invoke(app, ["bench", "--preset", "huge"])
    assert r.exit_code == 2 and "unknown preset 'huge'" in r.stderr
    r = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "results directory not found" in r.stderr
