"""The digits / MNIST cnn's pooling: nnmark.models.cnn.max_pool2 against F.max_pool2d.

PyTorch's CPU max-pool kernel for NCHW inputs is several times slower than its channels-last
kernel, and the cnn's two pools took 44 % of its forward pass. `max_pool2` finds the maxima
channels-last and takes max_pool2d's own backward at their indices. This measures, in one run:

- F.max_pool2d's kernel alone on an NCHW batch and on its channels-last copy;
- per step (forward, cross-entropy, backward, Adam) and per inference forward, the two
  pools taking turns on the same batches (a, b, b, a, ...), medians after a warm-up;
- whole trainings at the default recipe, alternating, and that the trained weights are
  bit-identical (the pools must not change a mark or a figure).

    python benchmarks/cnn_pool.py [--steps 300] [--trainings 3] [--name cnn_pool]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nnmark import TrainConfig, load_data, new_model, train
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle
from nnmark.models import cnn as cnn_module

from _common import write_results

Pool = Callable[[torch.Tensor], torch.Tensor]
POOLS: dict[str, Pool] = {
    "F.max_pool2d": lambda x: F.max_pool2d(x, 2),
    "max_pool2": cnn_module.max_pool2,
}


def using(pool: Pool) -> None:
    """From here on, SmallCNN pools with `pool` (the module's name is looked up per call)."""
    cnn_module.max_pool2 = pool  # type: ignore[assignment]


def kernels(shape: tuple[int, ...] = (64, 64, 8, 8), repeats: int = 300) -> dict[str, float]:
    """Median seconds of F.max_pool2d on one NCHW batch and on its channels-last copy (conv3's
    output on a digits batch of 64), calls alternating."""
    x = torch.randn(shape).relu()
    last = x.contiguous(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {"nchw": [], "channels_last": []}
    for _ in range(repeats):
        for name, t in (("nchw", x), ("channels_last", last)):
            start = time.perf_counter()
            F.max_pool2d(t, 2)
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def paired_steps(data: DataBundle, steps: int, warmup: int = 30) -> dict[str, Any]:
    """Median step and inference times per pool, each step timed alone, turns alternating."""
    models = {n: new_model("cnn", data, seed=0) for n in POOLS}
    optims = {n: torch.optim.Adam(m.parameters(), 1e-3) for n, m in models.items()}
    loader = data.loader("train", 64, shuffle=True)
    times: dict[str, dict[str, list[float]]] = {n: {"step": [], "infer": []} for n in POOLS}
    batches = iter(())
    for i in range(steps + warmup):
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        order = list(POOLS) if i % 2 == 0 else list(reversed(POOLS))
        for name in order:
            using(POOLS[name])
            model, opt = models[name], optims[name]
            start = time.perf_counter()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            mid = time.perf_counter()
            with torch.no_grad():
                model(x)
            end = time.perf_counter()
            if i >= warmup:
                times[name]["step"].append(mid - start)
                times[name]["infer"].append(end - mid)
    return {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}


def paired_trainings(data: DataBundle, trainings: int) -> dict[str, Any]:
    """Whole default-recipe trainings, alternating; the weights compared bit for bit."""
    seconds: dict[str, list[float]] = {n: [] for n in POOLS}
    weights: dict[str, dict[str, torch.Tensor]] = {}
    for i in range(trainings):
        for name in POOLS if i % 2 == 0 else reversed(POOLS):
            using(POOLS[name])
            start = time.perf_counter()
            model = train(new_model("cnn", data, seed=0), data, TrainConfig(seed=0))
            seconds[name].append(time.perf_counter() - start)
            weights[name] = model.state_dict()
    first, second = (weights[n] for n in POOLS)
    same = all(torch.equal(first[k], second[k]) for k in first)
    return {"seconds": seconds, "bit_identical": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--trainings", type=int, default=3)
    parser.add_argument("--name", default="cnn_pool")
    args = parser.parse_args()
    torch.set_num_threads(1)
    fast = cnn_module.max_pool2
    sets = {"digits": load_data("digits"), "MNIST": load_data(f"mnist:{SHARED_DATA / 'mnist'}")}
    rows, payload = [], {"steps": args.steps, "trainings": args.trainings, "sets": {}}
    payload["kernel"] = kernel = kernels()
    for label, data in sets.items():
        step = paired_steps(data, args.steps)
        whole = paired_trainings(data, args.trainings) if label == "digits" else None
        using(fast)
        payload["sets"][label] = {"per_step": step, "training": whole}
        base, new = step["F.max_pool2d"], step["max_pool2"]
        line = (
            f"| {label} | {base['step'] * 1e3:.2f} | {new['step'] * 1e3:.2f} | "
            f"{new['step'] / base['step']:.2f} | {base['infer'] * 1e3:.2f} | "
            f"{new['infer'] * 1e3:.2f} | {new['infer'] / base['infer']:.2f} | "
        )
        if whole:
            b, n = (min(whole["seconds"][k]) for k in POOLS)
            line += (
                f"{b:.2f} / {n:.2f} ({n / b:.2f}) | {'yes' if whole['bit_identical'] else 'NO'} |"
            )
        else:
            line += " | |"
        rows.append(line)
        print(line, flush=True)
    body = (
        f"F.max_pool2d on a 64 x 64 x 8 x 8 batch: {kernel['nchw'] * 1e3:.3f} ms NCHW, "
        f"{kernel['channels_last'] * 1e3:.3f} ms channels-last (median of 300 each).\n\n"
        "The cnn with `F.max_pool2d` against `nnmark.models.cnn.max_pool2` (1 thread, batch 64; "
        f"median of {args.steps} paired steps after 30 warm-up steps; training: the default "
        f"recipe, fastest of {args.trainings} alternating runs each).\n\n"
        "| data | step ms, max_pool2d | step ms, max_pool2 | ratio | inference ms, "
        "max_pool2d | inference ms, max_pool2 | ratio | digits training s (ratio) | "
        "weights bit-identical |\n|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    write_results(args.name, payload, body)


if __name__ == "__main__":
    main()
