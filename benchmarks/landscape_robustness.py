"""Do tartaglione and watermas put the mark in a narrow valley, and does it survive attacks?

Protocol (digits CNN, 20 epochs, Adam, cosine schedule, seeds 0, 1, 2):

1. Landscape: for each trained model, the mean test-loss increase when the marked entries get
   Gaussian noise (std sigma x the layer's initial weight std: tartaglione's own sigma, 1.5 by
   default; watermas' rho, 1),
   against noise of exactly the same norm on as many *unmarked* entries of each tensor (20 draws
   each). Ratio = marked / unmarked increase, reported per seed. Tartaglione at R = 0 (frozen
   key values, no replica term), R = 2, R = 4 (all replicas each step) and R = 4 with one
   replica per step; WaterMAS (its defaults). Required (issue 5): ratio >= 2 at R = 4, and more
   at R = 4 than at R = 0 (means over seeds).
2. Fidelity: test accuracy against plain training with the same init and seed; the test error
   at R = 0 / 2 / 4 beside seed 003's (Tartaglione et al.: ResNet-32 on CIFAR-10, 7.14 / 7.08 /
   7.29 %). CIFAR-10 is not on this machine's disk, so ours is the digits CNN: the comparison is
   of the trend with R, not of the figures.
3. Robustness: BER after `prune:fraction=0.5` and after `finetune:epochs=5` (thief split),
   tartaglione / watermas side by side with uchida (64 bits, its defaults).

Tartaglione runs with the seed's objective (PAPER_OBJECTIVE: replicas against the model itself,
batch statistics) and the key-magnitude band of the time (95th-99.5th percentiles), what the
committed results measured; seed003_tartaglione.py measures the defaults.

    python benchmarks/landscape_robustness.py [--seeds 3] [--epochs 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from nnmark import (
    OwnerKey,
    TrainConfig,
    attack,
    embed,
    evaluate,
    load_data,
    new_model,
    train,
    verify,
)
from nnmark.bench.jobs import BENCH_CREATED
from nnmark.schemes import scheme_for
from nnmark.schemes._positions import perturbation_losses
from nnmark.schemes.tartaglione import PAPER_OBJECTIVE

from _common import write_results

#: tartaglione as the committed results measured it (nnmark's defaults until 2026-12-04)
MEASURED: dict[str, Any] = {**PAPER_OBJECTIVE, "magnitude_low": 0.95, "magnitude_high": 0.995}
CONFIGS: list[tuple[str, str, dict[str, Any]]] = [
    ("plain", "none", {}),
    ("tartaglione R=0", "tartaglione", {"R": 0, **MEASURED}),
    ("tartaglione R=2", "tartaglione", {"R": 2, **MEASURED}),
    ("tartaglione R=4", "tartaglione", {"R": 4, **MEASURED}),
    ("tartaglione R=4, one replica", "tartaglione", {"R": 4, "one_replica": True, **MEASURED}),
    ("watermas", "watermas", {}),
    ("uchida 64 bits", "uchida", {}),
]
ATTACKS = ["prune:fraction=0.5", "finetune:epochs=5"]
#: Seed 003 (Tartaglione et al., ICPR 2020), ResNet-32 on CIFAR-10: test error (%) by R.
SEED_003_ERROR = {0: 7.14, 2: 7.08, 4: 7.29}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data("digits")
    rows = []
    for seed in range(args.seeds):
        cfg = TrainConfig(epochs=args.epochs, seed=seed)
        for label, scheme, options in CONFIGS:
            row: dict[str, Any] = {"config": label, "seed": seed}
            try:
                row |= measure(data, scheme, options, seed, cfg)
            except Exception as exc:  # noqa: BLE001 - the sweep never stops on one failed cell
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
            print(row, flush=True)
    summary = summarise(rows)
    lines = render(rows, summary, args.seeds, args.epochs)
    write_results(
        "landscape_robustness",
        {"epochs": args.epochs, "seeds": args.seeds, "rows": rows, "summary": summary},
        "\n".join(lines),
    )
    print("\n".join(lines))


def measure(
    data: Any, scheme: str, options: dict[str, Any], seed: int, cfg: TrainConfig
) -> dict[str, Any]:
    """One model: its accuracy, and for a mark the landscape, BER and each attack's effect."""
    x, y = data.tensors("test")

    def test_loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(m(x), y))

    t0 = time.perf_counter()
    model0 = new_model("cnn", data, seed=seed)
    row: dict[str, Any] = {}
    if scheme == "none":
        model, key = train(model0, data, cfg), None
    else:
        key = OwnerKey.new("bench", nonce=f"{seed:02d}" * 16, created=BENCH_CREATED)
        model, key = embed(model0, data, scheme, options=options, key=key, bits=64, config=cfg)
    row["seconds"] = time.perf_counter() - t0
    row["accuracy"] = evaluate(model, data.loader("test"), data.task)["accuracy"]
    if key is None:
        return row
    s = scheme_for(key.marks[0])
    if scheme in ("tartaglione", "watermas"):
        sigma = getattr(s.config, "sigma", getattr(s.config, "rho", 1.0))
        gen = torch.Generator().manual_seed(1000 + seed)
        s.positions.bind(model)  # the layers' std (the noise unit), from the marked model
        row["landscape"] = perturbation_losses(model, s.positions, test_loss, sigma, 20, gen)
    row["ber"] = verify(model, key).ber
    for spec in ATTACKS:
        attacked = attack(model, spec, data, seed=seed)
        v = verify(attacked, key)
        row[spec] = {
            "ber": v.ber,
            "verdict": v.verdict,
            "p_value": v.p_value,
            "accuracy": evaluate(attacked, data.loader("test"), data.task)["accuracy"],
        }
    return row


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means over seeds per config."""

    def mean(label: str, get: Any) -> float | None:
        vals = [get(r) for r in rows if r["config"] == label and "error" not in r]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None

    summary = []
    for label, scheme, _ in CONFIGS:
        s: dict[str, Any] = {"config": label}
        s["accuracy"] = mean(label, lambda r: r.get("accuracy"))
        if scheme in ("tartaglione", "watermas"):
            s["marked_increase"] = mean(label, lambda r: r["landscape"]["marked_increase"])
            s["unmarked_increase"] = mean(label, lambda r: r["landscape"]["unmarked_increase"])
            s["ratio_of_means"] = s["marked_increase"] / max(s["unmarked_increase"], 1e-12)
            s["mean_ratio"] = mean(label, lambda r: r["landscape"]["ratio"])
        for spec in ATTACKS:
            s[f"{spec} ber"] = mean(label, lambda r, sp=spec: r.get(sp, {}).get("ber"))
            s[f"{spec} acc"] = mean(label, lambda r, sp=spec: r.get(sp, {}).get("accuracy"))
        s["seconds"] = mean(label, lambda r: r.get("seconds"))
        summary.append(s)
    return summary


def _f(v: Any, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def render(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], n_seeds: int, epochs: int
) -> list[str]:
    """The Markdown: means, per-seed ratios and accuracies, the seed-003 comparison."""
    lines = [
        f"digits CNN, {epochs} epochs, means over seeds 0..{n_seeds - 1}; loss increases "
        "on the test set (20 Gaussian draws, std = the scheme's sigma (tartaglione 1.5) or rho "
        "(watermas 1) x the layer's initial std).",
        "",
        "| config | test acc | +loss marked | +loss unmarked (same norm) | ratio of means | "
        "mean ratio | BER prune 50% | acc prune | BER finetune 5 ep | acc finetune | s/train |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['config']} | {_f(s['accuracy'])} | {_f(s.get('marked_increase'))} | "
            f"{_f(s.get('unmarked_increase'))} | {_f(s.get('ratio_of_means'), '.2f')} | "
            f"{_f(s.get('mean_ratio'), '.2f')} | {_f(s['prune:fraction=0.5 ber'])} | "
            f"{_f(s['prune:fraction=0.5 acc'])} | {_f(s['finetune:epochs=5 ber'])} | "
            f"{_f(s['finetune:epochs=5 acc'])} | {_f(s['seconds'], '.1f')} |"
        )
    lines += _per_seed(rows, n_seeds) + _seed003(summary)
    errors = [r for r in rows if "error" in r]
    if errors:
        lines.append(
            "\nFailed cells: "
            + "; ".join(f"{r['config']} seed {r['seed']}: {r['error']}" for r in errors)
        )
    return lines


def _per_seed(rows: list[dict[str, Any]], n_seeds: int) -> list[str]:
    def cell(label: str, seed: int, get: Any, fmt: str) -> str:
        r = next((r for r in rows if r["config"] == label and r["seed"] == seed), None)
        return "-" if r is None or "error" in r else format(get(r), fmt)

    seeds = range(n_seeds)
    lines = [
        "",
        "Per seed: landscape ratio (marked / unmarked increase) and test accuracy.",
        "",
        "| config | "
        + " | ".join(f"ratio seed {i}" for i in seeds)
        + " | "
        + " | ".join(f"acc seed {i}" for i in seeds)
        + " |",
        "|---|" + "---|" * (2 * n_seeds),
    ]
    for label, scheme, _ in CONFIGS:
        ratios = [
            cell(label, i, lambda r: r["landscape"]["ratio"], ".2f")
            if scheme in ("tartaglione", "watermas")
            else "-"
            for i in seeds
        ]
        accs = [cell(label, i, lambda r: r["accuracy"], ".4f") for i in seeds]
        lines.append(f"| {label} | " + " | ".join(ratios + accs) + " |")
    return lines


def _seed003(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    plain_acc = next(s["accuracy"] for s in summary if s["config"] == "plain")
    wm_acc = next(s["accuracy"] for s in summary if s["config"] == "watermas")
    if plain_acc is not None and wm_acc is not None:
        lines.append(
            f"\nwatermas - plain, mean over seeds: {100 * (wm_acc - plain_acc):+.2f} points "
            "(required: within 1 point)."
        )
    lines += [
        "",
        "Test error (%) by R: seed 003 (ResNet-32, CIFAR-10) and ours (digits CNN; CIFAR-10 is "
        "not on disk). Theirs moves by 0.2 points from R = 0 to 4.",
        "",
        "| R | seed 003: ResNet-32 / CIFAR-10 | nnmark: cnn / digits (mean over seeds) |",
        "|---|---|---|",
    ]
    for r_value, theirs in SEED_003_ERROR.items():
        acc = next(
            (s["accuracy"] for s in summary if s["config"] == f"tartaglione R={r_value}"), None
        )
        ours = "-" if acc is None else format(100 * (1 - acc), ".2f")
        lines.append(f"| {r_value} | {theirs:.2f} | {ours} |")
    lines.append(
        "\nRequired (issue 5): ratio >= 2 at R = 4 and larger at R = 4 than at R = 0 (tartaglione "
        "and watermas); watermas accuracy within 1 point of plain. BER 0.5 = chance."
    )
    return lines


if __name__ == "__main__":
    main()
