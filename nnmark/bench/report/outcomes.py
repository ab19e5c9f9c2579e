"""What the rows say: did an attack remove a mark within the fidelity budget, which attacks a
mark survives, and the evidence (-log10 p) the plots draw.

Attack success, as WRT defines it (Lukas et al., "SoK: How Robust is Image Classification Deep
Neural Network Watermarking?", S&P 2022): the verdict turns not_found (or modified) while the
fidelity drops by less than a budget (default 5 points). For a composite mark the attack must
remove every part: the combined (Fisher) verdict and each mark's own verdict are negative.
"""

from __future__ import annotations

import math
from typing import Any

from nnmark.stats import DEFAULT_ALPHA

POSITIVE = ("found", "intact")
P_CAP = 40.0  # -log10 p is drawn up to this: a p of 1e-271 would flatten every other curve

__all__ = [
    "P_CAP",
    "POSITIVE",
    "adaptive",
    "alpha_of",
    "annotate",
    "attacked",
    "evidence",
    "headline",
    "labelled",
    "order",
    "scheme_key",
    "succeeded",
    "too_weak",
    "least_cost",
    "usable",
]


def attacked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
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
    return cost(row) < budget


def too_weak(rows: list[dict[str, Any]], label: str, budget: float) -> list[str]:
    """Attack families that never left a usable model at any strength (and so never removed
    the mark within the budget either): the mark did not survive them, the attack was too weak
    here to say; the headline does not count them as survived (issue 18)."""
    fams: dict[str, bool] = {}
    for r in attacked(rows):
        if r["label"] == label and not r.get("error"):
            fams[r["attack"]] = fams.get(r["attack"], False) or usable(r, budget)
    return sorted(a for a, ok in fams.items() if not ok)


def least_cost(rows: list[dict[str, Any]], label: str, family: str) -> float | None:
    """The smallest fidelity loss `family` cost `label`'s model at any strength: why an attack
    too weak here is (by how far it missed the budget)."""
    costs = [
        cost(r)
        for r in attacked(rows)
        if r["label"] == label
        and r["attack"] == family
        and not r.get("error")
        and r.get("fidelity_after") is not None
        and r.get("fidelity_before") is not None
    ]
    return min(costs) if costs else None


def adaptive(family: str) -> bool:
    """An attack family (or chain 'a+b') any part of which knows how marks are read
    (`Attack.adaptive`); an unknown name (a row from another version) is not."""
    from nnmark.attacks import ATTACKS

    return any(p in ATTACKS and ATTACKS.get(p).adaptive for p in family.split("+"))


def annotate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of the rows with `label` (the scheme, plus the task when there are several) and
    `embedded` (did the same model, unattacked, verify positive?)."""
    tasks = {(r.get("data"), r.get("arch")) for r in rows}
    out = []
    for r in rows:
        r = dict(r)
        # every reader defaults a missing kind to "attack": so must this one (a row without it
        # was attacked for the tables but never embedded here, so an attack that removed the
        # mark read "survives every attack"; red team, session 26)
        r.setdefault("kind", "attack")
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


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return rows if not rows or "label" in rows[0] else annotate(rows)


def evidence(p: float | None) -> float:
    """-log10 p, capped at P_CAP (0 for a missing p)."""
    if p is None:
        return 0.0
    return min(P_CAP, -math.log10(max(p, 1e-300)))


def order(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    schemes = sorted({r["label"] for r in rows if r["scheme"] != "none"}, key=scheme_key)
    families = sorted({r["attack"] for r in attacked(rows)}, key=lambda a: ("+" in a, a))
    return schemes, families


def scheme_key(name: str) -> tuple[bool, str]:
    return ("+" in name, name)


def alpha_of(rows: list[dict[str, Any]]) -> float:
    alphas = [r["alpha"] for r in rows if r.get("alpha")]
    return float(alphas[0]) if alphas else DEFAULT_ALPHA


def headline(rows: list[dict[str, Any]], budget: float) -> dict[str, list[str]]:
    """Per scheme (and composite), the attacks that succeed within the budget at some strength,
    each as its best removal for the thief: the successful spec that cost least fidelity, with
    that cost ("finetune:epochs=5 (0.80 pts)"; the weaker strength on a tie)."""
    rows = labelled(rows)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in attacked(rows):  # grouped once, not scanned per scheme (red team, session 27)
        by_label.setdefault(r["label"], []).append(r)
    out: dict[str, list[str]] = {}
    for s in order(rows)[0]:
        wins: dict[str, dict[str, Any]] = {}
        for r in sorted(by_label.get(s, []), key=lambda r: (r["attack"], r.get("level") or 0)):
            best = wins.get(r["attack"])
            if succeeded(r, budget) and (best is None or cost(r) < cost(best)):
                wins[r["attack"]] = r
        out[s] = [f"{r['attack_spec']} ({100 * cost(r):.2f} pts)" for r in wins.values()]
    return out


def cost(row: dict[str, Any]) -> float:
    """The fidelity an attack cost (before - after)."""
    return float(row["fidelity_before"] - row["fidelity_after"])
