"""WaterMAS: how each documented choice (nnmark/schemes/watermas.py) trades accuracy for sharpness.

Protocol (digits CNN, 20 epochs, Adam, cosine schedule, seeds 0..4): for each variant of the
default config, test accuracy minus that of plain training with the same init and seed, and the
landscape ratio of benchmarks/landscape_robustness.py (mean test-loss increase when the marked
entries get Gaussian noise of rho x the layer's initial std, over that of noise of the same norm
on as many unmarked entries of each tensor; 20 draws). The default must keep the accuracy of
plain training (within a point, mean over seeds) with a ratio >= 2 on every seed.

    python benchmarks/watermas_ablation.py [--seeds 5] [--epochs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from nnmark import OwnerKey, TrainConfig, embed, evaluate, load_data, new_model, train
from nnmark.schemes import scheme_for
from nnmark.schemes._positions import perturbation_losses

from _common import write_results

VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("default (lam 0.3, rho 1, cap 0.2, descent)", {}),
    ("cap 0.5", {"cap": 0.5}),
    ("cap 5 (unreachable: the first version)", {"cap": 5.0}),
    ("lam 0.1", {"lam": 0.1}),
    ("rho 0.5", {"rho": 0.5}),
    ("direction ascent (SAM's point)", {"direction": "ascent"}),
    ("fraction 0.005", {"fraction": 0.005}),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data("digits")
    x, y = data.tensors("test")

    def test_loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(m(x), y))

    def accuracy(m: torch.nn.Module) -> float:
        return evaluate(m, data.loader("test"), data.task)["accuracy"]

    rows: list[dict[str, Any]] = []
    plain: dict[int, float] = {}
    for seed in range(args.seeds):
        cfg = TrainConfig(epochs=args.epochs, seed=seed)
        plain[seed] = accuracy(train(new_model("cnn", data, seed=seed), data, cfg))
        for label, options in VARIANTS:
            t0 = time.perf_counter()
            row: dict[str, Any] = {"variant": label, "seed": seed, "options": options}
            try:
                model, key = embed(
                    new_model("cnn", data, seed=seed),
                    data,
                    "watermas",
                    options=options,
                    key=OwnerKey.new("bench", nonce=f"{seed:02d}" * 16),
                    config=cfg,
                )
                s = scheme_for(key.marks[0])
                s.positions.bind(model)  # the layers' std (the noise unit)
                gen = torch.Generator().manual_seed(1000 + seed)
                land = perturbation_losses(model, s.positions, test_loss, s.config.rho, 20, gen)
                row.update(
                    accuracy=accuracy(model),
                    plain=plain[seed],
                    ratio=land["ratio"],
                    seconds=time.perf_counter() - t0,
                )
                row["gap"] = row["accuracy"] - plain[seed]
            except Exception as exc:  # noqa: BLE001 - the sweep never stops on one failed cell
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(row, flush=True)

    lines = [
        f"digits CNN, {args.epochs} epochs, seeds 0..{args.seeds - 1}; gap = watermas test "
        "accuracy - plain (same init and seed), in points; ratio = landscape ratio at sigma = rho.",
        "",
        "| variant | mean gap (points) | gap per seed | mean ratio | min ratio | ratio per seed |",
        "|---|---|---|---|---|---|",
    ]
    summary = []
    for label, _ in VARIANTS:
        ok = [r for r in rows if r["variant"] == label and "error" not in r]
        if not ok:
            continue
        gaps = [100 * r["gap"] for r in ok]
        ratios = [r["ratio"] for r in ok]
        summary.append(
            {
                "variant": label,
                "mean_gap_points": statistics.fmean(gaps),
                "mean_ratio": statistics.fmean(ratios),
                "min_ratio": min(ratios),
            }
        )
        lines.append(
            f"| {label} | {statistics.fmean(gaps):+.2f} | "
            + ", ".join(f"{g:+.2f}" for g in gaps)
            + f" | {statistics.fmean(ratios):.2f} | {min(ratios):.2f} | "
            + ", ".join(f"{v:.2f}" for v in ratios)
            + " |"
        )
    lines.append(
        "\nPlain accuracy per seed: " + ", ".join(f"{plain[s]:.4f}" for s in sorted(plain)) + "."
        " One test image is 0.28 points (359 test images)."
    )
    errors = [r for r in rows if "error" in r]
    if errors:
        lines.append(
            "\nFailed cells: "
            + "; ".join(f"{r['variant']} seed {r['seed']}: {r['error']}" for r in errors)
        )
    write_results(
        "watermas_ablation",
        {"epochs": args.epochs, "seeds": args.seeds, "rows": rows, "summary": summary},
        "\n".join(lines),
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
