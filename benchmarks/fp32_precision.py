"""How far a caller's `torch.set_float32_matmul_precision("medium")` moves float32 arithmetic on
this machine's CPU, and whether `nnmark.device.exact_fp32` gives the exact numbers back: the
figure README.md and CHANGELOG.md quote for "medium" (x @ w of tests/test_exact_fp32.py, and a
digits cnn's logits, the kind of activation reading a white-box or black-box mark rests on).

    .venv/bin/python benchmarks/fp32_precision.py

Relative error: ||medium - exact|| / ||exact|| (Frobenius), and the median over entries of
|medium - exact| / |exact|. A CPU without native bfloat16 computes "medium" exactly (0 here).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from nnmark import load_data, new_model
from nnmark.device import exact_fp32

from _common import write_results


def errors(run: Callable[[], torch.Tensor]) -> dict[str, float | bool]:
    """Exact result, the result under "medium", and under "medium" inside exact_fp32."""
    before = torch.get_float32_matmul_precision()
    try:
        exact = run()
        torch.set_float32_matmul_precision("medium")
        medium = run()
        with exact_fp32():
            guarded = run()
    finally:
        torch.set_float32_matmul_precision(before)
    diff = (medium - exact).abs()
    nonzero = exact.abs() > 0
    return {
        "relative_norm": float((medium - exact).norm() / exact.norm()),
        "median_entry_relative": float((diff[nonzero] / exact.abs()[nonzero]).median()),
        "max_abs": float(diff.max()),
        "guard_bit_exact": bool(torch.equal(guarded, exact)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 256, generator=g), torch.randn(256, 256, generator=g)
    data = load_data("digits")
    model = new_model("cnn", data, seed=0).eval()
    images = next(iter(data.loader("test", 64)))[0]
    rows = {"x @ w (64x256 @ 256x256, N(0, 1), seed 0)": errors(lambda: x @ w)}
    with torch.no_grad():
        rows["digits cnn logits (untrained, seed 0; 64 test images)"] = errors(
            lambda: model(images)
        )
    for name, r in rows.items():
        print(name, r, flush=True)
    lines = [
        'torch.set_float32_matmul_precision("medium") against the default ("highest"), and '
        '"medium" inside `nnmark.device.exact_fp32`.',
        "",
        "| computation | relative error (norm) | median entry relative error | max abs "
        "error | exact_fp32 bit-exact |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['relative_norm']:.2e} | {r['median_entry_relative']:.2e} | "
            f"{r['max_abs']:.2e} | {'yes' if r['guard_bit_exact'] else 'NO'} |"
        )
    write_results("fp32_precision", {"rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
