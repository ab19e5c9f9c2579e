"""What Tartaglione's fine-tune-to-embed costs a segmentation U-Net, over keys, and whether the
replicas' BatchNorm statistics (`replica_norm`) are the cause.

Session 32 saw the seeds preset's marked U-Net at Dice 0.644 against its plain model's 0.880
(one key), and three keys by hand at 0.82 to 0.89 (defaults, `replica_norm=running`) and 0.86 to
0.90 (`replica_norm=batch`): no conclusion either way on one plain model. The defaults were
chosen on MNIST classifiers (issue 16's Required figures). Here, per seed s:

- a plain U-Net (the seeds preset's task: BBBC039, 5 epochs, batch 8, Adam 1e-3, cosine);
- "fine-tune only": the plain model trained `--mark-epochs` more with no mark, the control
  for what a fine-tune alone does to this unstable recipe;
- one arm per `--arms` value of replica_norm: the plain model marked with tartaglione's
  defaults otherwise (fine-tune-to-embed, `--mark-epochs` epochs), key s (the same key in
  every arm, so the arms differ only in the option).

Reported: Dice and IoU on the test split, each arm's paired difference against the plain model
and against the fine-tune-only control (mean and 95 % Student-t interval over seeds), the arms'
paired difference, and the verdict. Plain models and each finished seed's row are cached
(`--cache`): a rerun with more seeds computes only the new ones, and says how many it reused.

    python benchmarks/tartaglione_unet.py [--seeds 4] [--arms running,batch]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from nnmark import OwnerKey, TrainConfig, embed, evaluate, load_data, new_model, train, verify
from nnmark.bench.cache import ModelCache
from nnmark.bench.jobs import BENCH_CREATED
from nnmark.data import SHARED_DATA

from _common import interval, write_results

METRICS = ("dice", "iou")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5, help="the plain model's training")
    ap.add_argument("--mark-epochs", type=int, default=5)
    ap.add_argument("--arms", default="running,batch", help="replica_norm values")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tartaglione_unet"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    data = load_data(f"seg:{SHARED_DATA / 'seg-bbbc039'}")
    test = data.loader("test", 8)
    arms = args.arms.split(",")
    rows: list[dict[str, Any]] = []
    reused = 0
    for seed in range(args.seeds):
        plain_cfg = TrainConfig(epochs=args.epochs, seed=seed, batch_size=8)
        mark_cfg = TrainConfig(epochs=args.mark_epochs, seed=seed, batch_size=8)

        def fresh(seed: int = seed, cfg: TrainConfig = plain_cfg) -> tuple[Any, None, Any]:
            return train(new_model("unet", data, seed=seed), data, cfg), None, data

        plain, _ = ModelCache(args.cache).get(f"plain-{seed}", f"plain-{seed}", fresh)
        done = args.cache / f"row-{seed}-{args.epochs}-{args.mark_epochs}-{'-'.join(arms)}.json"
        if done.exists():  # a seed an earlier run of these settings finished
            rows.append(json.loads(done.read_text()))
            reused += 1
            continue
        row: dict[str, Any] = {"seed": seed, "plain": evaluate(plain, test, data.task)}
        tick = time.time()
        row["finetune"] = evaluate(train(plain, data, mark_cfg), test, data.task)
        row["finetune_seconds"] = round(time.time() - tick, 1)
        key = OwnerKey.new(
            f"tartaglione unet {seed}", nonce=f"{seed:02x}" * 16, created=BENCH_CREATED
        )
        for arm in arms:  # the same key in every arm
            tick = time.time()
            marked, key = embed(
                plain,
                data,
                "tartaglione",
                options={"replica_norm": arm},
                key=key,
                config=mark_cfg,
                reference=plain,  # as `nnmark embed` commits the model it fine-tunes
            )
            v = verify(marked, key)
            row[arm] = {
                **evaluate(marked, test, data.task),
                "verdict": v.verdict,
                "p_value": v.p_value,
                "ber": v.ber,
                "seconds": round(time.time() - tick, 1),
            }
        rows.append(row)
        print(row, flush=True)
        done.write_text(json.dumps(row))
        # written after every seed: a run cut short leaves the seeds it finished, and says so
        report(rows, reused, arms, args, len(data.splits["train"]), time.time() - start)
    print(
        "\n".join(report(rows, reused, arms, args, len(data.splits["train"]), time.time() - start))
    )


def report(
    rows: list[dict[str, Any]],
    reused: int,
    arms: list[str],
    args: argparse.Namespace,
    n: int,
    secs: float,
) -> list[str]:
    """Write the results so far (JSON and Markdown) and return the Markdown lines."""
    lines = [
        f"U-Net on the BBBC039 subset ({n} training tiles): plain {args.epochs} epochs, batch 8; "
        f"tartaglione fine-tune-to-embed {args.mark_epochs} epochs at its defaults but "
        f"`replica_norm`; {len(rows)} of {args.seeds} seeds (one plain model and one key each, "
        "the same key in "
        f"every arm); means with 95 % Student-t intervals over seeds; this run {secs:.0f} s, "
        f"{reused} seeds' rows reused from an earlier run of the same settings (`--cache`).",
        "",
        "| model | Dice | IoU | Dice - plain (paired) | Dice - fine-tune only (paired) | found |",
        "|---|---|---|---|---|---|",
    ]
    for name in ["plain", "finetune", *arms]:
        label = {
            "plain": "plain",
            "finetune": f"fine-tune only ({args.mark_epochs} epochs)",
        }.get(name, f"tartaglione, replica_norm={name}")
        cells = [interval([r[name][m] for r in rows], digits=3) for m in METRICS]
        diffs = [
            "-"
            if name == base or (base == "finetune" and name == "plain")
            else interval([r[name]["dice"] - r[base]["dice"] for r in rows], digits=3)
            for base in ("plain", "finetune")
        ]
        found = (
            "-"
            if name in ("plain", "finetune")
            else (f"{sum(r[name]['verdict'] == 'found' for r in rows)} / {len(rows)}")
        )
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(diffs)} | {found} |")
    if len(arms) == 2:  # the question: does the replicas' normalisation matter?
        a, b = arms
        diff = interval([r[b]["dice"] - r[a]["dice"] for r in rows], digits=3)
        wins = sum(r[b]["dice"] > r[a]["dice"] for r in rows)
        lines += [
            "",
            f"Dice, {b} - {a} (paired, same key): {diff}; {b} higher on {wins} of {len(rows)} seeds.",
        ]
    lines += ["", "Per seed (Dice):", ""]
    lines.append("| seed | plain | fine-tune only | " + " | ".join(arms) + " |")
    lines.append("|---" * (3 + len(arms)) + "|")
    for r in rows:
        vals = [r[k]["dice"] for k in ("plain", "finetune", *arms)]
        lines.append(f"| {r['seed']} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    payload = {"args": vars(args) | {"cache": str(args.cache)}, "reused": reused, "rows": rows}
    write_results("tartaglione_unet", payload, "\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
