"""`nnmark report` on a results directory another hand wrote: every figure and table is bounded
by constants, whatever the names in results.jsonl, and an oversized file is one line, exit 2
(red team, session 27: 15.7 KB of rows cost 120 s and 2 GB, 89 KB 39 s and 6 GB)."""

from __future__ import annotations

import base64
import importlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nnmark.bench.report import plots
from nnmark.cli import app

tables = importlib.import_module("nnmark.bench.report.tables")

runner = CliRunner()


def _row(i: int, scheme: str, attack: str, **extra: Any) -> dict[str, Any]:
    """A row as the red team's mk_results.py / mk_results2.py write them."""
    return {
        "cell": f"c{i}",
        "kind": "attack",
        "data": "digits",
        "arch": "cnn",
        "task": "classification",
        "seed": 0,
        "scheme": scheme,
        "attack": attack,
        "attack_spec": attack,
        "fidelity_metric": "accuracy",
        "fidelity_before": 0.9,
        "fidelity_after": 0.9,
        "verdict": "not_found",
        "p_value": 0.5,
        "alpha": 1e-6,
        **extra,
    }


def _matrix_rows(n: int) -> list[dict[str, Any]]:
    """mk_results.py: each row its own scheme and its own attack (an n x n heatmap before)."""
    return [_row(i, f"s{i}", f"a{i}") for i in range(n)]


def _strength_rows(n: int) -> list[dict[str, Any]]:
    """mk_results2.py: each row its own laddered attack and statistic (n x (n + 1) panels)."""
    ladder = {"strength_option": "x", "strength": 1.0, "level": 0}
    return [
        _row(i, "uchida", f"a{i}", statistic_name=f"st{i}", statistic=0.5, **ladder)
        for i in range(n)
    ]


def _png_size(b64: str) -> tuple[int, int]:
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    return struct.unpack(">II", base64.b64decode(b64)[16:24])


def _write(root: Path, rows: list[dict[str, Any]]) -> Path:
    root.mkdir()
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_the_matrix_draws_at_most_max_drawn_schemes_and_attacks() -> None:
    """100 rows, each its own scheme and attack: a 100 x 100 heatmap (5,450 px wide) before;
    now the first 64 of each in the matrix's order (all tie on rows), so 64 x 64 at most."""
    n = plots.MAX_DRAWN + 36
    figs, notes = plots.figures_and_notes(_matrix_rows(n), 0.05)
    width, height = _png_size(figs["matrix"])
    cap = plots.MAX_DRAWN
    # the figure is (0.52 F + 2.5) x (0.42 S + 2.2) inches at 100 dpi; tight bbox: labels, title
    assert width <= 100 * (0.52 * cap + 2.5) + 400, width
    assert height <= 100 * (0.42 * cap + 2.2) + 400, height
    assert notes["matrix"].startswith("36 more schemes and 36 more attacks not drawn")
    assert "36 more schemes" in notes["tradeoff"]


def test_the_strength_plot_draws_a_bounded_grid_of_panels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows each naming its own attack and statistic: R x (R + 1) panels before. The caps are
    lowered here so the test draws few panels; the grid is at most MAX_STRENGTH_ATTACKS rows of
    MAX_STRENGTH_STATISTICS + 1 panels (3.3 x 2.25 inches each)."""
    monkeypatch.setattr(plots, "MAX_STRENGTH_ATTACKS", 3)
    monkeypatch.setattr(plots, "MAX_STRENGTH_STATISTICS", 2)
    figs, notes = plots.figures_and_notes(_strength_rows(20), 0.05)
    width, height = _png_size(figs["strength"])
    assert width <= 100 * 3.3 * 3 + 300, width  # 2 statistics, then -log10 p (20 x 21 before)
    assert height <= 100 * (2.25 * 3 + 0.9) + 300, height
    assert notes["strength"] == (
        "17 more attacks and 18 more statistics not drawn (those with the fewest rows)"
    )


def test_the_strength_plot_draws_at_most_max_strength_panels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With many statistic columns, fewer attack rows: 32 rows of 9 panels still took 35 s."""
    monkeypatch.setattr(plots, "MAX_STRENGTH_STATISTICS", 2)
    monkeypatch.setattr(plots, "MAX_STRENGTH_PANELS", 7)  # 3 columns: 2 rows
    figs, notes = plots.figures_and_notes(_strength_rows(20), 0.05)
    assert _png_size(figs["strength"])[1] <= 100 * (2.25 * 2 + 0.9) + 300
    assert notes["strength"].startswith("18 more attacks and 18 more statistics not drawn")


def test_a_long_name_does_not_widen_a_figure() -> None:
    """A tight bounding box grew the image to fit a tick label of any length."""
    rows = [_row(0, "s" * 5000, "a" * 5000)]
    width, height = _png_size(plots.figures(rows, 0.05)["matrix"])
    assert width <= 1200 and height <= 800, (width, height)


def test_which_names_a_figure_keeps() -> None:
    """The most rows first, the earlier on a tie; drawn in their own order."""
    from collections import Counter

    names = ["a", "b", "c", "d"]
    assert plots._top(names, Counter({"c": 3, "d": 3, "a": 1}), 2) == (["c", "d"], 2)
    assert plots._top(names, Counter(), 3) == (["a", "b", "c"], 1)
    assert plots._top(names, Counter(), 4) == (names, 0)


def test_tables_are_capped_and_grouped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A summary table shows at most MAX_TABLE_ROWS rows, then one counting the rest; composite
    and headline rows come from one grouping pass (a scan per scheme and attack before)."""
    monkeypatch.setattr(tables, "MAX_TABLE_ROWS", 5)
    monkeypatch.setattr(tables, "MAX_CELLS_ROWS", 7)
    rows = [_row(i, f"s{i}+t", f"a{i}") for i in range(40)]
    rows += [_row(100 + i, f"s{i}+t", "none", verdict="found") for i in range(40)]
    from nnmark.bench.report.outcomes import annotate

    got = tables.tables(annotate(rows), 0.05)
    assert (
        len(got["headline"]) == 1 + 5 + 1 and got["headline"][-1][0] == "(35 more rows not shown)"
    )
    assert len(got["composite"]) == 1 + 5 + 1 and got["composite"][1][:2] == ["s0+t", "a0"]
    cells = tables.cells_table(annotate(rows))
    assert len(cells) == 1 + 7 + 1 and cells[-1][0] == "(73 more rows not shown)"


def test_the_report_of_crafted_rows_is_bounded_and_says_what_it_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The red team's two directories, scaled down (caps lowered to match), through the CLI."""
    monkeypatch.setattr(plots, "MAX_DRAWN", 6)
    monkeypatch.setattr(plots, "MAX_STRENGTH_ATTACKS", 2)
    monkeypatch.setattr(plots, "MAX_STRENGTH_STATISTICS", 2)
    rows = _matrix_rows(30) + [{**r, "cell": f"x{r['cell']}"} for r in _strength_rows(12)]
    res = _write(tmp_path / "res", rows)
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(res), "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    page = out.read_text()
    assert "25 more schemes and 24 more attacks not drawn" in page  # 31 schemes, 30 attacks
    assert "10 more attacks and 10 more statistics not drawn" in page


def test_the_false_claim_files_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """false_claims.json was read whole and tabled whole, and false_claims.png embedded whole
    whatever it held (red team, session 27): its table is capped, a file over MAX_JSON_BYTES is
    one line and exit 2, and only a PNG within MAX_PNG_BYTES is embedded."""
    from nnmark.bench import store
    from nnmark.bench.report import render

    monkeypatch.setattr(tables, "MAX_TABLE_ROWS", 5)
    res = _write(tmp_path / "res", _matrix_rows(3))
    row = {"scheme": "uchida", "mode": "plain", "pairs": 10, "claims_rule_1e-6": 0}
    row |= {"claims_p_1e-6": 0, "fpr_0.05": 0.0, "fpr_0.05_ci95": [0.0, 0.3], "meets": True}
    summary = {f"r{i}": row for i in range(40)}
    (res / "false_claims.json").write_text(json.dumps({"summary": summary}))
    table = tables.false_claim_table(res)
    assert table is not None and len(table) == 1 + 5 + 1 and "35 more rows" in table[-1][0]
    (res / "false_claims.png").write_bytes(b"<script>not a png</script>")
    out = tmp_path / "r.html"
    assert runner.invoke(app, ["report", str(res), "--out", str(out)]).exit_code == 0
    page = out.read_text()
    assert "False claims over keys" in page
    assert base64.b64encode(b"<script>not a png</script>").decode() not in page
    monkeypatch.setattr(render, "MAX_PNG_BYTES", 10)
    assert render._png(res / "false_claims.png") is None
    monkeypatch.setattr(store, "MAX_JSON_BYTES", 100)
    r = runner.invoke(app, ["report", str(res), "--out", str(tmp_path / "r2.html")])
    assert r.exit_code == 2 and "false_claims.json: more than 100 bytes" in r.stderr, r.stderr
    assert not (tmp_path / "r2.html").exists()
