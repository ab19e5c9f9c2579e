"""How long the extraction attacks must train to come within the fidelity budget (issue 18):
the copy's test accuracy against its teacher's, per attack and number of epochs, on digits.

Per seed: a plain `cnn` (default recipe) is the suspect; `knockoff` and `copycat` (ART, which
trains for a fixed number of epochs), `ensemble` (three members on disjoint thirds of the
thief's queries) and `distill` (to convergence by default) each steal it at the strengths of
their bench ladder and beyond. The bench's budget is 5 points.

    python benchmarks/extraction_epochs.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from nnmark import TrainConfig, attack, load_data, new_model, train

from _common import accuracy_on_test, write_results

SPECS = (
    "knockoff:epochs=15",
    "knockoff:epochs=60",
    "knockoff:epochs=150",
    "copycat:epochs=15",
    "copycat:epochs=60",
    "copycat:epochs=150",
    "ensemble:epochs=20",
    "ensemble:epochs=100",
    "ensemble:epochs=300",
    "distill",
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data("digits")
    start = time.time()

    acc = accuracy_on_test(data)

    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        teacher = train(new_model("cnn", data, seed=seed), data, TrainConfig(seed=seed))
        base = acc(teacher)
        for spec in SPECS:
            t = time.time()
            copy = attack(teacher, spec, data, seed=seed + 1)
            rows.append(
                {
                    "seed": seed,
                    "attack": spec,
                    "teacher": base,
                    "copy": acc(copy),
                    "seconds": time.time() - t,
                }
            )
            print(rows[-1], flush=True)
    lines = [
        f"digits, `cnn` suspects (default recipe, seeds 0..{args.seeds - 1}); the copy's test "
        f"accuracy against the suspect's, in points (mean and worst over seeds). "
        f"{time.time() - start:.0f} s.",
        "",
        "| attack | copy - suspect (points, mean) | worst | within 5 points | seconds (mean) |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for spec in SPECS:
        mine = [r for r in rows if r["attack"] == spec]
        gaps = [100 * (r["copy"] - r["teacher"]) for r in mine]
        summary[spec] = {"mean": statistics.mean(gaps), "worst": min(gaps)}
        lines.append(
            f"| `{spec}` | {statistics.mean(gaps):+.2f} | {min(gaps):+.2f} | "
            f"{sum(g > -5 for g in gaps)}/{len(gaps)} | "
            f"{statistics.mean(r['seconds'] for r in mine):.1f} |"
        )
    write_results(
        "extraction_epochs",
        {"args": vars(args), "rows": rows, "summary": summary},
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
