"""What the ONNX white-box check costs and what it tells apart (nnmark/integrations/onnx_arch.py).

Before a white-box mark is read from an ONNX file, nnmark finds the zoo architecture whose
tensors the file's initializers are, builds it with them, and runs it beside the graph on noise
probes: the mark is read only if the two agree (max |difference| at most 1e-3 of the largest
output) and the graph is no more than the zoo model's own export (its operations and values). This script measures, per architecture (cnn, mlp, resnet20, wrn on digits; unet on
the BBBC039 tiles where they are given):

- honest exports (`nnmark.integrations.onnx.export_onnx`) of `--seeds` models trained 2 epochs:
  the check must pass every one; the largest relative output difference it saw;
- two transformed files per model, the marked layer's stored weights changed and undone in the
  graph right after the layer (-W with a Neg; 2W with a Mul by 0.5): answers as the honest file
  (checked) and the check must refuse every one;
- the seconds one check takes (building the ORT session included), median over the seeds;
- the same models through `torch.onnx.export(dynamo=True, optimize=False)` (batch 1, a fixed
  input shape): read, and their two transformed files refused.

    python benchmarks/onnx_check.py [--seeds 3] [--seg-data PATH]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from nnmark import OwnerKey, TrainConfig, load_data, new_model, train
from nnmark.integrations import onnx_arch
from nnmark.integrations.onnx import OnnxSuspect, export_onnx
from nnmark.testing.onnx import undone_transform

from _common import write_results

ARCHS = ("cnn", "mlp", "resnet20", "wrn")


def host(model: torch.nn.Module) -> str:
    """The first weight of rank 2 or more: the layer a white-box mark would read."""
    return next(n for n, p in model.state_dict().items() if n.endswith("weight") and p.dim() >= 2)


def check(
    path: Path, layer: str, x: torch.Tensor, reference: torch.Tensor | None
) -> dict[str, Any]:
    """One check through the public path (OnnxSuspect.for_mark), timed; the file's answers
    compared with `reference` (the honest file's) where given."""
    key = OwnerKey.new("bench", nonce="00" * 16, created="2026-01-01T00:00:00+00:00")
    mark = key.new_mark("uchida", {}, layer, [0] * 8)
    suspect = OnnxSuspect(path)
    start = time.perf_counter()
    view = suspect.for_mark(mark)
    seconds = time.perf_counter() - start
    answers = suspect.predict(x)
    row = {"read": view.unreadable is None, "seconds": seconds, "answers": answers}
    if reference is not None:
        row["same_answers"] = bool(torch.allclose(answers, reference, rtol=1e-4, atol=1e-4))
    return row


def dynamo_export(model: torch.nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    """torch's dynamo exporter, optimize=False (BatchNorm kept), batch 1."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = (torch.zeros(1, *shape),)
        torch.onnx.export(model, x, str(path), dynamo=True, optimize=False, verbose=False)
    return path


def run_arch(arch: str, data: Any, seeds: int, tmp: Path) -> dict[str, Any]:
    honest, refused, same, times, worst = 0, 0, 0, [], 0.0
    dyn_read, dyn_refused, dyn_same = 0, 0, 0
    for seed in range(seeds):
        model = train(new_model(arch, data, seed=seed), data, TrainConfig(epochs=2, seed=seed))
        model.eval()
        path = tmp / f"{arch}{seed}.onnx"
        export_onnx(model, tuple(data.x.shape[1:]), path)
        tensor = host(model)
        layer = tensor.rsplit(".", 1)[0]
        x = data.x[:8]
        row = check(path, layer, x, None)
        honest += row["read"]
        times.append(row["seconds"])
        with torch.no_grad():
            want = model(x)
        scale = float(want.abs().max())
        worst = max(worst, float((want - row["answers"]).abs().max()) / scale)
        for how in ("neg", "scale"):
            bad = undone_transform(path, tensor, tmp / f"{arch}{seed}{how}.onnx", how)
            t = check(bad, layer, x, row["answers"])
            refused += not t["read"]
            same += t["same_answers"]
        dyn = dynamo_export(model, tuple(data.x.shape[1:]), tmp / f"{arch}{seed}dyn.onnx")
        row = check(dyn, layer, x, None)
        dyn_read += row["read"]
        for how in ("neg", "scale"):
            bad = undone_transform(dyn, tensor, tmp / f"{arch}{seed}dyn{how}.onnx", how)
            t = check(bad, layer, x, row["answers"])
            dyn_refused += not t["read"]
            dyn_same += t["same_answers"]
    return {
        "arch": arch,
        "models": seeds,
        "honest_read": honest,
        "transformed": 2 * seeds,
        "transformed_same_answers": same,
        "transformed_refused": refused,
        "honest_max_rel_diff_torch_vs_ort": worst,
        "check_seconds_median": statistics.median(times),
        "dynamo_read": dyn_read,
        "dynamo_transformed_same_answers": dyn_same,
        "dynamo_transformed_refused": dyn_refused,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seg-data", default="../shared/data/seg-bbbc039")
    args = ap.parse_args()
    torch.manual_seed(0)
    digits = load_data("digits")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for arch in ARCHS:
            rows.append(run_arch(arch, digits, args.seeds, Path(d)))
            print(rows[-1], flush=True)
        if Path(args.seg_data).is_dir():
            seg = load_data(f"seg:{args.seg_data}")
            rows.append(run_arch("unet", seg, args.seeds, Path(d)))
            print(rows[-1], flush=True)
    table = [
        "| arch | models | honest read | transformed (same answers) | refused | "
        "torch vs ORT, honest (rel.) | check s (median) | dynamo read | dynamo transformed "
        "(same answers) refused |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        table.append(
            f"| {r['arch']} | {r['models']} | {r['honest_read']} / {r['models']} | "
            f"{r['transformed']} ({r['transformed_same_answers']}) | "
            f"{r['transformed_refused']} / {r['transformed']} | "
            f"{r['honest_max_rel_diff_torch_vs_ort']:.1e} | {r['check_seconds_median']:.2f} | "
            f"{r['dynamo_read']} / {r['models']} | {r['dynamo_transformed_refused']} / "
            f"{r['transformed']} ({r['dynamo_transformed_same_answers']}) |"
        )
    body = (
        "White-box reading of ONNX files: an honest export must be read, a file whose stored "
        "weights are transformed and undone in the graph must not (`OnnxSuspect.for_mark`); "
        "the dynamo columns: the same models through torch.onnx.export(dynamo=True, "
        "optimize=False), batch 1. "
        f"Tolerance {onnx_arch.RTOL:g} of the largest output, {onnx_arch.PROBES} noise "
        "batches.\n\n" + "\n".join(table)
    )
    write_results("onnx_check", {"rows": rows, "rtol": onnx_arch.RTOL}, body)


if __name__ == "__main__":
    main()
