"""results.jsonl, spec.json and meta.json are read up to caps: `nnmark report` reads directories
another hand may have written, and read results.jsonl whole with no bound (red team, session 27).
An oversized file is one line, exit 2, before any line is parsed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nnmark.bench import store
from nnmark.bench.report.render import write_report
from nnmark.cli import app
from nnmark.errors import NNMarkError

runner = CliRunner()


def _row(i: int, scheme: str = "s", attack: str = "a", **extra: Any) -> dict[str, Any]:
    return {
        "cell": f"c{i}",
        "kind": "attack",
        "data": "digits",
        "arch": "cnn",
        "seed": 0,
        "scheme": scheme,
        "attack": attack,
        "attack_spec": attack,
        "fidelity_before": 0.9,
        "fidelity_after": 0.9,
        "verdict": "not_found",
        "p_value": 0.5,
        **extra,
    }


def _write(root: Path, rows: list[dict[str, Any]]) -> Path:
    root.mkdir()
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_a_results_file_over_the_caps_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read whole, with no bound, before (red team, session 27): now refused before parsing."""
    res = _write(tmp_path / "res", [_row(i, f"s{i}", f"a{i}") for i in range(20)])
    size = (res / "results.jsonl").stat().st_size
    monkeypatch.setattr(store, "MAX_RESULTS_BYTES", size - 1)
    r = runner.invoke(app, ["report", str(res), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 2
    assert f"more than {size - 1} bytes is too large for a results file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "r.html").exists()
    monkeypatch.setattr(store, "MAX_RESULTS_BYTES", size)
    monkeypatch.setattr(store, "MAX_RESULTS_LINES", 19)
    with pytest.raises(NNMarkError, match="more than 19 lines is too many for a results file"):
        store.scan_rows(res)
    monkeypatch.setattr(store, "MAX_RESULTS_LINES", 20)  # 20 rows, each ending in a newline
    assert len(store.scan_rows(res)[0]) == 20


def test_a_row_over_max_row_bytes_is_skipped_not_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = _write(tmp_path / "res", [_row(0, "s", "a"), _row(1, "s", "a", error="x" * 500)])
    monkeypatch.setattr(store, "MAX_ROW_BYTES", 400)
    rows, skipped = store.scan_rows(res)
    assert [r["cell"] for r in rows] == ["c0"] and skipped == 1


def test_spec_and_meta_are_read_up_to_a_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = _write(tmp_path / "res", [_row(0), _row(1)])
    (res / "spec.json").write_text(json.dumps({"about": ["x" * 100]}))
    monkeypatch.setattr(store, "MAX_JSON_BYTES", 50)
    with pytest.raises(NNMarkError, match="spec.json: more than 50 bytes is too large"):
        write_report(res, tmp_path / "r.html")


@pytest.mark.parametrize(
    "name, text, says",
    [
        ("meta.json", "{not json", "meta.json: not JSON"),
        ("meta.json", "[1, 2]", "meta.json: not a JSON object"),
        ("spec.json", "[" * 100_000, "spec.json: not JSON"),
    ],
)
def test_spec_and_meta_that_are_not_json_objects_are_one_line(
    tmp_path: Path, name: str, text: str, says: str
) -> None:
    """Review (session 34): a JSONDecodeError, an AttributeError, a RecursionError."""
    res = _write(tmp_path / "res", [_row(0), _row(1)])
    (res / name).write_text(text)
    r = runner.invoke(app, ["report", str(res), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and says in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "r.html").exists()


def test_a_row_without_its_identity_is_skipped_and_one_with_fields_missing_reports(
    tmp_path: Path,
) -> None:
    """`{"cell": "a"}` alone ended the report in KeyError 'scheme' (review, session 34): a row
    lacking a field every row has is skipped; one lacking others (older versions') reads them
    as unknown, and the report renders."""
    bare = {k: v for k, v in _row(2, "t", "b").items() if k not in ("verdict", "p_value")}
    res = _write(tmp_path / "res", [_row(0), {"cell": "a"}, bare])
    rows, skipped = store.scan_rows(res)
    assert [r["cell"] for r in rows] == ["c0", "c2"] and skipped == 1
    assert rows[1]["verdict"] is None
    r = runner.invoke(app, ["report", str(res), "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.stderr
