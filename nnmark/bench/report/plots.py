"""The report's plots, one function each, as base64 PNGs (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from nnmark.bench.report.outcomes import (
    P_CAP,
    POSITIVE,
    alpha_of,
    attacked,
    evidence,
    labelled,
    order,
    scheme_key,
    succeeded,
)
from nnmark.errors import NNMarkError

__all__ = ["PANELS", "figures"]

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

Rows = list[dict[str, Any]]


class _Canvas:
    """What every plot shares: pyplot, the rows, the order and colour of the schemes."""

    def __init__(self, rows: Rows, budget: float) -> None:
        try:
            import matplotlib
        except ImportError:
            raise NNMarkError(
                "the report's plots need matplotlib: pip install 'nnmark[report]'"
            ) from None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.rows, self.budget = rows, budget
        self.attacked = [r for r in attacked(rows) if not r.get("error")]
        self.schemes, self.families = order(rows)
        self.alpha_line = -math.log10(alpha_of(rows))
        cmap = plt.get_cmap("tab20")
        hues = [*range(0, 20, 2), *range(1, 20, 2)]  # the saturated colours first, then the pale
        self.colour = {s: cmap(hues[i % 20]) for i, s in enumerate(self.schemes)}

    def png(self, fig: Any) -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        self.plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()


def figures(rows: Rows, budget: float) -> dict[str, str]:
    """The report's plots by name (matrix, strength, tradeoff, calibration), those with data."""
    c = _Canvas(labelled(rows), budget)
    out = {
        "matrix": _matrix(c),
        "strength": _strength(c),
        "tradeoff": _tradeoff(c),
        "calibration": _calibration(c),
    }
    return {name: png for name, png in out.items() if png is not None}


def _matrix(c: _Canvas) -> str | None:
    """Success within the budget: the share of an attack's strengths that removed the mark."""
    import numpy as np

    schemes, families = c.schemes, c.families
    if not schemes or not families:
        return None
    grid = np.full((len(schemes), len(families)), np.nan)
    label = [["" for _ in families] for _ in schemes]
    for i, s in enumerate(schemes):
        for j, a in enumerate(families):
            cells = [r for r in c.attacked if r["label"] == s and r["attack"] == a]
            if cells and not cells[0]["embedded"]:
                label[i][j] = "no mark"  # not found before the attack: grey, no verdict
            elif cells:
                wins = sum(succeeded(r, c.budget) for r in cells)
                grid[i, j] = wins / len(cells)
                label[i][j] = f"{wins}/{len(cells)}"
    fig, ax = c.plt.subplots(
        figsize=(max(7.0, 0.52 * len(families) + 2.5), 0.42 * len(schemes) + 2.2)
    )
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="RdYlGn_r", vmin=0, vmax=1, aspect="auto")
    ax.set_facecolor("#dddddd")  # grey: no result (failed or not run)
    ax.set_xticks(range(len(families)), families, rotation=55, ha="right", fontsize=8)
    ax.set_yticks(range(len(schemes)), schemes, fontsize=8)
    for i, j in np.ndindex(grid.shape):
        if label[i][j]:
            dark = abs(grid[i, j] - 0.5) > 0.3
            colour = "white" if dark else "black"
            ax.text(j, i, label[i][j], ha="center", va="center", fontsize=7.5, color=colour)
    ax.set_title(
        f"Attacks that remove the mark within a {c.budget * 100:g}-point fidelity budget\n"
        "(successful strengths / strengths run; red: removed, green: the mark survives)",
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, fraction=0.025, label="share of strengths that succeed")
    return c.png(fig)


def _strength(c: _Canvas) -> str | None:
    """The scheme's statistic vs attack strength: one row per attack with a ladder, one column
    per statistic (BER, trigger accuracy, hash match, ...), then -log10 p."""
    laddered = [
        a
        for a in c.families
        if any(r["attack"] == a and r.get("level") is not None for r in c.attacked)
    ]
    if not laddered:
        return None
    present = {r["statistic_name"] for r in c.attacked if r.get("statistic_name")}
    present.discard("fisher_chi2_p")  # a composite's statistic is its p: the last panel
    panels = {t: v[0] for t, v in PANELS.items() if present & set(v[0])}
    panels |= {n: (n,) for n in sorted(present - {x for v in PANELS.values() for x in v[0]})}
    columns = [*panels, "p"]
    height = 2.25 * len(laddered) + 0.9
    fig, axes = c.plt.subplots(
        len(laddered), len(columns), figsize=(3.3 * len(columns), height), squeeze=False
    )
    for row_axes, a in zip(axes, laddered, strict=True):
        cells = [r for r in c.attacked if r["attack"] == a and r.get("level") is not None]
        for ax, stat in zip(row_axes, columns, strict=True):
            _strength_panel(c, ax, a, cells, stat, panels.get(stat, ()))
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lb in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lb, h)
    names = sorted(handles, key=scheme_key)
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
        y=1.0 + 0.35 / height,
    )
    legend = (0.25 + 0.15 * math.ceil(len(names) / 8)) / height
    fig.tight_layout(rect=(0, 0, 1, 1 - legend))
    return c.png(fig)


def _strength_panel(
    c: _Canvas, ax: Any, attack: str, cells: Rows, stat: str, stats: tuple[str, ...]
) -> None:
    """One panel: every scheme's `stat` (or -log10 p) along `attack`'s ladder."""
    chain = "+" in attack
    option = next((r["strength_option"] for r in cells), None)
    ladder = dict(sorted((r["level"], r["strength"]) for r in cells))
    # Weak to strong reads left to right, also where strength falls (quantization bits).
    falling = not chain and len(ladder) > 1 and ladder[min(ladder)] > ladder[max(ladder)]
    for s in c.schemes:
        mine = [r for r in cells if r["label"] == s]
        if stat != "p":
            mine = [r for r in mine if r.get("statistic_name") in stats]
        pts = sorted(
            (
                (r["level"] + 1) if chain else r["strength"],
                evidence(r.get("p_value")) if stat == "p" else r.get("statistic"),
            )
            for r in mine
            if stat == "p" or r.get("statistic") is not None
        )
        if pts:
            ls = "--" if "+" in s else "-"
            xy = zip(*pts, strict=True)
            ax.plot(*xy, marker="o", ms=3, lw=1.2, color=c.colour[s], label=s, ls=ls)
    _strength_axis(c, ax, stat)
    if chain:
        ax.set_xticks([1, 2, 3])
    if falling:
        ax.invert_xaxis()
    ax.set_title(f"{attack}: {'-log10 p' if stat == 'p' else stat}", fontsize=8.5)
    ax.set_xlabel("level (weak to strong)" if chain else str(option), fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)


def _strength_axis(c: _Canvas, ax: Any, stat: str) -> None:
    """The y axis of a strength panel: evidence with alpha, a known statistic's range and
    reference line, or the bare name of a statistic this report does not know yet."""
    if stat == "p":
        ax.axhline(c.alpha_line, color="grey", lw=0.8, ls="--")
        ax.set_ylim(bottom=0)
        ax.set_ylabel("-log10 p (dashed: alpha)", fontsize=7)
        return
    if stat not in PANELS:
        ax.set_ylabel(stat, fontsize=7)
        return
    _, axis, lo, hi, ref = PANELS[stat]
    ax.set_ylim(lo, hi)
    ax.set_ylabel(axis, fontsize=7)
    if ref is not None:
        ax.axhline(ref[0], color="grey", lw=0.8, ls=":")
        where = ax.get_yaxis_transform()  # at the left edge, whichever way the x axis runs
        ax.text(0.02, ref[0], ref[1], transform=where, fontsize=6, va="bottom", color="grey")


def _tradeoff(c: _Canvas) -> str | None:
    """Fidelity vs robustness: every attacked cell; bottom-left of the lines = succeeded."""
    if not c.attacked:
        return None
    fig, ax = c.plt.subplots(figsize=(7.5, 4.5))
    for s in c.schemes:
        pts = [
            (100 * (r["fidelity_before"] - r["fidelity_after"]), evidence(r.get("p_value")))
            for r in c.attacked
            if r["label"] == s
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            marker = "s" if "+" in s else "o"
            ax.scatter(xs, ys, s=16, alpha=0.75, color=c.colour[s], label=s, marker=marker)
    budget = c.budget * 100
    ax.axvline(budget, color="grey", ls="--", lw=0.8)
    ax.axhline(c.alpha_line, color="grey", ls="--", lw=0.8)
    drops = [100 * (r["fidelity_before"] - r["fidelity_after"]) for r in c.attacked]
    left = min(-2.0, min(drops) - 1)
    ax.set_xlim(left, max(budget + 5, max(drops) + 2))
    ax.set_ylim(bottom=-1)
    ax.fill_between([left, budget], -1, c.alpha_line, color="#fde0dd", zorder=0)
    ax.set_xlabel("fidelity lost to the attack (points)")
    ax.set_ylabel("-log10 p after the attack")
    ax.set_title(
        "Fidelity vs robustness: a point in the pink band below the dashed line is an "
        "attack\nthat removed the mark within the budget",
        fontsize=10,
    )
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    return c.png(fig)


def _calibration(c: _Canvas) -> str | None:
    """p-values of unmarked models verified with every key."""
    import numpy as np

    cal = [r for r in c.rows if r.get("kind") == "calibration" and r.get("p_value") is not None]
    if not cal:
        return None
    fig, (ax1, ax2) = c.plt.subplots(
        1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.4]}
    )
    ax1.hist([r["p_value"] for r in cal], bins=np.linspace(0, 1, 21), color="steelblue")
    ax1.set_xlabel("p-value of an unmarked model")
    ax1.set_ylabel("verifications")
    ax1.set_title("all schemes together", fontsize=9)
    names = sorted({r["label"] for r in cal}, key=scheme_key)
    for i, s in enumerate(names):
        evs = [evidence(r["p_value"]) for r in cal if r["label"] == s]
        ax2.scatter([i] * len(evs), evs, s=14, color=c.colour.get(s, "k"), alpha=0.8)
    ax2.axhline(c.alpha_line, color="red", lw=0.8, ls="--")
    ax2.set_xticks(range(len(names)), names, rotation=50, ha="right", fontsize=8)
    ax2.set_ylabel("-log10 p")
    ax2.set_title("per scheme (red: alpha; a point above it is a false claim)", fontsize=9)
    false = sum(1 for r in cal if r.get("verdict") in POSITIVE)
    fig.suptitle(
        f"Calibration: {len(cal)} verifications of unmarked models with the schemes' keys, "
        f"{false} false claims at alpha = {alpha_of(c.rows):g}",
        fontsize=10,
    )
    fig.tight_layout()
    return c.png(fig)
