"""The cost of nnmark's training engine against a minimal hand-written PyTorch loop, and of each
scheme's marked training against plain training (issue 15).

Two comparisons, each as a ratio of per-epoch times measured in the same run, interleaved
(A, B, A, B, ...) so that a machine slowing down or speeding up touches both sides alike:

* engine vs minimal loop, on the same model, data, batch size and optimiser (Adam 1e-3, batch
  64): `nnmark.train.fit` (DataLoader, scheme hooks, schedule, progress) against
  ``for idx in randperm: zero_grad; cross_entropy(model(x[idx]), y[idx]).backward(); step``.
  Settings: digits `cnn`, MNIST `cnn`, MNIST `resnet20` (MNIST on `--fraction` of its train
  split). The epoch time is the time between two epoch ends (the progress callback), so the
  one-off set-up is not counted (the first epoch of each run is dropped) and the BatchNorm
  recalibration after the last epoch is reported apart (`fit_overhead_s`).
* marked vs plain: `fit` with each scheme's default recipe against `fit` with none, on digits
  `cnn`, and Uchida on MNIST `cnn` and `resnet20`. Trigger-set schemes train on extra inputs
  per batch, so their ratio is the price of those inputs, not overhead.
* mixed precision: Uchida's default recipe on digits with `amp` bf16 and fp16 against fp32.

    python benchmarks/engine_overhead.py [--device cpu] [--epochs 4] [--repeats 3]
        [--fraction 0.2] [--threads 2]

Ratios are medians over the per-epoch times of `--repeats` interleaved runs (the first epoch
of each run is dropped as warm-up). On a GPU, images per second and peak GPU memory are added.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from nnmark import OwnerKey, TrainConfig, load_data, new_model
from nnmark.api import resolve_schemes
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle
from nnmark.device import resolve_device
from nnmark.schemes import SCHEMES
from nnmark.train import fit

from _common import write_results

#: Schemes whose marked training is compared with plain training on digits: every registered
#: classification scheme that trains with the owner's loop (not the segmentation trigger).
SKIP = {"segtrigger"}
#: Options a scheme cannot do without (unrelated's out-of-distribution source).
OPTIONS = {"unrelated": {"source": f"fashion-mnist:{SHARED_DATA / 'fashion-mnist'}"}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def minimal_epochs(
    model: torch.nn.Module, data: DataBundle, cfg: TrainConfig, device: torch.device
) -> list[float]:
    """The hand-written loop: per-epoch wall times."""
    x, y = data.tensors(cfg.split, cfg.fraction)
    x, y = x.to(device), y.to(device)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    times = []
    for _ in range(cfg.epochs):
        sync(device)
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=gen).to(device)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def engine_epochs(
    model: torch.nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
    schemes: list[Any] | None = None,
    amp: Any = None,
) -> tuple[list[float], float]:
    """`fit`: per-epoch wall times (between epoch ends) and the time after the last epoch
    (BatchNorm recalibration, finalize)."""
    marks: list[float] = []

    def progress(epoch: int, total: int, loss: float) -> None:
        sync(device)
        marks.append(time.perf_counter())

    sync(device)
    start = time.perf_counter()
    fit(model, data, schemes or [], cfg, progress=progress, device=device, amp=amp)
    sync(device)
    end = time.perf_counter()
    times = [b - a for a, b in zip([start, *marks[:-1]], marks, strict=True)]
    # the first "epoch" also holds the set-up (and warm-up): dropped by `compare`
    return times, end - marks[-1]  # after the last epoch: BatchNorm recalibration, finalize


def bound(name: str, model: torch.nn.Module, data: DataBundle, seed: int) -> list[Any]:
    key = OwnerKey.new(f"engine overhead {seed}", nonce=f"{seed:032x}")
    out = []
    for cls, cfg in resolve_schemes(name, OPTIONS.get(name)):
        mark = cls.plan(model, key, cfg, data=data)
        out.append(cls(mark, [data, *cls.config_data(cfg)]))
    return out


def run_minimal(
    arch: str, data: DataBundle, cfg: TrainConfig, device: torch.device, seed: int
) -> list[float]:
    return minimal_epochs(new_model(arch, data, seed=seed), data, cfg, device)


def run_engine(
    arch: str,
    data: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
    scheme: str | None,
    rest: list[float],
    seed: int,
    amp: Any = None,
) -> list[float]:
    """One fit (with `scheme`'s mark, or plain): its epoch times; the rest of it into `rest`."""
    model = new_model(arch, data, seed=seed)
    schemes = bound(scheme, model, data, seed) if scheme else None
    times, extra = engine_epochs(model, data, cfg, device, schemes, amp)
    rest.append(extra)
    return times


def compare(
    label: str,
    a: Callable[[int], list[float]],
    b: Callable[[int], list[float]],
    repeats: int,
    images: int,
) -> dict[str, Any]:
    """Interleaved runs of a (reference) and b; the median per-epoch ratio b / a."""
    ta: list[float] = []
    tb: list[float] = []
    for r in range(repeats):
        ta += a(r)[1:]
        tb += b(r)[1:]
    ma, mb = statistics.median(ta), statistics.median(tb)
    row = {
        "setting": label,
        "reference_epoch_s": ma,
        "measured_epoch_s": mb,
        "ratio": mb / ma,
        "reference_images_per_s": images / ma,
        "measured_images_per_s": images / mb,
        "epochs_timed": len(ta),
    }
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.2, help="of MNIST's train split")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-mnist", action="store_true")
    ap.add_argument("--only", nargs="*", help="compare only these schemes with plain")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    digits = load_data("digits")
    settings: list[tuple[str, DataBundle, str, float]] = [("digits cnn", digits, "cnn", 1.0)]
    if not args.skip_mnist:
        mnist = load_data(f"mnist:{SHARED_DATA / 'mnist'}")
        settings += [
            ("MNIST cnn", mnist, "cnn", args.fraction),
            ("MNIST resnet20", mnist, "resnet20", args.fraction),
        ]
    engine_rows = []
    for label, data, arch, fraction in settings:
        cfg = TrainConfig(epochs=args.epochs, fraction=fraction, schedule="constant")
        n = len(data.tensors(cfg.split, fraction)[0])
        fits: list[float] = []
        run_min = functools.partial(run_minimal, arch, data, cfg, device)
        run_fit = functools.partial(run_engine, arch, data, cfg, device, None, fits)
        row = compare(f"{label}: engine / minimal loop", run_min, run_fit, args.repeats, n)
        engine_rows.append(row | {"fit_overhead_s": statistics.median(fits)})
    scheme_rows = []
    marked_settings = [("digits cnn", digits, "cnn", 1.0, s) for s in SCHEMES.names()]
    marked_settings = [m for m in marked_settings if m[4] not in SKIP]
    if args.only:
        marked_settings = [m for m in marked_settings if m[4] in args.only]
    if not args.skip_mnist:
        marked_settings += [
            ("MNIST cnn", mnist, "cnn", args.fraction, "uchida"),
            ("MNIST resnet20", mnist, "resnet20", args.fraction, "uchida"),
        ]
    for label, data, arch, fraction, scheme in marked_settings:
        if SCHEMES.get(scheme).task not in ("any", data.task):
            continue
        cfg = TrainConfig(epochs=args.epochs, fraction=fraction)
        n = len(data.tensors(cfg.split, fraction)[0])
        plain = functools.partial(run_engine, arch, data, cfg, device, None, [])
        marked = functools.partial(run_engine, arch, data, cfg, device, scheme, [])
        row = compare(f"{label}: {scheme} / plain", plain, marked, args.repeats, n)
        scheme_rows.append(row | {"scheme": scheme})
    amp_rows = []
    cfg = TrainConfig(epochs=args.epochs)
    n = len(digits.tensors(cfg.split)[0])
    fp32 = functools.partial(run_engine, "cnn", digits, cfg, device, "uchida", [])
    for amp in ("bf16", "fp16"):
        mixed = functools.partial(run_engine, "cnn", digits, cfg, device, "uchida", [], amp=amp)
        row = compare(f"digits cnn uchida: {amp} / fp32", fp32, mixed, args.repeats, n)
        amp_rows.append(row | {"amp": amp})
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        gpu = torch.cuda.get_device_name(device)
    else:
        peak, gpu = None, None
    lines = [
        f"Device: {device}{f' ({gpu})' if gpu else ''}; {args.epochs} epochs per run, "
        f"{args.repeats} interleaved runs per side, first epoch of each run dropped; Adam "
        f"1e-3, batch 64; MNIST on {args.fraction:.0%} of its train split; "
        f"{args.threads} torch threads.",
        "",
        "## Engine vs a minimal hand-written loop (constant learning rate on both sides)",
        "",
        "| setting | minimal loop s/epoch | engine s/epoch | ratio | engine images/s "
        "| after the last epoch (BatchNorm recalibration) s |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['setting']} | {r['reference_epoch_s']:.3f} | {r['measured_epoch_s']:.3f} | "
        f"{r['ratio']:.3f} | {r['measured_images_per_s']:.0f} | {r['fit_overhead_s']:.3f} |"
        for r in engine_rows
    ]
    lines += [
        "",
        "## Marked training vs plain training (both through the engine, default recipes)",
        "",
        "| setting | plain s/epoch | marked s/epoch | ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['setting']} | {r['reference_epoch_s']:.3f} | {r['measured_epoch_s']:.3f} | "
        f"{r['ratio']:.3f} |"
        for r in scheme_rows
    ]
    lines += [
        "",
        "## Mixed precision (`amp`) vs fp32, Uchida's default recipe",
        "",
        "| setting | fp32 s/epoch | mixed s/epoch | ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['setting']} | {r['reference_epoch_s']:.3f} | {r['measured_epoch_s']:.3f} | "
        f"{r['ratio']:.3f} |"
        for r in amp_rows
    ]
    if peak is not None:
        lines += ["", f"Peak GPU memory: {peak:.0f} MiB."]
    name = "engine_overhead" if device.type == "cpu" else f"engine_overhead_{device.type}"
    write_results(
        name,
        {
            "args": vars(args),
            "device": str(device),
            "gpu": gpu,
            "peak_gpu_mib": peak,
            "engine": engine_rows,
            "schemes": scheme_rows,
            "amp": amp_rows,
        },
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
