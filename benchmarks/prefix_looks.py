"""What cutting a composite key to a prefix buys a claimant (docs/security.md, "Combined
marks"): each mark's secret binds its own fields and index, so a key's first m marks make a
valid key without a new derivation, and a claimant may keep the prefix whose combined (Fisher)
p is smallest. Simulated with exact-null parts (uniform p-values, e.g. trigger sets): how often
the best prefix of a 16-mark key reaches level a, as a multiple of a (the full key: 1).

    python benchmarks/prefix_looks.py [--draws 1000000] [--marks 16]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import chi2

from _common import write_results

LEVELS = (1e-2, 1e-3, 1e-4, 1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1_000_000)
    ap.add_argument("--marks", type=int, default=16)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    cum = np.cumsum(-2 * np.log(rng.random((args.draws, args.marks))), axis=1)
    fisher = np.stack([chi2.sf(cum[:, m], 2 * (m + 1)) for m in range(args.marks)], axis=1)
    best = fisher.min(1)
    rows = [
        {
            "level": a,
            "full_key": float(np.mean(fisher[:, -1] < a) / a),
            "best_prefix": float(np.mean(best < a) / a),
        }
        for a in LEVELS
    ]
    lines = [
        f"{args.marks} marks with uniform p-values, {args.draws:,} draws (numpy seed 0); the "
        "rate at which a combined p falls below the level, divided by the level.",
        "",
        "| level | full key | best of its prefixes |",
        "|---|---|---|",
        *(f"| {r['level']:g} | {r['full_key']:.2f} | {r['best_prefix']:.2f} |" for r in rows),
    ]
    write_results("prefix_looks", {"draws": args.draws, "marks": args.marks, "rows": rows},
                  "\n".join(lines))  # fmt: skip


if __name__ == "__main__":
    main()
