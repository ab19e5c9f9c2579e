"""`nnmark report`: one self-contained HTML file (PNG plots embedded) and a Markdown summary.

Attack success, as WRT defines it (Lukas et al., "SoK: How Robust is Image Classification Deep
Neural Network Watermarking?", S&P 2022): the verdict turns not_found (or modified) while the
fidelity drops by less than a budget (default 5 points). For a composite mark the attack must
remove every part: the combined (Fisher) verdict and each mark's own verdict are negative.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from nnmark.bench.store import ResultStore
from nnmark.errors import NNMarkError
from nnmark.stats import DEFAULT_ALPHA

POSITIVE = ("found", "intact")
P_CAP = 40.0  # -log10 p is drawn up to this: a p of 1e-271 would flatten every other curve
#: The strength plot's panels of the schemes' statistics: title -> (statistics drawn there,
#: axis label, y range, a reference line). A statistic not listed gets a panel of its own.
PANELS: dict[str, tuple[tuple[str, ...], str, float, float, tuple[float, str] | None]] = {
    "BER": (("ber",), "bit error rate (0: intact)", -0.02, 0.62, (0.5, "chance")),
    "trigger accuracy, hash match": (
        ("trigger_accuracy", "hash_match", "mask_agreement"),
        "share intact (1: intact)",
        -0.04,
        1.08,
        None,
    ),
}


def _attacked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a marked model under a real attack."""
    return [
        r
        for r in rows
        if r.get("kind", "attack") == "attack" and r["scheme"] != "none" and r["attack"] != "none"
    ]


def succeeded(row: dict[str, Any], budget: float) -> bool:
    """The attack removed the mark (every part of a composite) at a fidelity cost < `budget`.

    A mark the unattacked model did not show (row["embedded"] False, set by `annotate`) cannot
    be removed: such rows never count as a success.
    """
    if row.get("error") or row.get("verdict") is None or row.get("verdict") in POSITIVE:
        return False
    if not row.get("embedded", True):
        return False
    if any(p.get("verdict") in POSITIVE for p in row.get("parts") or []):
        return False
    return usable(row, budget)


def usable(row: dict[str, Any], budget: float) -> bool:
    """The attack left a model within the fidelity budget (whatever the verdict)."""
    if row.get("error") or row.get("verdict") is None or row.get("fidelity_after") is None:
        return False
    return bool(row["fidelity_before"] - row["fidelity_after"] < budget)


def too_weak(rows: list[dict[str, Any]], label: str, budget: float) -> list[str]:
    """Attack families that never left a usable model at any strength (and so never removed
    the mark within the budget either): the mark did not survive them, the attack was too weak
    here to say; the headline does not count them as survived (issue 18)."""
    fams: dict[str, bool] = {}
    for r in _attacked(rows):
        if r["label"] == label and not r.get("error"):
            fams[r["attack"]] = fams.get(r["attack"], False) or usable(r, budget)
    return sorted(a for a, ok in fams.items() if not ok)


def annotate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the rows with `label` (the scheme, plus the task when there are several) and
    `embedded` (did the same model, unattacked, verify positive?)."""
    tasks = {(r.get("data"), r.get("arch")) for r in rows}
    out = []
    for r in rows:
        r = dict(r)
        task = f" [{str(r.get('data')).split(':')[0]}/{r.get('arch')}]" if len(tasks) > 1 else ""
        r["label"] = f"{r['scheme']}{task}"
        out.append(r)
    positive = {
        r["label"]
        for r in out
        if r.get("kind") == "attack" and r["attack"] == "none" and r.get("verdict") in POSITIVE
    }
    for r in out:
        r["embedded"] = r["label"] in positive
    return out


def _labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows if not rows or "label" in rows[0] else annotate(rows)


def evidence(p: float | None) -> float:
    """-log10 p, capped at P_CAP (0 for a missing p)."""
    if p is None:
        return 0.0
    return min(P_CAP, -math.log10(max(p, 1e-300)))


def _order(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    schemes = sorted({r["label"] for r in rows if r["scheme"] != "none"}, key=_scheme_key)
    families = sorted({r["attack"] for r in _attacked(rows)}, key=lambda a: ("+" in a, a))
    return schemes, families


def _scheme_key(name: str) -> tuple[bool, str]:
    return ("+" in name, name)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _alpha(rows: list[dict[str, Any]]) -> float:
    alphas = [r["alpha"] for r in rows if r.get("alpha")]
    return float(alphas[0]) if alphas else DEFAULT_ALPHA


def figures(rows: list[dict[str, Any]], budget: float) -> dict[str, str]:  # noqa: C901 (split pending, issue 17)
    """The report's plots as base64 PNGs (matplotlib, Agg backend: no display needed)."""
    rows = _labelled(rows)
    try:
        import matplotlib
    except ImportError:
        raise NNMarkError(
            "the report's plots need matplotlib: pip install 'nnmark[report]'"
        ) from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacked = [r for r in _attacked(rows) if not r.get("error")]
    schemes, families = _order(rows)
    alpha_line = -math.log10(_alpha(rows))
    cmap = plt.get_cmap("tab20")
    hues = [*range(0, 20, 2), *range(1, 20, 2)]  # the saturated colours first, then the pale
    colour = {s: cmap(hues[i % 20]) for i, s in enumerate(schemes)}
    figs: dict[str, str] = {}

    # 1. Success-within-budget matrix: the share of an attack's strengths that removed the mark.
    if schemes and families:
        grid = np.full((len(schemes), len(families)), np.nan)
        label = [["" for _ in families] for _ in schemes]
        for i, s in enumerate(schemes):
            for j, a in enumerate(families):
                cells = [r for r in attacked if r["label"] == s and r["attack"] == a]
                if cells and not cells[0]["embedded"]:
                    label[i][j] = "no mark"  # not found before the attack: grey, no verdict
                elif cells:
                    wins = sum(succeeded(r, budget) for r in cells)
                    grid[i, j] = wins / len(cells)
                    label[i][j] = f"{wins}/{len(cells)}"
        fig, ax = plt.subplots(
            figsize=(max(7.0, 0.52 * len(families) + 2.5), 0.42 * len(schemes) + 2.2)
        )
        shown = np.ma.masked_invalid(grid)
        im = ax.imshow(shown, cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
        ax.set_facecolor("#dddddd")  # grey: no result (failed or not run)
        ax.set_xticks(range(len(families)), families, rotation=55, ha="right", fontsize=8)
        ax.set_yticks(range(len(schemes)), schemes, fontsize=8)
        for i in range(len(schemes)):
            for j in range(len(families)):
                if label[i][j]:
                    dark = abs(grid[i, j] - 0.5) > 0.3
                    ax.text(
                        j,
                        i,
                        label[i][j],
                        ha="center",
                        va="center",
                        fontsize=7.5,
                        color="white" if dark else "black",
                    )
        ax.set_title(
            f"Attacks that remove the mark within a {budget * 100:g}-point fidelity budget\n"
            "(successful strengths / strengths run; red: removed, green: the mark survives)",
            fontsize=10,
        )
        fig.colorbar(im, ax=ax, fraction=0.025, label="share of strengths that succeed")
        figs["matrix"] = _png(fig)
        plt.close(fig)

    # 2. The scheme's statistic vs attack strength: one row per attack with a ladder, one
    #    column per statistic (BER, trigger accuracy, hash match, ...), then -log10 p.
    laddered = [
        a
        for a in families
        if any(r["attack"] == a and r.get("level") is not None for r in attacked)
    ]
    present = {r["statistic_name"] for r in attacked if r.get("statistic_name")}
    present.discard("fisher_chi2_p")  # a composite's statistic is its p: the last panel
    panels = {t: v[0] for t, v in PANELS.items() if present & set(v[0])}
    panels |= {n: (n,) for n in sorted(present - {x for v in PANELS.values() for x in v[0]})}
    if laddered:
        columns = [*panels, "p"]
        fig, axes = plt.subplots(
            len(laddered),
            len(columns),
            figsize=(3.3 * len(columns), 2.25 * len(laddered) + 0.9),
            squeeze=False,
        )
        for row_axes, a in zip(axes, laddered, strict=True):
            chain = "+" in a
            cells = [r for r in attacked if r["attack"] == a and r.get("level") is not None]
            option = next((r["strength_option"] for r in cells), None)
            ladder = dict(sorted((r["level"], r["strength"]) for r in cells))
            # Weak to strong reads left to right, also where strength falls (quantization bits).
            falling = not chain and len(ladder) > 1 and ladder[min(ladder)] > ladder[max(ladder)]
            for ax, stat in zip(row_axes, columns, strict=True):
                for s in schemes:
                    mine = [r for r in cells if r["label"] == s]
                    if stat != "p":
                        mine = [r for r in mine if r.get("statistic_name") in panels[stat]]
                    pts = sorted(
                        (
                            (r["level"] + 1) if chain else r["strength"],
                            evidence(r.get("p_value")) if stat == "p" else r.get("statistic"),
                        )
                        for r in mine
                        if stat == "p" or r.get("statistic") is not None
                    )
                    if pts:
                        ax.plot(
                            *zip(*pts, strict=True),
                            marker="o",
                            ms=3,
                            lw=1.2,
                            color=colour[s],
                            label=s,
                            ls="--" if "+" in s else "-",
                        )
                if stat == "p":
                    ax.axhline(alpha_line, color="grey", lw=0.8, ls="--")
                    ax.set_ylim(bottom=0)
                    ax.set_ylabel("-log10 p (dashed: alpha)", fontsize=7)
                elif stat not in PANELS:
                    ax.set_ylabel(stat, fontsize=7)  # a statistic this report does not know yet
                else:
                    _, axis, lo, hi, ref = PANELS[stat]
                    ax.set_ylim(lo, hi)
                    ax.set_ylabel(axis, fontsize=7)
                    if ref is not None:
                        ax.axhline(ref[0], color="grey", lw=0.8, ls=":")
                        ax.text(  # at the left edge, whichever way the x axis runs
                            0.02,
                            ref[0],
                            ref[1],
                            transform=ax.get_yaxis_transform(),
                            fontsize=6,
                            va="bottom",
                            color="grey",
                        )
                if chain:
                    ax.set_xticks([1, 2, 3])
                if falling:
                    ax.invert_xaxis()
                ax.set_title(f"{a}: {'-log10 p' if stat == 'p' else stat}", fontsize=8.5)
                ax.set_xlabel("level (weak to strong)" if chain else str(option), fontsize=7)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.25)
        handles: dict[str, Any] = {}
        for ax in axes.flat:
            for h, lb in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(lb, h)
        names = sorted(handles, key=_scheme_key)
        fig.legend(
            [handles[n] for n in names],
            names,
            loc="upper center",
            ncol=min(8, len(names)),
            fontsize=7.5,
            bbox_to_anchor=(0.5, 1.0),
        )
        fig.suptitle(
            "What is left of each mark vs the attack's strength: the scheme's statistic, then the "
            f"evidence (-log10 p, capped at {P_CAP:g})",
            fontsize=10,
            y=1.0 + 0.35 / (2.25 * len(laddered) + 0.9),
        )
        fig.tight_layout(
            rect=(
                0,
                0,
                1,
                1 - (0.25 + 0.15 * math.ceil(len(names) / 8)) / (2.25 * len(laddered) + 0.9),
            )
        )
        figs["strength"] = _png(fig)
        plt.close(fig)

    # 3. Fidelity vs robustness: every attacked cell; bottom-left of the lines = attack succeeded.
    if attacked:
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        for s in schemes:
            pts = [
                (100 * (r["fidelity_before"] - r["fidelity_after"]), evidence(r.get("p_value")))
                for r in attacked
                if r["label"] == s
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(
                    xs,
                    ys,
                    s=16,
                    alpha=0.75,
                    color=colour[s],
                    label=s,
                    marker="s" if "+" in s else "o",
                )
        ax.axvline(budget * 100, color="grey", ls="--", lw=0.8)
        ax.axhline(alpha_line, color="grey", ls="--", lw=0.8)
        drops = [100 * (r["fidelity_before"] - r["fidelity_after"]) for r in attacked]
        left = min(-2.0, min(drops) - 1)
        ax.set_xlim(left, max(budget * 100 + 5, max(drops) + 2))
        ax.set_ylim(bottom=-1)
        ax.fill_between([left, budget * 100], -1, alpha_line, color="#fde0dd", zorder=0)
        ax.set_xlabel("fidelity lost to the attack (points)")
        ax.set_ylabel("-log10 p after the attack")
        ax.set_title(
            "Fidelity vs robustness: a point in the pink band below the dashed line is an "
            "attack\nthat removed the mark within the budget",
            fontsize=10,
        )
        ax.legend(fontsize=7, ncol=2, loc="upper right")
        figs["tradeoff"] = _png(fig)
        plt.close(fig)

    # 4. Calibration: p-values of unmarked models verified with every key.
    cal = [r for r in rows if r.get("kind") == "calibration" and r.get("p_value") is not None]
    if cal:
        fig, (ax1, ax2) = plt.subplots(
            1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.4]}
        )
        ax1.hist([r["p_value"] for r in cal], bins=np.linspace(0, 1, 21), color="steelblue")
        ax1.set_xlabel("p-value of an unmarked model")
        ax1.set_ylabel("verifications")
        ax1.set_title("all schemes together", fontsize=9)
        names = sorted({r["label"] for r in cal}, key=_scheme_key)
        for i, s in enumerate(names):
            evs = [evidence(r["p_value"]) for r in cal if r["label"] == s]
            ax2.scatter([i] * len(evs), evs, s=14, color=colour.get(s, "k"), alpha=0.8)
        ax2.axhline(alpha_line, color="red", lw=0.8, ls="--")
        ax2.set_xticks(range(len(names)), names, rotation=50, ha="right", fontsize=8)
        ax2.set_ylabel("-log10 p")
        ax2.set_title("per scheme (red: alpha; a point above it is a false claim)", fontsize=9)
        false = sum(1 for r in cal if r.get("verdict") in POSITIVE)
        fig.suptitle(
            f"Calibration: {len(cal)} verifications of unmarked models with the schemes' keys, "
            f"{false} false claims at alpha = {_alpha(rows):g}",
            fontsize=10,
        )
        fig.tight_layout()
        figs["calibration"] = _png(fig)
        plt.close(fig)
    return figs


def headline(rows: list[dict[str, Any]], budget: float) -> dict[str, list[str]]:
    """Per scheme (and composite), the attacks that succeed within the budget at some strength,
    each with the weakest successful spec."""
    rows = _labelled(rows)
    out: dict[str, list[str]] = {}
    for s in _order(rows)[0]:
        wins: dict[str, str] = {}
        for r in sorted(
            (r for r in _attacked(rows) if r["label"] == s),
            key=lambda r: (r["attack"], r.get("level") or 0),
        ):
            if r["attack"] not in wins and succeeded(r, budget):
                wins[r["attack"]] = r["attack_spec"]
        out[s] = list(wins.values())
    return out


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def tables(rows: list[dict[str, Any]], budget: float) -> dict[str, list[list[str]]]:
    """The report's tables as lists of rows (first row: header), shared by HTML and Markdown."""
    rows = _labelled(rows)
    head = headline(rows, budget)
    clean = {
        r["label"]: r
        for r in rows
        if r.get("kind", "attack") == "attack" and r["attack"] == "none" and not r.get("error")
    }
    attacked = _attacked(rows)
    families = _order(rows)[1]
    out: dict[str, list[list[str]]] = {}
    t = [
        [
            "scheme",
            "kind",
            "fidelity marked (plain)",
            "p unattacked",
            "attacks that remove it within the budget (weakest strength)",
            "robust to",
            "attack too weak here (no strength within the budget)",
        ]
    ]
    for s, wins in head.items():
        c = clean.get(s)
        plain = clean.get(s.replace(s.split(" [")[0], "none", 1))
        kinds = {str(r["scheme_kind"]) for r in rows if r["label"] == s and r.get("scheme_kind")}
        fams = {r["attack"] for r in attacked if r["label"] == s and not r.get("error")}
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
                ", ".join(weak),
            ]
        )
    out["headline"] = t

    comps = [s for s in head if "+" in s]
    if comps:
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
        for s in comps:
            for a in families:
                cells = [
                    r
                    for r in attacked
                    if r["label"] == s and r["attack"] == a and not r.get("error")
                ]
                if not cells:
                    continue
                r = max(cells, key=lambda r: r.get("level") or 0)
                win = [c for c in cells if succeeded(c, budget)]
                shown = win[0] if win else r
                parts = "; ".join(
                    f"{p['scheme']} {p['verdict']} {p['p_value']:.1e}"
                    for p in shown.get("parts") or []
                )
                t.append(
                    [
                        s,
                        shown["attack_spec"],
                        _fmt(r.get("level")),
                        str(shown.get("verdict")),
                        parts,
                        f"{100 * (shown['fidelity_before'] - shown['fidelity_after']):.1f} pts",
                        "YES" if win else "no",
                    ]
                )
        out["composite"] = t

    cal = [r for r in rows if r.get("kind") == "calibration"]
    if cal:
        t = [
            [
                "scheme",
                "unmarked models",
                "false claims (at alpha)",
                "p < 0.05",
                "smallest p",
                "errors",
            ]
        ]
        for s in sorted({r["label"] for r in cal}, key=_scheme_key):
            ps = [r["p_value"] for r in cal if r["label"] == s and r.get("p_value") is not None]
            t.append(
                [
                    s,
                    str(len(ps)),
                    str(sum(1 for r in cal if r["label"] == s and r.get("verdict") in POSITIVE)),
                    str(sum(1 for p in ps if p < 0.05)),
                    _fmt(min(ps), ".2e") if ps else "",
                    str(sum(1 for r in cal if r["label"] == s and r.get("error"))),
                ]
            )
        out["calibration"] = t

    failed = [r for r in rows if r.get("error")]
    if failed:
        t = [["scheme", "attack", "error"]]
        t += [[r["label"], r.get("attack_spec", ""), r["error"]] for r in failed]
        out["failed"] = t
    return out


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
        return v.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(v) for v in t[0]) + " |", "|" + "---|" * len(t[0])]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in t[1:]]
    return "\n".join(lines)


def _machine_lines(meta: dict[str, Any]) -> list[str]:
    out = []
    for run in meta.get("runs", []):
        m = run.get("machine", {})
        out.append(
            f"`{run.get('command') or 'run_bench(...)'}` started {run.get('started', '?')}, "
            f"{run.get('seconds', '?')} s wall"
            + (f" ({run['cpu_seconds']} s CPU)" if run.get("cpu_seconds") is not None else "")
            + f", jobs={run.get('jobs')}, ray={run.get('ray')} on "
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


def write_report(  # noqa: C901 (split pending, issue 17)
    results: Path,
    html_out: Path,
    md_out: Path | None = None,
    budget: float | None = None,
) -> None:
    """Render RESULTS/results.jsonl into one HTML file (plots embedded) and a Markdown summary."""
    from nnmark.io import atomic_write_text

    store = ResultStore(results)
    rows = annotate(store.rows())
    if not rows:
        raise NNMarkError(f"{results}: no results.jsonl rows to report")
    skipped = [r for r in rows if r.get("skipped")]
    rows = [r for r in rows if not r.get("skipped")]
    skip_table = [["scheme", "cells skipped", "why (the scheme's own plan() refuses the task)"]]
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for r in skipped:
        reasons[(r["label"], r["skipped"])] += 1
    skip_table += [[lb, str(n), why] for (lb, why), n in sorted(reasons.items())]
    meta, spec = store.read_json("meta.json"), store.read_json("spec.json")
    if budget is None:
        budget = float(spec.get("budget", 0.05))
    figs = figures(rows, budget)
    tabs = tables(rows, budget)
    n_failed = sum(1 for r in rows if r.get("error"))
    n_cal = sum(1 for r in rows if r.get("kind") == "calibration")
    tasks = ", ".join(
        f"{t['data']} / {t['arch']} ({t['epochs']} epochs, "
        + (
            "the whole training split)"
            if t["fraction"] == 1
            else f"{t['fraction']:.0%} of the training split)"
        )
        for t in spec.get("tasks", [])
    )
    definition = (
        f"Attack success as WRT (Lukas et al., S&P 2022) defines it: the verdict turns not_found "
        f"(or modified) while the fidelity drops by less than {budget * 100:g} points. A composite "
        f"mark counts as removed only when its combined Fisher verdict and every part are negative."
    )
    calib_note = (
        "Calibration: unmarked models trained with the same recipe and other seeds, verified with "
        "every key as issued (the uncalibrated null each scheme states); a p-value below alpha is "
        "a false claim. A few models show little: benchmarks/calibration.py verifies >= 100 "
        "unmarked models against every scheme's key, with and without `nnmark calibrate`."
    )
    esc = html.escape
    sections = {
        "matrix": ("Which attacks remove each mark", None),
        "strength": ("The mark's statistic vs attack strength", None),
        "tradeoff": ("Fidelity vs robustness", None),
        "calibration": ("Calibration: unmarked models", "calibration"),
    }
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>nnmark benchmark</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1250px;margin:1.5em auto;color:#222;"
        "padding:0 1em}h1{margin-bottom:.2em}h2{border-bottom:2px solid #cde;padding-bottom:.2em;"
        "margin-top:1.6em}table{border-collapse:collapse;font-size:12.5px;margin:.6em 0}"
        "td,th{border:1px solid #ccd;padding:3px 7px;vertical-align:top}th{background:#e8eefc}"
        "tr:nth-child(even) td{background:#f7f9fd}.bad{color:#b00020;font-weight:600}"
        ".ok{color:#087f23;font-weight:600}img{max-width:100%;border:1px solid #eee}"
        ".note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}"
        "code{background:#f2f2f2;padding:0 3px}</style></head><body>",
        "<h1>nnmark benchmark</h1>",
        f"<p>{esc(tasks)}. {len(rows)} cells ({n_cal} calibration), <b>{n_failed} failed</b>"
        + (f", {len(skipped)} skipped (scheme does not support the task)" if skipped else "")
        + ".</p>",
        f"<p class='note'>{esc(definition)}</p>",
        "<h2>Headline: per scheme, the attacks that succeed within the budget</h2>",
        _html_table(tabs["headline"]),
    ]
    for key, (title, table) in sections.items():
        if key in figs:
            parts.append(
                f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{figs[key]}'>"
            )
        if table and table in tabs:
            parts.append(f"<p>{esc(calib_note)}</p>" + _html_table(tabs[table]))
        if key == "matrix" and "composite" in tabs:
            parts.append(
                "<h2>Composite marks: does any attack remove them all?</h2>"
                + _html_table(tabs["composite"])
            )
    claims = false_claim_table(results)
    if claims is not None:
        parts.append(
            "<h2>False claims over keys, architectures and recipes</h2>"
            f"<p>{esc(FALSE_CLAIM_NOTE)}</p>" + _html_table(claims)
        )
        png = results / "false_claims.png"
        if png.is_file():
            b64 = base64.b64encode(png.read_bytes()).decode()
            parts.append(
                f"<img alt='p-values of never-marked models' src='data:image/png;base64,{b64}'>"
            )
    if "failed" in tabs:
        parts.append("<h2>Failed cells</h2>" + _html_table(tabs["failed"]))
    if skipped:
        parts.append("<h2>Skipped: schemes that cannot mark a task</h2>" + _html_table(skip_table))
    all_rows = [
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
        all_rows.append(
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
    parts.append(
        f"<h2>All cells</h2><details><summary>{len(all_rows) - 1} rows</summary>"
        + _html_table(all_rows)
        + "</details>"
    )
    parts.append(
        "<h2>Machine and command</h2><ul>"
        + "".join(f"<li>{esc(x)}</li>" for x in _machine_lines(meta))
        + f"<li>report: <code>nnmark report {esc(str(results))}</code></li></ul></body></html>"
    )
    atomic_write_text(html_out, "\n".join(parts))

    if md_out is not None:
        md = [
            "# nnmark benchmark summary",
            "",
            f"{tasks}. {len(rows)} cells ({n_cal} calibration), {n_failed} failed"
            + (f", {len(skipped)} skipped (scheme does not support the task)" if skipped else "")
            + ".",
            "",
            definition,
            "",
            "## Headline: attacks that remove each mark within the budget",
            "",
            _md_table(tabs["headline"]),
        ]
        if "composite" in tabs:
            md += ["", "## Composite marks", "", _md_table(tabs["composite"])]
        if "calibration" in tabs:
            md += ["", "## Calibration", "", calib_note, "", _md_table(tabs["calibration"])]
        if claims is not None:
            md += [
                "",
                "## False claims over keys, architectures and recipes",
                "",
                FALSE_CLAIM_NOTE,
                "",
                _md_table(claims),
                "",
                "![p-values](false_claims.png)",
            ]
        if "failed" in tabs:
            md += ["", "## Failed cells", "", _md_table(tabs["failed"])]
        if skipped:
            md += ["", "## Skipped: schemes that cannot mark a task", "", _md_table(skip_table)]
        md += ["", "## Machine and command", ""] + [f"- {x}" for x in _machine_lines(meta)]
        md += [f"- report: `nnmark report {results}`"]
        atomic_write_text(md_out, "\n".join(md) + "\n")


FALSE_CLAIM_NOTE = (
    "Never-marked models (3 architectures x 2 training recipes) against many keys per scheme, "
    "as issued, realigned to the key's own marked model (--reference, schemes that support it) "
    "and to the owner's model before the mark (--reference-unmarked): claims at alpha 1e-6 "
    "under the claim rule and at p < 1e-6, and the rate at alpha 0.05 with its exact 95 % "
    "interval (nnmark bench --false-claims; nnmark/bench/false_claims.py)."
)


def false_claim_table(results: Path) -> list[list[str]] | None:
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
