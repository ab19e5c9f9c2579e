"""Neural cleanse against the planted backdoor of every target class (the neuralcleanse test's
fixture, `nnmark.testing.backdoor`, in the conftest's plain digits CNN): is the backdoor learnt
(stamped test images of other classes sent to the target) and is the target flagged, at the
attack's default steps and at the `--steps` given?

    python benchmarks/neuralcleanse_targets.py [--steps 150 30]
"""

from __future__ import annotations

import argparse
import time

import torch

from nnmark import TrainConfig, load_data, new_model, train
from nnmark.attacks.neuralcleanse import detect
from nnmark.testing import backdoor

from _common import write_results

PLAIN_EPOCHS = 20  # tests/conftest.py's EPOCHS: the plain_cnn fixture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 30])
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    digits = load_data("digits")
    plain = train(
        new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=PLAIN_EPOCHS, seed=0)
    )
    thief = digits.tensors("thief")[0]
    rows = []
    for target in range(digits.num_classes):
        model = backdoor.plant(plain, digits, target)
        row = {"target": target, "hit_rate": backdoor.hit_rate(model, digits, target)}
        for steps in args.steps:
            report = detect(model, thief, steps=steps, generator=torch.Generator().manual_seed(0))
            row[f"flagged_{steps}"] = report.flagged
            row[f"anomaly_{steps}"] = report.anomaly[target]
            row[f"norm_{steps}"] = report.norms[target]
            row[f"median_norm_{steps}"] = float(torch.tensor(report.norms).median())
        rows.append(row)
        print(row, flush=True)
    write_results(
        "neuralcleanse_targets",
        {"steps": args.steps, "rows": rows},
        _markdown(rows, args.steps, time.time() - start),
    )


def _markdown(rows: list[dict], steps: list[int], seconds: float) -> str:  # type: ignore[type-arg]
    head = "| target | learnt (hit rate) |" + "".join(
        f" flagged at {s} steps | anomaly index | target's mask L1 / median |" for s in steps
    )
    lines = [
        f"digits CNN ({PLAIN_EPOCHS} epochs, seed 0), backdoor planted: a {backdoor.PATCH} x "
        f"{backdoor.PATCH} white patch on {backdoor.POISONED:.0%} of the training split, "
        f"relabelled to the target, {backdoor.EPOCHS} epochs of fine-tuning; neural cleanse on "
        f"the thief split (`detect`, threshold 2). {seconds:.0f} s (1 torch thread).",
        "",
        head,
        "|---|---|" + "---|---|---|" * len(steps),
    ]
    for r in rows:
        cells = "".join(
            f" {r[f'flagged_{s}'] == r['target']} | {r[f'anomaly_{s}']:.2f} | "
            f"{r[f'norm_{s}']:.1f} / {r[f'median_norm_{s}']:.1f} |"
            for s in steps
        )
        lines.append(f"| {r['target']} | {r['hit_rate']:.3f} |{cells}")
    for s in steps:
        n = sum(r[f"flagged_{s}"] == r["target"] for r in rows)
        lines.append(f"\nFlagged at {s} steps: {n} of {len(rows)} targets.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
