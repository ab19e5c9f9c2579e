"""The report's plots, one function each, as base64 PNGs (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import base64
import io
import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from nnmark.api import claim_threshold
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
from nnmark.keys import DEFAULT_KDF, derivation_seconds

__all__ = ["MAX_DRAWN", "PANELS", "figures", "figures_and_notes"]

# results.jsonl may come from someone else, and every plot grew with the square of the names in
# it: 15.7 KB of rows each naming its own attack and statistic drew 40 x 41 strength panels
# (120 s, 2 GB), 89 KB of rows each its own scheme and attack a 300 x 300 heatmap (39 s, 6 GB;
# red team, session 27). Each figure draws at most these many names, chosen before anything is
# allocated (the most rows first, the earlier on a tie); the report says how many it left out.
# A real sweep (benchmarks/quick) has 16 schemes, 29 attacks (17 with a ladder) and 5 statistics.
#: Schemes or attack families one figure draws (the matrix's rows and columns, the legends).
MAX_DRAWN = 64
#: Rows (attacks with a ladder) and statistic panels per row of the strength plot (then -log10 p).
MAX_STRENGTH_ATTACKS = 32
MAX_STRENGTH_STATISTICS = 8
#: Panels of the strength plot in all (fewer rows where there are many columns): 32 x 9 panels
#: still took 35 s and 590 MB to draw; benchmarks/quick draws 17 x 4 (its whole report: 14 s).
MAX_STRENGTH_PANELS = 128
#: Characters of a name drawn (a tick label, a title, a legend entry): with tight bounding
#: boxes a long name widened the saved image to fit it.
MAX_LABEL = 40
#: Pixels of a figure's longer side at most (the dpi drops below 100 beyond).
MAX_PIXELS = 8000

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
        # grouped once: the plots look rows up by (scheme, attack), never by scanning them all
        self.cells: dict[tuple[str, str], Rows] = defaultdict(list)
        for r in self.attacked:
            self.cells[(r["label"], r["attack"])].append(r)
        self.per_scheme = Counter(r["label"] for r in self.attacked)
        self.per_family = Counter(r["attack"] for r in self.attacked)
        self.drawn, self.undrawn = _top(self.schemes, self.per_scheme, MAX_DRAWN)
        self.notes: dict[str, str] = {}
        # where a claim starts: alpha and the forgery-cost bound of one mark at the default KDF
        # (alpha alone drew cells between 1e-6 and 1.6e-12 as survivals where the tables said
        # not_found; usability review, session 38). A composite's bound depends on its parts'
        # p-values (api.search_seconds), not on the combined p alone: the captions say so
        # (diff review, session 38)
        threshold = claim_threshold(alpha_of(rows), derivation_seconds(DEFAULT_KDF))
        self.claim_line = -math.log10(threshold)
        cmap = plt.get_cmap("tab20")
        hues = [*range(0, 20, 2), *range(1, 20, 2)]  # the saturated colours first, then the pale
        self.colour = {s: cmap(hues[i % 20]) for i, s in enumerate(self.schemes)}

    def png(self, fig: Any) -> str:
        buf = io.BytesIO()
        dpi = min(100.0, MAX_PIXELS / max(fig.get_size_inches()))
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        self.plt.close(fig)
        return base64.b64encode(buf.getvalue()).decode()


def figures(rows: Rows, budget: float) -> dict[str, str]:
    """The report's plots by name (matrix, strength, tradeoff, calibration), those with data."""
    return figures_and_notes(rows, budget)[0]


def figures_and_notes(rows: Rows, budget: float) -> tuple[dict[str, str], dict[str, str]]:
    """`figures`, and by name a note for each figure that left names out ("3 more schemes not
    drawn ..."): each draws at most MAX_DRAWN schemes and families (red team, session 27)."""
    c = _Canvas(labelled(rows), budget)
    out = {
        "matrix": _matrix(c),
        "strength": _strength(c),
        "tradeoff": _tradeoff(c),
        "calibration": _calibration(c),
    }
    figs = {name: png for name, png in out.items() if png is not None}
    return figs, {name: note for name, note in c.notes.items() if name in figs}


def _top(names: Sequence[str], counts: Counter[str], cap: int) -> tuple[list[str], int]:
    """At most `cap` of `names`, those with the most rows (the earlier on a tie), in their order,
    and how many were left out."""
    if len(names) <= cap:
        return list(names), 0
    rank = {n: i for i, n in enumerate(names)}
    keep = set(sorted(names, key=lambda n: (-counts[n], rank[n]))[:cap])
    return [n for n in names if n in keep], len(names) - cap


def _short(name: str) -> str:
    """A name as drawn: at most MAX_LABEL characters."""
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "\u2026"


def _left_out(counts: dict[str, int]) -> str | None:
    """'3 more schemes and 40 more attacks not drawn (those with the fewest rows)', or None."""
    parts = [f"{n} more {what}" for what, n in counts.items() if n]
    if not parts:
        return None
    return " and ".join(parts) + " not drawn (those with the fewest rows)"


def _matrix(c: _Canvas) -> str | None:
    """Success within the budget: the share of an attack's strengths that removed the mark."""
    import numpy as np

    schemes = c.drawn
    families, undrawn = _top(c.families, c.per_family, MAX_DRAWN)
    if not schemes or not families:
        return None
    note = _left_out({"schemes": c.undrawn, "attacks": undrawn})
    if note:
        c.notes["matrix"] = note
    grid = np.full((len(schemes), len(families)), np.nan)
    label = [["" for _ in families] for _ in schemes]
    for i, s in enumerate(schemes):
        for j, a in enumerate(families):
            cells = c.cells.get((s, a), [])
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
    xlabels, ylabels = [_short(a) for a in families], [_short(s) for s in schemes]
    ax.set_xticks(range(len(families)), xlabels, rotation=55, ha="right", fontsize=8)
    ax.set_yticks(range(len(schemes)), ylabels, fontsize=8)
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
    drawn = set(c.drawn)
    ladders: dict[str, dict[str, Rows]] = defaultdict(lambda: defaultdict(list))
    for r in c.attacked:
        if r.get("level") is not None and r["label"] in drawn:
            ladders[r["attack"]][r["label"]].append(r)
    per_ladder = Counter({a: sum(map(len, by.values())) for a, by in ladders.items()})
    if not ladders:
        return None
    per_stat = Counter(
        r["statistic_name"] for r in c.attacked if r.get("statistic_name") and r["label"] in drawn
    )
    per_stat.pop("fisher_chi2_p", None)  # a composite's statistic is its p: the last panel
    panels = {t: v[0] for t, v in PANELS.items() if per_stat.keys() & set(v[0])}
    others = sorted(per_stat.keys() - {x for v in PANELS.values() for x in v[0]})
    kept, left = _top(others, per_stat, max(0, MAX_STRENGTH_STATISTICS - len(panels)))
    panels |= {n: (n,) for n in kept}
    columns = [*panels, "p"]
    most = min(MAX_STRENGTH_ATTACKS, max(1, MAX_STRENGTH_PANELS // len(columns)))
    laddered, undrawn = _top([a for a in c.families if a in ladders], per_ladder, most)
    note = _left_out({"schemes": c.undrawn, "attacks": undrawn, "statistics": left})
    if note:
        c.notes["strength"] = note
    height = 2.25 * len(laddered) + 0.9
    fig, axes = c.plt.subplots(
        len(laddered), len(columns), figsize=(3.3 * len(columns), height), squeeze=False
    )
    for row_axes, a in zip(axes, laddered, strict=True):
        for ax, stat in zip(row_axes, columns, strict=True):
            _strength_panel(c, ax, a, ladders[a], stat, panels.get(stat, ()))
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
    c: _Canvas, ax: Any, attack: str, by_scheme: dict[str, Rows], stat: str, stats: tuple[str, ...]
) -> None:
    """One panel: every drawn scheme's `stat` (or -log10 p) along `attack`'s ladder."""
    chain = "+" in attack
    cells = [r for mine in by_scheme.values() for r in mine]
    option = next((r["strength_option"] for r in cells), None)
    ladder = dict(sorted((r["level"], r["strength"]) for r in cells))
    # Weak to strong reads left to right, also where strength falls (quantization bits).
    falling = not chain and len(ladder) > 1 and ladder[min(ladder)] > ladder[max(ladder)]
    for s in c.drawn:
        mine = by_scheme.get(s, [])
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
            ax.plot(*xy, marker="o", ms=3, lw=1.2, color=c.colour[s], label=_short(s), ls=ls)
    _strength_axis(c, ax, stat)
    if chain:
        ax.set_xticks([1, 2, 3])
    if falling:
        ax.invert_xaxis()
    ax.set_title(f"{_short(attack)}: {'-log10 p' if stat == 'p' else _short(stat)}", fontsize=8.5)
    ax.set_xlabel("level (weak to strong)" if chain else _short(str(option)), fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)


def _strength_axis(c: _Canvas, ax: Any, stat: str) -> None:
    """The y axis of a strength panel: evidence with alpha, a known statistic's range and
    reference line, or the bare name of a statistic this report does not know yet."""
    if stat == "p":
        ax.axhline(c.claim_line, color="grey", lw=0.8, ls="--")
        ax.set_ylim(bottom=0)
        # short: a longer label outgrew the panel's height and ran into the next row's (review,
        # session 39); the dashed line is named in the section's caption (render.STRENGTH_NOTE)
        ax.set_ylabel("-log10 p", fontsize=7)
        return
    if stat not in PANELS:
        ax.set_ylabel(_short(stat), fontsize=7)
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
    by_scheme: dict[str, Rows] = defaultdict(list)
    for r in c.attacked:
        by_scheme[r["label"]].append(r)
    note = _left_out({"schemes": c.undrawn})
    if note:
        c.notes["tradeoff"] = note
    for s in c.drawn:
        pts = [
            (100 * (r["fidelity_before"] - r["fidelity_after"]), evidence(r.get("p_value")))
            for r in by_scheme.get(s, [])
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            marker = "s" if "+" in s else "o"
            colour = c.colour[s]
            ax.scatter(xs, ys, s=16, alpha=0.75, color=colour, label=_short(s), marker=marker)
    budget = c.budget * 100
    ax.axvline(budget, color="grey", ls="--", lw=0.8)
    ax.axhline(c.claim_line, color="grey", ls="--", lw=0.8)
    drops = [100 * (r["fidelity_before"] - r["fidelity_after"]) for r in c.attacked]
    left = min(-2.0, min(drops) - 1)
    ax.set_xlim(left, max(budget + 5, max(drops) + 2))
    ax.set_ylim(bottom=-1)
    ax.fill_between([left, budget], -1, c.claim_line, color="#fde0dd", zorder=0)
    ax.set_xlabel("fidelity lost to the attack (points)")
    ax.set_ylabel("-log10 p after the attack")
    ax.set_title(
        "Fidelity vs robustness: a point in the pink band below the dashed line (where one mark's "
        "claim starts:\nalpha and the forgery-cost bound; a composite's, squares, depends on its "
        "parts) removed the mark within the budget",
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
    by_scheme: dict[str, list[float]] = defaultdict(list)
    for r in cal:
        by_scheme[r["label"]].append(evidence(r["p_value"]))
    everyone = sorted(by_scheme, key=scheme_key)
    names, undrawn = _top(everyone, Counter({s: len(v) for s, v in by_scheme.items()}), MAX_DRAWN)
    note = _left_out({"schemes": undrawn})
    if note:
        c.notes["calibration"] = note.replace("not drawn", "not drawn on the right")
    for i, s in enumerate(names):
        evs = by_scheme[s]
        ax2.scatter([i] * len(evs), evs, s=14, color=c.colour.get(s, "k"), alpha=0.8)
    ax2.axhline(c.claim_line, color="red", lw=0.8, ls="--")
    ax2.set_xticks(
        range(len(names)), [_short(s) for s in names], rotation=50, ha="right", fontsize=8
    )
    ax2.set_ylabel("-log10 p")
    ax2.set_title(
        "per scheme (red: where a claim starts; a point above it is a false claim)", fontsize=9
    )
    false = sum(1 for r in cal if r.get("verdict") in POSITIVE)
    fig.suptitle(
        f"Calibration: {len(cal)} verifications of unmarked models with the schemes' keys, "
        f"{false} false claims (alpha {alpha_of(c.rows):g} and the forgery-cost bound)",
        fontsize=10,
    )
    fig.tight_layout()
    return c.png(fig)
