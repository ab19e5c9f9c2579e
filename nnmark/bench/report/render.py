"""`nnmark report`: one self-contained HTML file (PNG plots embedded) and a Markdown summary,
rendered from one list of sections so the two say the same things."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnmark.bench.report.outcomes import annotate
from nnmark.bench.report.plots import figures_and_notes
from nnmark.bench.report.tables import (
    FALSE_CLAIM_NOTE,
    cells_table,
    false_claim_table,
    skip_table,
    tables,
)
from nnmark.bench.store import ResultStore
from nnmark.errors import NNMarkError

__all__ = ["Section", "write_report"]

Table = list[list[str]]

STRENGTH_NOTE = (
    "One row per attack: the scheme's statistic, then the evidence (-log10 p) in the right "
    "column, where the dashed line is one mark's claim threshold (above it, still claimed)."
)
CALIBRATION_NOTE = (
    "Calibration: unmarked models trained with the same recipe and other seeds, verified with "
    "every key as issued (the uncalibrated null each scheme states); a claim (p below alpha "
    "and the forgery-cost bound) is a false claim. A few models show little: "
    "benchmarks/calibration.py verifies >= 100 unmarked models against every scheme's key, "
    "with and without `nnmark calibrate`."
)

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1250px;margin:1.5em auto;color:#222;"
    "padding:0 1em}h1{margin-bottom:.2em}h2{border-bottom:2px solid #cde;padding-bottom:.2em;"
    "margin-top:1.6em}table{border-collapse:collapse;font-size:12.5px;margin:.6em 0}"
    "td,th{border:1px solid #ccd;padding:3px 7px;vertical-align:top}th{background:#e8eefc}"
    "tr:nth-child(even) td{background:#f7f9fd}.bad{color:#b00020;font-weight:600}"
    ".ok{color:#087f23;font-weight:600}img{max-width:100%;border:1px solid #eee}"
    ".note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}"
    "code{background:#f2f2f2;padding:0 3px}"
)


@dataclass(frozen=True)
class Section:
    """One part of the report: a title and any of a note, a plot, a table and a list."""

    title: str
    note: str | None = None
    figure: str | None = None  # a base64 PNG: embedded in the HTML, left out of the Markdown
    figure_file: str | None = None  # a PNG beside the results: linked from the Markdown
    table: Table | None = None
    items: tuple[str, ...] = ()
    collapsed: bool = False  # HTML: the table folded under its row count
    html_only: bool = False


def write_report(
    results: Path,
    html_out: Path,
    md_out: Path | None = None,
    budget: float | None = None,
) -> None:
    """Render RESULTS/results.jsonl into one HTML file (plots embedded) and a Markdown summary."""
    from nnmark.io import atomic_write_all

    store = ResultStore(results)
    rows = annotate(store.rows())
    if not rows:
        raise NNMarkError(f"{results}: no results.jsonl rows to report")
    meta, spec = store.read_json("meta.json"), store.read_json("spec.json")
    if budget is None:
        budget = float(spec.get("budget", 0.05))
    skipped = [r for r in rows if r.get("skipped")]
    rows = [r for r in rows if not r.get("skipped")]
    n_failed = sum(1 for r in rows if r.get("error"))
    n_cal = sum(1 for r in rows if r.get("kind") == "calibration")
    intro = (
        f"{_tasks(spec)}. {len(rows)} cells ({n_cal} calibration), {n_failed} failed"
        + (f", {len(skipped)} skipped (scheme does not support the task)" if skipped else "")
        + "."
    )
    definition = (
        f"Attack success as WRT (Lukas et al., S&P 2022) defines it: the verdict turns not_found "
        f"(or modified) while the fidelity drops by less than {budget * 100:g} points. A composite "
        f"mark counts as removed only when its combined Fisher verdict and every part are negative."
    )
    sections = _sections(results, rows, skipped, spec, meta, budget)
    files = [(html_out, to_html(intro, definition, sections).encode())]
    if md_out is not None:
        files.append((md_out, to_markdown(intro, definition, sections).encode()))
    atomic_write_all(files)  # both or neither: a failed --md leaves the old HTML as it was


def _tasks(spec: dict[str, Any]) -> str:
    return ", ".join(
        f"{t['data']} / {t['arch']} ({t['epochs']} epochs, "
        + (
            "the whole training split)"
            if t["fraction"] == 1
            else f"{t['fraction']:.0%} of the training split)"
        )
        for t in spec.get("tasks", [])
    )


def _sections(
    results: Path,
    rows: list[dict[str, Any]],
    skipped: list[dict[str, Any]],
    spec: dict[str, Any],
    meta: dict[str, Any],
    budget: float,
) -> list[Section]:
    figs, left_out = figures_and_notes(rows, budget)
    tabs = tables(rows, budget)
    out = [
        Section(
            "Headline: per scheme, the attacks that remove the mark within the budget",
            table=tabs["headline"],
        )
    ]
    out.append(
        Section(
            "Which attacks remove each mark",
            note=left_out.get("matrix"),
            figure=figs.get("matrix"),
            html_only=True,
        )
    )
    if "composite" in tabs:
        out.append(
            Section("Composite marks: does any attack remove them all?", table=tabs["composite"])
        )
    out.append(
        Section(
            "The mark's statistic vs attack strength",
            note=" ".join(filter(None, [STRENGTH_NOTE, left_out.get("strength")])),
            figure=figs.get("strength"),
            html_only=True,
        )
    )
    out.append(
        Section(
            "Fidelity vs robustness",
            note=left_out.get("tradeoff"),
            figure=figs.get("tradeoff"),
            html_only=True,
        )
    )
    if "calibration" in tabs:
        out.append(
            Section(
                "Calibration: unmarked models",
                note=" ".join(filter(None, [CALIBRATION_NOTE, left_out.get("calibration")])),
                figure=figs.get("calibration"),
                table=tabs["calibration"],
            )
        )
    claims = false_claim_table(results)
    if claims is not None:
        png = _png(results / "false_claims.png")
        out.append(
            Section(
                "False claims over keys, architectures and recipes",
                note=FALSE_CLAIM_NOTE,
                table=claims,
                figure=None if png is None else base64.b64encode(png).decode(),
                figure_file="false_claims.png" if png is not None else None,
            )
        )
    if "failed" in tabs:
        out.append(Section("Failed cells", table=tabs["failed"]))
    if skipped:
        out.append(Section("Skipped: schemes that cannot mark a task", table=skip_table(skipped)))
    listed = meta.get("runs")
    runs = [r for r in listed if isinstance(r, dict)] if isinstance(listed, list) else []
    grids = {json.dumps(r["spec"], sort_keys=True) for r in runs if "spec" in r}
    unrecorded = [r for r in runs if "spec" not in r]
    about = tuple(spec.get("about") or ())
    if len(grids) > 1 or (grids and unrecorded):  # a resumed folder: rows of several grids
        note = (
            f"This folder was run with {len(grids)} different grids (each run's is in "
            "meta.json's `runs`); its rows come from all of them. spec.json holds the last."
            if not unrecorded
            else f"{len(unrecorded)} earlier run(s) of this folder recorded no grid: its rows "
            "may come from other grids than spec.json's (the last run's)."
        )
        out.append(Section("The grid", note=note, items=about or ("(the grid names no about)",)))
    elif about:
        out.append(Section("The grid", items=about))
    out.append(Section("All cells", table=cells_table(rows), collapsed=True, html_only=True))
    report = f"report: `nnmark report {results}`"
    out.append(Section("Machine and command", items=(*_machine_lines(meta), report)))
    return [s for s in out if s.figure or s.table or s.items]


#: How a report this module writes begins, per suffix: `nnmark report` replaces an existing
#: file without --force only when it begins so (a previous report).
REPORT_HEADS = {
    ".html": "<!doctype html><html><head><meta charset='utf-8'><title>nnmark benchmark</title>",
    ".md": "# nnmark benchmark summary\n",
}


def to_html(intro: str, definition: str, sections: list[Section]) -> str:
    esc = html.escape
    parts = [
        REPORT_HEADS[".html"] + f"<style>{STYLE}</style></head><body>",
        "<h1>nnmark benchmark</h1>",
        f"<p>{esc(intro)}</p>",
        f"<p class='note'>{esc(definition)}</p>",
    ]
    for s in sections:
        parts.append(f"<h2>{esc(s.title)}</h2>")
        if s.figure:
            parts.append(f"<img alt='{esc(s.title)}' src='data:image/png;base64,{s.figure}'>")
        if s.note:
            parts.append(f"<p>{esc(s.note)}</p>")
        if s.table and s.collapsed:
            parts.append(
                f"<details><summary>{len(s.table) - 1} rows</summary>"
                + _html_table(s.table)
                + "</details>"
            )
        elif s.table:
            parts.append(_html_table(s.table))
        if s.items:
            parts.append("<ul>" + "".join(f"<li>{_html_item(x)}</li>" for x in s.items) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _html_item(text: str) -> str:
    """A list item, its `code` spans kept as code."""
    pieces = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces))


def _md(text: str) -> str:
    """`text` as inert Markdown: on one line, and outside its `code` spans no HTML, link or
    emphasis (labels, errors and commands come from results files, which another hand may have
    written: `<script>`, `[x](javascript:...)` or a line starting `#` passed through). With an
    odd number of backticks there are no code spans: every one is escaped."""
    text = " ".join(text.splitlines())

    def plain(t: str) -> str:
        for ch in "\\`*_[]<>#!|":
            t = t.replace(ch, "\\" + ch)
        return t.replace("&", "&amp;")

    if text.count("`") % 2:
        return plain(text)
    pieces = text.split("`")
    # a pipe ends a table cell even inside a code span (GFM): escaped there too
    return "".join(
        f"`{p.replace('|', chr(92) + '|')}`" if i % 2 else plain(p) for i, p in enumerate(pieces)
    )


def to_markdown(intro: str, definition: str, sections: list[Section]) -> str:
    md = [REPORT_HEADS[".md"].rstrip("\n"), "", _md(intro), "", _md(definition)]
    for s in sections:
        if s.html_only:
            continue
        md += ["", f"## {_md(s.title)}", ""]
        if s.note:
            md += [_md(s.note), ""]
        if s.table:
            md += [_md_table(s.table)]
        if s.figure_file:
            md += ["", f"![{_md(s.title)}]({s.figure_file})"]
        md += [f"- {_md(x)}" for x in s.items]
    return "\n".join(md) + "\n"


def _html_table(t: list[list[str]], cls: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in t[0])
    body = []
    for row in t[1:]:
        tds = []
        for v in row:
            c = " class='bad'" if v == "YES" or v.startswith("Error") else ""
            if v.startswith("none: survives"):
                c = " class='ok'"
            tds.append(f"<td{c}>{esc(v)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table class='{cls}'><tr>{head}</tr>" + "".join(body) + "</table>"


def _md_table(t: list[list[str]]) -> str:
    def cell(v: str) -> str:
        return _md(v)

    lines = ["| " + " | ".join(cell(v) for v in t[0]) + " |", "|" + "---|" * len(t[0])]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in t[1:]]
    return "\n".join(lines)


#: The most bytes of a PNG the report embeds (the false-claim histograms: about 100 KB).
MAX_PNG_BYTES = 16 << 20


def _png(path: Path) -> bytes | None:
    """A PNG file's bytes to embed, or None: absent, not a PNG, or over MAX_PNG_BYTES (it was
    read whole, whatever it held: red team, session 27)."""
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        data = fh.read(MAX_PNG_BYTES + 1)
    ok = len(data) <= MAX_PNG_BYTES and data.startswith(b"\x89PNG\r\n\x1a\n")
    return data if ok else None


def _machine_lines(meta: dict[str, Any]) -> list[str]:
    out = []
    for run in meta.get("runs", []):
        m = run.get("machine", {})
        out.append(
            f"`{run.get('command') or 'run_bench(...)'}` started {run.get('started', '?')}, "
            f"{run.get('seconds', '?')} s wall"
            + (f" ({run['cpu_seconds']} s CPU)" if run.get("cpu_seconds") is not None else "")
            + f", jobs={run.get('jobs')}"
            + (f", ray={run['ray']}" if run.get("ray") is not None else "")  # only when used
            + " on "
            f"{m.get('platform')}, {m.get('cpu_count')} CPUs, torch {m.get('torch')}, "
            f"load average at start {m.get('load_average')}"
            + "".join(
                f"; {name}: {ph.get('seconds')} s wall, {ph.get('cpu_seconds')} s CPU"
                + (f", {ph['count']} calls" if "count" in ph else "")
                + (f", {ph['trained']} trained" if "trained" in ph else "")
                for name, ph in (run.get("phases") or {}).items()
            )
        )
    return out
