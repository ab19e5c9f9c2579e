"""The report's tables as lists of rows (first row: the header), shared by HTML and Markdown."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from nnmark.bench.report.outcomes import (
    POSITIVE,
    adaptive,
    attacked,
    headline,
    labelled,
    least_cost,
    order,
    scheme_key,
    succeeded,
    too_weak,
)

__all__ = [
    "FALSE_CLAIM_NOTE",
    "cells_table",
    "false_claim_table",
    "skip_table",
    "tables",
]

Rows = list[dict[str, Any]]
Table = list[list[str]]


def tables(rows: Rows, budget: float) -> dict[str, Table]:
    """The summary tables by name: headline, composite, calibration, failed (those with rows)."""
    rows = labelled(rows)
    out = {
        "headline": headline_table(rows, budget),
        "composite": composite_table(rows, budget),
        "calibration": calibration_table(rows),
        "failed": failed_table(rows),
    }
    return {name: t for name, t in out.items() if len(t) > 1 or name == "headline"}


def headline_table(rows: Rows, budget: float) -> Table:
    """Per scheme: fidelity, p unattacked, the attacks that remove it within the budget, how many
    it survives, and the attacks too weak here to say (issue 18)."""
    clean = {
        r["label"]: r
        for r in rows
        if r.get("kind", "attack") == "attack" and r["attack"] == "none" and not r.get("error")
    }
    hit = attacked(rows)
    t = [
        [
            "scheme",
            "kind",
            "fidelity marked (plain)",
            "p unattacked",
            "attacks that remove it within the budget (the removal that cost least; its cost)",
            "robust to",
            "attack too weak here (no strength within the budget; its least fidelity cost)",
            "robust to adaptive attacks",
        ]
    ]
    for s, wins in headline(rows, budget).items():
        c = clean.get(s)
        plain = clean.get(s.replace(s.split(" [")[0], "none", 1))
        kinds = {str(r["scheme_kind"]) for r in rows if r["label"] == s and r.get("scheme_kind")}
        fams = {r["attack"] for r in hit if r["label"] == s and not r.get("error")}
        weak: list[str] = []
        if c is None:
            removed, robust = "unattacked model failed", ""
        elif c.get("verdict") not in POSITIVE:
            removed, robust = "mark not found before any attack", ""
        else:
            weak = too_weak(rows, s, budget)
            removed = ", ".join(wins) or (
                "none: survives every attack" if not weak else "none within the budget"
            )
            robust = f"{len(fams) - len(wins) - len(weak)}/{len(fams)} attacks"
        fid = _fmt(c["fidelity_after"]) if c else "failed"
        t.append(
            [
                s,
                ", ".join(sorted(kinds)),
                fid + (f" ({_fmt(plain['fidelity_after'])})" if plain else ""),
                _fmt(c.get("p_value"), ".2e") if c else "",
                removed,
                robust,
                ", ".join(_with_cost(rows, s, a) for a in weak),
                _adaptive_cell(hit, s, budget, weak) if robust else "",
            ]
        )
    return t


def _with_cost(rows: Rows, label: str, family: str) -> str:
    """'family (6.1 pts)': by how much the attack missed the budget at its mildest."""
    cost = least_cost(rows, label, family)
    return family if cost is None else f"{family} ({100 * cost:.1f} pts)"


def _adaptive_cell(hit: Rows, label: str, budget: float, weak: list[str]) -> str:
    """k/n of the adaptive attack families run on `label` that the mark survived (within the
    budget at some strength and never removed), with those that removed it, or 'none run'."""
    mine = sorted({r["attack"] for r in hit if r["label"] == label and adaptive(r["attack"])})
    if not mine:
        return "none run"
    removed = sorted(
        {
            r["attack"]
            for r in hit
            if r["label"] == label and r["attack"] in mine and succeeded(r, budget)
        }
    )
    survived = [f for f in mine if f not in removed and f not in weak]
    note = f" (removed by {', '.join(removed)})" if removed else ""
    return f"{len(survived)}/{len(mine)}{note}"


def composite_table(rows: Rows, budget: float) -> Table:
    """Per composite mark and attack: does any strength remove every part within the budget?"""
    hit = attacked(rows)
    t = [
        [
            "composite",
            "attack",
            "strongest level run",
            "combined verdict",
            "parts (verdict, p)",
            "fidelity lost",
            "all marks removed within budget",
        ]
    ]
    for s in (s for s in order(rows)[0] if "+" in s):
        for a in order(rows)[1]:
            cells = [r for r in hit if r["label"] == s and r["attack"] == a and not r.get("error")]
            if not cells:
                continue
            r = max(cells, key=lambda r: r.get("level") or 0)
            win = [c for c in cells if succeeded(c, budget)]
            shown = win[0] if win else r
            parts = "; ".join(
                f"{p['scheme']} {p['verdict']} {p['p_value']:.1e}" for p in shown.get("parts") or []
            )
            lost = 100 * (shown["fidelity_before"] - shown["fidelity_after"])
            t.append(
                [
                    s,
                    shown["attack_spec"],
                    _fmt(r.get("level")),
                    str(shown.get("verdict")),
                    parts,
                    f"{lost:.1f} pts",
                    "YES" if win else "no",
                ]
            )
    return t


def calibration_table(rows: Rows) -> Table:
    """Per scheme: unmarked models verified with its keys, false claims, the smallest p."""
    cal = [r for r in rows if r.get("kind") == "calibration"]
    t = [
        ["scheme", "unmarked models", "false claims (at alpha)", "p < 0.05", "smallest p", "errors"]
    ]
    for s in sorted({r["label"] for r in cal}, key=scheme_key):
        mine = [r for r in cal if r["label"] == s]
        ps = [r["p_value"] for r in mine if r.get("p_value") is not None]
        t.append(
            [
                s,
                str(len(ps)),
                str(sum(1 for r in mine if r.get("verdict") in POSITIVE)),
                str(sum(1 for p in ps if p < 0.05)),
                _fmt(min(ps), ".2e") if ps else "",
                str(sum(1 for r in mine if r.get("error"))),
            ]
        )
    return t


def failed_table(rows: Rows) -> Table:
    t = [["scheme", "attack", "error"]]
    return t + [[r["label"], r.get("attack_spec", ""), r["error"]] for r in rows if r.get("error")]


def skip_table(skipped: Rows) -> Table:
    """Cells not run because their scheme cannot mark the task's model, counted by reason."""
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for r in skipped:
        reasons[(r["label"], r["skipped"])] += 1
    t = [["scheme", "cells skipped", "why (the scheme's own plan() refuses the task)"]]
    return t + [[lb, str(n), why] for (lb, why), n in sorted(reasons.items())]


def cells_table(rows: Rows) -> Table:
    """Every attack cell that ran, with its cost."""
    t = [
        [
            "scheme",
            "attack",
            "fidelity before",
            "after",
            "verdict",
            "statistic",
            "p-value",
            "s",
            "CPU s",
            "RSS MiB",
        ]
    ]
    for r in rows:
        if r.get("kind") == "calibration" or r.get("error"):
            continue
        t.append(
            [
                r["label"],
                r["attack_spec"],
                _fmt(r.get("fidelity_before")),
                _fmt(r.get("fidelity_after")),
                str(r.get("verdict") or ""),
                f"{r.get('statistic_name') or ''} {_fmt(r.get('statistic'), '.4g')}".strip(),
                _fmt(r.get("p_value"), ".2e"),
                _fmt(r.get("seconds"), ".2f"),
                _fmt(r.get("cpu_seconds"), ".2f"),
                _fmt(r.get("peak_rss_mib"), ".0f"),
            ]
        )
    return t


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


FALSE_CLAIM_NOTE = (
    "Never-marked models (3 architectures x 2 training recipes) against many keys per scheme, "
    "as issued, realigned to the key's own marked model (--reference, schemes that support it) "
    "and to the owner's model before the mark (--reference-unmarked): claims at alpha 1e-6 "
    "under the claim rule and at p < 1e-6, and the rate at alpha 0.05 with its exact 95 % "
    "interval (nnmark bench --false-claims; nnmark/bench/false_claims.py)."
)


def false_claim_table(results: Path) -> Table | None:
    """The false-claim section's table from RESULTS/false_claims.json (None when absent or not
    a summary of the expected form)."""
    import json

    path = results / "false_claims.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())["summary"]
        table = [
            ["scheme", "mode", "pairs", "rule 1e-6", "p < 1e-6", "FPR 0.05 [95 % CI]", "meets"]
        ]
        for row in summary.values():
            lo, hi = row["fpr_0.05_ci95"]
            table.append(
                [
                    str(row["scheme"]),
                    str(row["mode"]),
                    str(row["pairs"]),
                    str(row["claims_rule_1e-6"]),
                    str(row["claims_p_1e-6"]),
                    f"{row['fpr_0.05']:.3f} [{lo:.3f}, {hi:.3f}]",
                    "yes" if row["meets"] else "NO",
                ]
            )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return table
