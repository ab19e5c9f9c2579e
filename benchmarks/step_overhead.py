"""What a white-box mark adds to one training step, measured step against step (issue 15).

`engine_overhead.py` compares whole epochs, and on a shared 2-core machine epochs of the same
work drift by 5-10 % from one minute to the next, more than a penalty costs. Here a plain model
and a marked copy take turns on the same batches (plain, marked, marked, plain, ...), each step
timed alone, so both sides see the same machine at the same moment; the ratio is the median
marked step over the median plain step (the step: forward, task loss plus the scheme's penalty,
backward, Adam). First `--warmup` steps dropped.

    python benchmarks/step_overhead.py [--steps 400] [--warmup 40] [--fraction 0.1]
        [--schemes uchida stdm deepsigns actsign] [--set k=v ...] [--name step_overhead]
        [--settings "MNIST resnet20" ...] [--running-stats]

`--set` applies a scheme option to every scheme given (e.g. `--schemes actsign --set
margin=0.1 --set margin_unit=absolute`, actsign's objective before session 43); `--name`
names the results file; `--running-stats`: actsign's and deepsigns' penalties read the key
inputs through BatchNorm's running statistics, as before nnmark.schemes._activations.KeyReader.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from typing import Any

import torch

from nnmark import OwnerKey, TrainConfig, load_data, new_model
from nnmark.api import resolve_schemes
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle
from nnmark.hooks import plain_step
from nnmark.tasks import get_task
from nnmark.train import make_loader, make_loss

from _common import penalty_through_running_stats, write_results


def paired(
    data: DataBundle,
    arch: str,
    scheme: str,
    fraction: float,
    steps: int,
    warmup: int,
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    plain = new_model(arch, data, seed=0)
    marked = copy.deepcopy(plain)
    key = OwnerKey.new(f"step overhead {scheme}", nonce="00" * 16)
    bound = []
    for cls, cfg in resolve_schemes(scheme, options or None):
        bound.append(cls(cls.plan(marked, key, cfg, data=data), [data, *cls.config_data(cfg)]))
    for s in bound:
        marked = s.prepare(marked)
    task = get_task(data.task)
    sides = {
        "plain": (plain, make_loss(task, [], None, 1.0), torch.optim.Adam(plain.parameters())),
        "marked": (
            marked,
            make_loss(task, bound, None, 1.0),
            torch.optim.Adam(marked.parameters()),
        ),
    }
    times: dict[str, list[float]] = {"plain": [], "marked": []}
    batches = itertools.cycle(make_loader(data, TrainConfig(fraction=fraction)))
    plain.train()
    marked.train()
    for i in range(steps + warmup):
        batch = next(batches)
        for side in ("plain", "marked") if i % 2 == 0 else ("marked", "plain"):
            model, loss_fn, opt = sides[side]
            start = time.perf_counter()
            plain_step(model, batch, loss_fn, opt)
            if i >= warmup:
                times[side].append(time.perf_counter() - start)
    p, m = statistics.median(times["plain"]), statistics.median(times["marked"])
    return {"plain_step_ms": 1e3 * p, "marked_step_ms": 1e3 * m, "ratio": m / p}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--fraction", type=float, default=0.1, help="of MNIST's train split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--schemes", nargs="*", default=["uchida", "stdm", "deepsigns", "actsign"])
    ap.add_argument("--set", action="append", default=[], help="scheme option k=v")
    ap.add_argument("--name", default="step_overhead", help="the results file's name")
    ap.add_argument(
        "--running-stats",
        action="store_true",
        help="actsign's and deepsigns' penalties read the key inputs through the running "
        "statistics (eval mode), as before KeyReader",
    )
    ap.add_argument(
        "--settings",
        nargs="*",
        default=["digits cnn", "MNIST cnn", "MNIST resnet20"],
        help="which rows' settings to run",
    )
    args = ap.parse_args()
    if args.running_stats:
        penalty_through_running_stats()
    options = dict(kv.split("=", 1) for kv in args.set)
    torch.set_num_threads(args.threads)
    digits = load_data("digits")
    mnist = load_data(f"mnist:{SHARED_DATA / 'mnist'}")
    settings = [
        ("digits cnn", digits, "cnn", 1.0),
        ("MNIST cnn", mnist, "cnn", args.fraction),
        ("MNIST resnet20", mnist, "resnet20", args.fraction),
    ]
    settings = [s for s in settings if s[0] in args.settings]
    rows = []
    for (label, data, arch, fraction), scheme in itertools.product(settings, args.schemes):
        row = {"setting": label, "scheme": scheme}
        row |= paired(data, arch, scheme, fraction, args.steps, args.warmup, options)
        rows.append(row)
        print(row, flush=True)
    lines = [
        f"CPU, {args.threads} torch threads; {args.steps} paired steps per row after "
        f"{args.warmup} warm-up steps, batch 64, Adam; "
        + (f"scheme options {options}" if options else "each scheme's default options")
        + (
            "; activation marks' penalty through the running statistics (--running-stats)."
            if args.running_stats
            else "."
        ),
        "",
        "| setting | scheme | plain step ms | marked step ms | marked / plain |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['setting']} | {r['scheme']} | {r['plain_step_ms']:.2f} | "
        f"{r['marked_step_ms']:.2f} | {r['ratio']:.3f} |"
        for r in rows
    ]
    write_results(args.name, {"args": vars(args), "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
