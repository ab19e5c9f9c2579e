"""`nnmark demo`: the whole story on the built-in digits data in well under two minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from nnmark.cli.common import DeviceOpt, check_output, command, epoch_progress, out, pick_device
from nnmark.config import MAX_EPOCHS, MAX_SEED
from nnmark.errors import NNMarkError


@command("demo")
def demo_cmd(
    epochs: Annotated[
        int, typer.Option(min=1, max=MAX_EPOCHS, help="Training epochs per model")
    ] = 20,
    bits: Annotated[
        int,
        typer.Option(
            min=1,
            max=576,
            help="Payload bits of the Uchida mark (the demo cnn's host "
            "layer holds 576 filter means)",
        ),
    ] = 64,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Training seed")] = 0,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Also save the models and key here")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the files a previous --out-dir run left")
    ] = False,
    device: DeviceOpt = "auto",
) -> None:
    """Train a plain and an Uchida-marked CNN on digits, verify, attack, verify again."""
    from nnmark.api import attack, embed, model_info, new_model, train, verify
    from nnmark.data import load_data
    from nnmark.io import atomic_write_all, model_bytes
    from nnmark.tasks import evaluate
    from nnmark.train import TrainConfig

    dev = pick_device(device)
    names = [f"{n}.safetensors" for n in ("plain", "marked", "stolen")] + ["owner.nnkey"]
    if out_dir is not None:  # before any work: a key is never replaced unasked
        _check_out_dir(out_dir, names, force)
    start = time.perf_counter()
    data = load_data("digits")
    cfg = TrainConfig(epochs=epochs, seed=seed)
    out.print(
        f"digits: {len(data.splits['train'])} train / {len(data.splits['test'])} test images, "
        f"8x8; thief split {len(data.splits['thief'])} (never used by the owner)",
    )
    net = new_model("cnn", data, seed=seed).to(dev)
    with epoch_progress("plain cnn      ", enabled=True) as p:
        plain = train(net, data, cfg, progress=p)
    with epoch_progress("marked cnn     ", enabled=True) as p:
        marked, key = embed(
            net, data, "uchida", owner="nnmark demo", bits=bits, config=cfg, progress=p
        )
    out.print("thief: prunes 50% of the weights, then fine-tunes 5 epochs on the thief split")
    stolen = attack(marked, "prune:fraction=0.5,finetune:epochs=5", data, seed=seed + 1)

    test = data.loader("test", 256)
    rows = [
        ("plain model (never marked)", plain),
        ("marked model", marked),
        ("marked, pruned 50% + fine-tuned 5 epochs", stolen),
    ]
    table = Table(title=f"Uchida mark, {bits} bits in layer {key.marks[0].layer}; alpha 1e-6")
    for col in ("model", "test accuracy", "BER", "p-value", "verdict"):
        table.add_column(col)
    for label, model in rows:
        v = verify(model, key)
        acc = evaluate(model, test, data.task)["accuracy"]
        style = "green" if v.verdict == "found" else "yellow"
        verdict = Text(v.verdict, style=style)
        table.add_row(label, f"{acc:.2%}", f"{v.ber:.3f}", f"{v.p_value:.2e}", verdict)
    out.print(table)
    out.print(
        "p-value: chance that a model never marked with this key reads at least this much of "
        "it: the smaller of two exact tails, doubled (the bits it matches, 1/2 each; the sum of "
        "its bits' scores, standard normal for such a model).",
        soft_wrap=False,  # prose: wrapped at words
    )
    if out_dir is not None:  # all four files or none (io.atomic_write_all)
        out_dir.mkdir(exist_ok=True)
        models = [model_bytes(m, model_info(m, data)) for m in (plain, marked, stolen)]
        files = [(out_dir / n, b) for n, b in zip(names, [*models, key.text().encode()])]
        atomic_write_all(files, private=[out_dir / "owner.nnkey"])
        out.print(f"saved models and key in {out_dir}")
    out.print(f"done in {time.perf_counter() - start:.1f} s")


def _check_out_dir(out_dir: Path, names: list[str], force: bool) -> None:
    """The files a run would write in `out_dir` can be written (and replaced only with force)."""
    if out_dir.is_dir():
        for name in names:
            check_output(out_dir / name, force)
    elif out_dir.exists():
        raise NNMarkError(f"--out-dir {out_dir} is not a folder")
    else:
        check_output(out_dir, False)  # its parent exists and is writable
