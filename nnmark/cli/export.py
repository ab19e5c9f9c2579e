"""`nnmark export`: a model file as ONNX, with its marked weights kept readable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nnmark.cli.common import (
    ForceOpt,
    MaxParamsOpt,
    check_model_output,
    command,
    distinct_paths,
    out,
)
from nnmark.errors import NNMarkError


@command("export")
def export_cmd(
    model_path: Annotated[Path, typer.Argument(help="Model file (.safetensors)")],
    out_path: Annotated[Path, typer.Option("--out", help="Output file")],
    fmt: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    force: ForceOpt = False,
    max_params: MaxParamsOpt = None,
) -> None:
    """Export a model (ONNX, without BatchNorm folding, so verify can read the weights)."""
    from nnmark.integrations.onnx import export_onnx
    from nnmark.io import load_model
    from nnmark.models import check_run_cost

    if fmt != "onnx":
        raise NNMarkError(f"unknown format {fmt!r} (known: onnx)")
    check_model_output(out_path, ".onnx", force)
    distinct_paths({"--out": out_path}, {"MODEL": model_path})
    model, info = load_model(model_path, max_params=max_params)
    check_run_cost(info.arch, info.arch_kwargs, info.input_shape)  # the export traces it
    export_onnx(model, tuple(info.input_shape), out_path)
    out.print(f"saved {out_path}")
