"""The report's tables as lists of rows (first row: the header), shared by HTML and Markdown."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from nnmark.bench.report.outcomes import (
    POSITIVE,
    adaptive,
    attacked,
    cost,
    headline,
    labelled,
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

#: Rows a summary table (headline, composite, calibration, failed) and the all-cells table show
#: at most, the rest counted in a last row: results.jsonl may come from someone else (red team,
#: session 27). A real sweep (benchmarks/quick): 16 schemes, 1,064 cells. The tables group the
#: rows once (by scheme, by scheme and attack): scanning them per scheme and attack grew with
#: the cube of the names in the file.
MAX_TABLE_ROWS = 1_000
MAX_CELLS_ROWS = 20_000


def _capped(t: Table, cap: int, more: int = 0) -> Table:
    """`t` (header first) with at most `cap` rows below the header, then one saying how many
    more (`more`: those already left out before `t` was built) were not shown."""
    left = max(0, len(t) - 1 - cap) + more
    if not left:
        return t
    return [*t[: cap + 1], [f"({left} more rows not shown)"] + [""] * (len(t[0]) - 1)]


def _by_label(rows: Rows) -> dict[str, Rows]:
    out: dict[str, Rows] = defaultdict(list)
    for r in rows:
        out[r["label"]].append(r)
    return out


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
    hit = _by_label(attacked(rows))
    kinds_of: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.get("scheme_kind"):
            kinds_of[r["label"]].add(str(r["scheme_kind"]))
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
        mine = hit.get(s, [])
        fams = {r["attack"] for r in mine if not r.get("error")}
        weak: list[str] = []
        least: dict[str, float] = {}
        if c is None:
            removed, robust = "unattacked model failed", ""
        elif c.get("verdict") not in POSITIVE:
            removed, robust = "mark not found before any attack", ""
        else:
            weak = too_weak(mine, s, budget)
            least = _least_costs(mine) if weak else {}
            removed = ", ".join(wins) or (
                "none: survives every attack" if not weak else "none within the budget"
            )
            robust = f"{len(fams) - len(wins) - len(weak)}/{len(fams)} attacks"
        fid = _fmt(c["fidelity_after"]) if c else "failed"
        marking = _marking_cost(c, plain)
        if marking is not None and marking > budget:
            # a mark that costs more than a thief may lose "survived" nothing worth having:
            # the headline says so beside the verdict (a 3-epoch recipe at 12 points read
            # "survives every attack"; walkthrough, session 36)
            removed += f" (the mark itself costs {100 * marking:.2f} pts, past the budget)"
        t.append(
            [
                s,
                ", ".join(sorted(kinds_of[s])),
                fid + (f" ({_fmt(plain['fidelity_after'])})" if plain else ""),
                _fmt(c.get("p_value"), ".2e") if c else "",
                removed,
                robust,
                ", ".join(_with_cost(least, a) for a in weak) if weak else "",
                _adaptive_cell(mine, budget, weak) if robust else "",
            ]
        )
    return _capped(t, MAX_TABLE_ROWS)


def _marking_cost(marked: dict[str, Any] | None, plain: dict[str, Any] | None) -> float | None:
    """The fidelity the mark cost: the plain model's (same task, recipe and seed) less the
    marked one's, both unattacked; None where either is missing."""
    if marked is None or plain is None:
        return None
    a, b = plain.get("fidelity_after"), marked.get("fidelity_after")
    return None if a is None or b is None else float(a) - float(b)


def _least_costs(mine: Rows) -> dict[str, float]:
    """Per attack family, the smallest fidelity loss it cost (`outcomes.least_cost` for every
    family of one scheme's attacked rows in one pass)."""
    least: dict[str, float] = {}
    for r in mine:
        if r.get("error") or r.get("fidelity_after") is None or r.get("fidelity_before") is None:
            continue
        c = cost(r)
        if r["attack"] not in least or c < least[r["attack"]]:
            least[r["attack"]] = c
    return least


def _with_cost(least: dict[str, float], family: str) -> str:
    """'family (6.10 pts)': by how much the attack missed the budget at its mildest."""
    c = least.get(family)
    return family if c is None else f"{family} ({100 * c:.2f} pts)"


def _adaptive_cell(mine: Rows, budget: float, weak: list[str]) -> str:
    """k/n of the adaptive attack families run on one scheme (`mine`: its attacked rows) that
    the mark survived (within the budget at some strength and never removed), with those that
    removed it, or 'none run'."""
    families = {r["attack"] for r in mine}
    run = sorted(a for a in families if adaptive(a))
    if not run:
        return "none run"
    removed = sorted({r["attack"] for r in mine if r["attack"] in run and succeeded(r, budget)})
    survived = [f for f in run if f not in removed and f not in weak]
    note = f" (removed by {', '.join(removed)})" if removed else ""
    return f"{len(survived)}/{len(run)}{note}"


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
    schemes, families = order(rows)
    rank_s = {s: i for i, s in enumerate(schemes)}
    rank_f = {a: i for i, a in enumerate(families)}
    groups: dict[tuple[str, str], Rows] = defaultdict(list)
    for r in hit:
        if "+" in r["label"] and not r.get("error"):
            groups[(r["label"], r["attack"])].append(r)
    for s, a in sorted(groups, key=lambda k: (rank_s[k[0]], rank_f[k[1]])):
        cells = groups[(s, a)]
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
                f"{lost:.2f} pts",
                "YES" if win else "no",
            ]
        )
    return _capped(t, MAX_TABLE_ROWS)


def calibration_table(rows: Rows) -> Table:
    """Per scheme: unmarked models verified with its keys, false claims, the smallest p."""
    cal = [r for r in rows if r.get("kind") == "calibration"]
    t = [["scheme", "unmarked models", "false claims", "p < 0.05", "smallest p", "errors"]]
    by_label = _by_label(cal)
    for s in sorted(by_label, key=scheme_key):
        mine = by_label[s]
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
    return _capped(t, MAX_TABLE_ROWS)


def failed_table(rows: Rows) -> Table:
    t = [["scheme", "attack", "error"]]
    t += [[r["label"], r.get("attack_spec", ""), r["error"]] for r in rows if r.get("error")]
    return _capped(t, MAX_TABLE_ROWS)


def skip_table(skipped: Rows) -> Table:
    """Cells not run because their scheme cannot mark the task's model, counted by reason."""
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for r in skipped:
        reasons[(r["label"], r["skipped"])] += 1
    t = [["scheme", "cells skipped", "why (the scheme's own plan() refuses the task)"]]
    t += [[lb, str(n), why] for (lb, why), n in sorted(reasons.items())]
    return _capped(t, MAX_TABLE_ROWS)


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
    shown = [r for r in rows if r.get("kind") != "calibration" and not r.get("error")]
    for r in shown[:MAX_CELLS_ROWS]:
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
    return _capped(t, MAX_CELLS_ROWS, more=max(0, len(shown) - MAX_CELLS_ROWS))


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

    from nnmark.bench.store import MAX_JSON_BYTES
    from nnmark.errors import NNMarkError

    path = results / "false_claims.json"
    if not path.is_file():
        return None
    with path.open("rb") as fh:  # read whole, unbounded, before (red team, session 27)
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise NNMarkError(f"{path}: more than {MAX_JSON_BYTES} bytes is too large")
    try:
        summary = json.loads(data)["summary"]
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
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return _capped(table, MAX_TABLE_ROWS)
