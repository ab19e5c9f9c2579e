"""The output change caused by the fragile integrity mark (nnmark/schemes/fragile.py).

For each model: train it plain, then mark it with `fragile` (0 epochs: only its finalize, which
writes the LSBs), and compare the two on the whole test set: the largest absolute output (logit)
difference, the same relative to the largest absolute logit, and how many test predictions
changed. Also how many LSBs the mark wrote and the verdict on the marked model.

    python benchmarks/fragile_output.py [--mnist /work/shared/data/mnist]
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model, train, verify
from nnmark.schemes import scheme_for

from _common import write_results


def measure(arch: str, data_spec: str, config: TrainConfig) -> dict[str, Any]:
    data = load_data(data_spec)
    plain = train(new_model(arch, data, seed=0), data, config)
    key = OwnerKey.new("integrity", nonce="f0" * 16)
    marked, key = embed(plain, data, "fragile", key=key, config=TrainConfig(epochs=0))
    x, _ = data.tensors("test")
    with torch.no_grad():
        a = torch.cat([plain(c) for c in x.split(512)])
        b = torch.cat([marked(c) for c in x.split(512)])
    scheme = scheme_for(key.marks[0])
    slots = sum(len(v) for v in scheme.held.values())
    return {
        "model": arch,
        "data": data_spec.split(":")[0],
        "test_inputs": len(x),
        "parameters": sum(p.numel() for p in plain.parameters()),
        "lsbs_written": slots,
        "max_abs_output_diff": float((a - b).abs().max()),
        "max_abs_logit": float(a.abs().max()),
        "relative": float((a - b).abs().max() / a.abs().max()),
        "predictions_changed": int((a.argmax(1) != b.argmax(1)).sum()),
        "verdict": verify(marked, key).verdict,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", default="/work/shared/data/mnist", help="MNIST IDX folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cases = [
        ("cnn", "digits", TrainConfig(epochs=20, seed=0)),
        ("resnet20", "digits", TrainConfig(epochs=5, seed=0)),
        ("cnn", f"mnist:{args.mnist}", TrainConfig(epochs=1, seed=0, fraction=0.2)),
    ]
    rows = []
    for arch, spec, cfg in cases:
        try:
            rows.append(measure(arch, spec, cfg))
        except Exception as exc:  # noqa: BLE001 - one failed case does not stop the others
            rows.append({"model": arch, "data": spec, "error": f"{type(exc).__name__}: {exc}"})
        print(rows[-1], flush=True)
    lines = [
        "Plain model vs the same model after the fragile mark's finalize (LSBs written), on the "
        "whole test set. Training: digits cnn 20 epochs, digits resnet20 5 epochs, MNIST cnn "
        "1 epoch on 20 % of the train split (the output change does not depend on accuracy).",
        "",
        "| model | data | test inputs | parameters | LSBs written | max abs output diff | "
        "max abs logit | relative | predictions changed | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['data']} | error: {r['error']} |")
            continue
        lines.append(
            f"| {r['model']} | {r['data']} | {r['test_inputs']} | {r['parameters']:,} | "
            f"{r['lsbs_written']} | {r['max_abs_output_diff']:.3g} | {r['max_abs_logit']:.3g} | "
            f"{r['relative']:.3g} | {r['predictions_changed']} | {r['verdict']} |"
        )
    write_results("fragile_output", {"rows": rows}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
