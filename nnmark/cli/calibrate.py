"""`nnmark calibrate`: measure unmarked models on a key's marks and store it beside the key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nnmark.cli.common import DeviceOpt, check_output, command, err, out, pick_device
from nnmark.config import MAX_EPOCHS
from nnmark.errors import NNMarkError, one_line
from nnmark.keys import MAX_CALIBRATION_MODELS


@command("calibrate")
def calibrate_cmd(
    key_path: Annotated[
        Path, typer.Argument(help="Owner key file (updated in place unless --out)")
    ],
    data: Annotated[
        str, typer.Option("--data", help="NAME[:PATH] to train unmarked models on")
    ] = "digits",
    models: Annotated[int, typer.Option("--models", help="How many unmarked models")] = 20,
    arch: Annotated[
        str | None,
        typer.Option(
            "--model", help="Their architecture (default: the one the key names, else cnn)"
        ),
    ] = None,
    epochs: Annotated[
        int,
        typer.Option(help="Training epochs per unmarked model (use the suspect's recipe)"),
    ] = 5,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Write the key here instead")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="--out: overwrite an existing file (another key)")
    ] = False,
    key_data: Annotated[
        list[str] | None,
        typer.Option(
            "--key-data",
            help="Another data set the key re-derives inputs from (unrelated's source; repeatable)",
        ),
    ] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Train N unmarked models, measure their answers on the key's triggers, store the rate.

    Train them as the suspect was trained (architecture, epochs): models trained less answer
    differently. No verdict depends on the result (every trigger set's test is exact); it shows
    how unmarked models meet the key and the p-values it gives them.
    """
    from rich.progress import Progress

    from nnmark.api import new_model
    from nnmark.calibrate import calibrate, unmarked_models
    from nnmark.data import load_data
    from nnmark.keys import OwnerKey

    dev = pick_device(device)
    if not 1 <= models <= MAX_CALIBRATION_MODELS:
        raise NNMarkError(f"--models must be in [1, {MAX_CALIBRATION_MODELS}], got {models}")
    if not 1 <= epochs <= MAX_EPOCHS:  # before the key is read or a model trained
        raise NNMarkError(f"--epochs must be in [1, {MAX_EPOCHS}], got {epochs}")
    key = OwnerKey.load(key_path)
    in_place = out_path is None or out_path.resolve() == key_path.resolve()
    target = check_output(out_path or key_path, force or in_place)
    bundle = load_data(data)
    extra = [load_data(spec) for spec in key_data or []]
    if arch is None:  # the suspect's architecture is the key's, as a rule (a zoo one)
        from nnmark.models import MODELS

        named = (m.arch.get("name") for m in key.marks if isinstance(m.arch, dict))
        arch = next((a for a in named if isinstance(a, str) and a in MODELS.names()), "cnn")
    # a dry run on one untrained model: a key for other inputs or another task fails now, in
    # one line, not after N models have trained (usability review, session 32)
    try:
        calibrate(key, [new_model(arch, bundle, seed=0)], data=bundle, key_data=extra)
    except RuntimeError as exc:  # torch's own words, e.g. a matmul of the key's inputs
        raise NNMarkError(
            f"the key's marks do not run on a {arch} for {data} (inputs {bundle.input_shape}): "
            f"{one_line(exc)}; calibrate on the data the key was made for"
        ) from None
    with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
        task = bar.add_task(f"training {models} unmarked {arch} models", total=models)
        nets = unmarked_models(
            bundle,
            models,
            arch=arch,
            epochs=epochs,
            progress=lambda i, n: bar.update(task, completed=i),
            device=dev,
        )
    with err.status("measuring the marks"):
        key = calibrate(key, nets, data=bundle, key_data=extra)
    key.save(target)
    for idx, entry in key.derived["calibration"].items():
        mark = key.marks[int(idx)]
        rate = (
            f", unmarked rate upper bound {entry['ucb']:.4f} (pooled), "
            f"{entry['model_ucb']:.4f} (highest model)"
            if "ucb" in entry
            else ""
        )
        low = min(entry["p_values"])
        out.print(f"mark {idx} ({mark.scheme}): smallest unmarked p-value {low:.3g}{rate}")
    out.print(f"saved {target}")
