"""`nnmark report`: one self-contained HTML file (PNG plots embedded) and a Markdown summary.

Attack success, as WRT (Lukas et al., S&P 2022) defines it: the verdict turns not_found (or
modified) while the fidelity drops by less than the budget (default 5 points).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from nnmark.bench.runner import read_rows
from nnmark.errors import NNMarkError

POSITIVE = ("found", "intact")


def succeeded(row: dict[str, Any], budget: float) -> bool:
    """The attack removed the mark while costing less than `budget` fidelity."""
    return (
        not row.get("error")
        and row.get("verdict") not in POSITIVE
        and row["fidelity_before"] - row["fidelity_after"] < budget
    )


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figures(rows: list[dict[str, Any]], budget: float) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    attacked = [
        r for r in rows if not r.get("calibration") and r["scheme"] != "none" and not r.get("error")
    ]
    schemes = sorted({r["scheme"] for r in attacked})
    attacks = sorted({r["attack"].split(":")[0] for r in attacked if r["attack"] != "none"})
    figs: dict[str, str] = {}

    # Success-within-budget matrix: fraction of an attack's strengths that removed the mark.
    grid = np.full((len(schemes), len(attacks)), np.nan)
    for i, s in enumerate(schemes):
        for j, a in enumerate(attacks):
            cells = [r for r in attacked if r["scheme"] == s and r["attack"].split(":")[0] == a]
            if cells:
                grid[i, j] = np.mean([succeeded(r, budget) for r in cells])
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(attacks) + 2), 0.5 * len(schemes) + 1.8))
    im = ax.imshow(grid, cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right")
    ax.set_yticks(range(len(schemes)), schemes)
    for i in range(len(schemes)):
        for j in range(len(attacks)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=7)
    ax.set_title(f"Attack success within a {budget:.0%} fidelity budget (share of strengths)")
    fig.colorbar(im, ax=ax, fraction=0.03)
    figs["matrix"] = _png(fig)
    plt.close(fig)

    # Statistic vs strength, one panel per laddered attack.
    laddered = sorted(
        {r["attack"].split(":")[0] for r in attacked if r.get("ladder_value") is not None}
    )
    if laddered:
        fig, axes = plt.subplots(1, len(laddered), figsize=(3.2 * len(laddered), 3), squeeze=False)
        for ax, a in zip(axes[0], laddered):
            for s in schemes:
                pts = sorted(
                    (r["ladder_value"], -np.log10(max(r["p_value"], 1e-300)))
                    for r in attacked
                    if r["scheme"] == s
                    and r["attack"].split(":")[0] == a
                    and r.get("ladder_value") is not None
                )
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=s)
            ax.axhline(6, color="grey", lw=0.8, ls="--")
            ax.set_title(a)
            ax.set_xlabel("strength")
            ax.set_ylabel("-log10 p")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("Evidence left after each attack (dashed: alpha = 1e-6)")
        figs["strength"] = _png(fig)
        plt.close(fig)

    # Fidelity vs robustness.
    fig, ax = plt.subplots(figsize=(6, 4))
    for s in schemes:
        pts = [
            (r["fidelity_before"] - r["fidelity_after"], -np.log10(max(r["p_value"], 1e-300)))
            for r in attacked
            if r["scheme"] == s
        ]
        if pts:
            ax.scatter([a for a, _ in pts], [b for _, b in pts], s=14, label=s, alpha=0.7)
    ax.axvline(budget, color="grey", ls="--", lw=0.8)
    ax.axhline(6, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("fidelity lost to the attack")
    ax.set_ylabel("-log10 p after the attack")
    ax.set_title("Fidelity vs robustness (bottom-left: attack succeeded)")
    ax.legend(fontsize=7)
    figs["tradeoff"] = _png(fig)
    plt.close(fig)

    # Calibration: unmarked models' p-values.
    cal = [r["p_value"] for r in rows if r.get("calibration") and r.get("p_value") is not None]
    if cal:
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(cal, bins=[i / 20 for i in range(21)], color="steelblue")
        ax.set_xlabel("p-value of an unmarked model under each scheme's key")
        ax.set_title(
            f"Calibration: {len(cal)} unmarked verifications, {sum(p < 1e-6 for p in cal)} false claims"
        )
        figs["calibration"] = _png(fig)
        plt.close(fig)
    return figs


def headline(rows: list[dict[str, Any]], budget: float) -> dict[str, list[str]]:
    """Per scheme, the attacks that succeed within the budget at some strength."""
    out: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        if r.get("calibration") or r["scheme"] == "none" or r["attack"] == "none":
            continue
        out.setdefault(r["scheme"], [])
        if succeeded(r, budget) and r["attack"] not in out[r["scheme"]]:
            out[r["scheme"]].append(r["attack"])
    return dict(out)


def write_report(
    results: Path,
    html_out: Path,
    md_out: Path | None = None,
    budget: float = 0.05,
    command: str = "",
) -> None:
    from nnmark.io import atomic_write_text

    rows = read_rows(results)
    if not rows:
        raise NNMarkError(f"{results}: no results.jsonl rows to report")
    figs = _figures(rows, budget)
    head = headline(rows, budget)
    failed = [r for r in rows if r.get("error")]
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>nnmark benchmark</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#eef}.bad{color:#b00}.ok{color:#080}img{max-width:100%}</style></head><body>",
        f"<h1>nnmark benchmark</h1><p>{len(rows)} rows, {len(failed)} failed cells. {esc(command)}</p>",
        f"<p>Attack success (WRT): the verdict turns not_found / modified while fidelity drops by less "
        f"than {budget:.0%}.</p><h2>Which attacks remove each mark within the budget</h2><table>"
        "<tr><th>scheme</th><th>successful attacks</th></tr>",
    ]
    for s, attacks in sorted(head.items()):
        cls, text = (
            ("bad", ", ".join(attacks)) if attacks else ("ok", "none: survives every attack")
        )
        parts.append(f"<tr><td>{esc(s)}</td><td class='{cls}'>{esc(text)}</td></tr>")
    parts.append("</table>")
    titles = {
        "matrix": "Success matrix",
        "strength": "Statistic vs attack strength",
        "tradeoff": "Fidelity vs robustness",
        "calibration": "Calibration of unmarked models",
    }
    for k, title in titles.items():
        if k in figs:
            parts.append(
                f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{figs[k]}'>"
            )
    parts.append(
        "<h2>All cells</h2><table><tr><th>scheme</th><th>attack</th><th>fidelity before"
        "</th><th>after</th><th>verdict</th><th>p-value</th><th>s</th><th>error</th></tr>"
    )
    for r in rows:
        if r.get("calibration"):
            continue
        fb, fa = r.get("fidelity_before"), r.get("fidelity_after")
        p = r.get("p_value")
        parts.append(
            f"<tr><td>{esc(r['scheme'])}</td><td>{esc(r['attack'])}</td>"
            f"<td>{'' if fb is None else f'{fb:.4f}'}</td><td>{'' if fa is None else f'{fa:.4f}'}</td>"
            f"<td>{esc(str(r.get('verdict', '')))}</td><td>{'' if p is None else f'{p:.2e}'}</td>"
            f"<td>{r.get('seconds', '')}</td><td class='bad'>{esc(r.get('error') or '')}</td></tr>"
        )
    parts.append("</table></body></html>")
    atomic_write_text(html_out, "\n".join(parts))
    if md_out is not None:
        lines = [
            f"# nnmark benchmark summary\n\n{command}\n",
            f"Attack success: verdict not_found while fidelity drops < {budget:.0%}.\n",
            "| scheme | attacks that succeed within the budget |",
            "|---|---|",
        ]
        lines += [f"| {s} | {', '.join(a) or 'none'} |" for s, a in sorted(head.items())]
        cal = [r for r in rows if r.get("calibration")]
        lines.append(
            f"\nCalibration: {len(cal)} unmarked verifications, "
            f"{sum(1 for r in cal if r.get('verdict') in POSITIVE)} false claims."
        )
        lines.append(f"\nCells: {len(rows)} rows, {len(failed)} failed.")
        atomic_write_text(md_out, "\n".join(lines) + "\n")


def rows_json(results: Path) -> str:
    return json.dumps(read_rows(results))
