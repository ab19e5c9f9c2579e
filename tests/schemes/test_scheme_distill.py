"""Distill-to-embed: a fresh student learns only from an unmarked teacher's outputs (the labels
are scrambled here, so reading one would hurt) and carries the owner's marks.

Which schemes fit: uchida and stdm (a penalty on the weights), tartaglione and watermas (key
values frozen from the first step; the replicas' loss is the distillation loss too) and actsign
(its key inputs are key-derived noise) need no label at all; deepsigns picks its key inputs by
class label, so it needs a few labels of the owner's data that pure distillation lacks; fragile
is written after any training, distillation included. Trigger sets (content, adi, noise,
unrelated, newlabel) come with the labels their key gives: the student learns those rows from
them and every other row from the teacher (the data's labels reach no loss).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from scheme_recipes import owner_key
from torch import nn
from typer.testing import CliRunner

from nnmark import TrainConfig, embed, evaluate, model_info, new_model, save_model, verify
from nnmark.api import default_recipe
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.schemes import SCHEMES
from nnmark.train import fit


@pytest.fixture(scope="module")
def scrambled(digits: DataBundle) -> DataBundle:
    gen = torch.Generator().manual_seed(1)
    return dataclasses.replace(digits, y=torch.randint(0, 10, digits.y.shape, generator=gen))


@pytest.fixture(scope="module")
def distilled(  # type: ignore[no-untyped-def]
    base_cnn: nn.Module, digits: DataBundle, scrambled: DataBundle, once
) -> nn.Module:
    """A student distilled from base_cnn without a mark (the default recipe; no label read):
    what a fine-tune-to-embed scheme is distilled into."""
    return once(  # type: ignore[no-any-return]
        "distilled_student",
        lambda: fit(
            new_model("cnn", digits, seed=5), scrambled, (), TrainConfig(), teacher=base_cnn
        ),
    )


@pytest.mark.parametrize("scheme", ["uchida+actsign", "stdm", "tartaglione", "watermas"])
def test_student_carries_the_mark_without_reading_a_label(
    scheme: str,
    base_cnn: nn.Module,
    digits: DataBundle,
    scrambled: DataBundle,
    request: pytest.FixtureRequest,
) -> None:
    """At each scheme's default recipe, options and bits in its own situation (session 40: was
    8 epochs at lr 3e-3 and tartaglione at R = 2): a fresh student for train-to-embed, the
    distilled plain student for fine-tune-to-embed (tartaglione: its 4 mark epochs at R = 4;
    from a fresh student at 20 epochs, R = 4 costs 2.5x a plain training per epoch)."""
    finetune = any(SCHEMES.get(n).situation == "finetune" for n in scheme.split("+"))
    student, key = embed(
        request.getfixturevalue("distilled") if finetune else new_model("cnn", digits, seed=5),
        scrambled,
        scheme,
        key=owner_key("distiller", "dd"),
        config=default_recipe(scheme, finetune=finetune),
        teacher=base_cnn,
    )
    v = verify(student, key)
    assert v.verdict == "found" and all(p.ber == 0.0 for p in (v.parts or (v,)))
    test = digits.loader("test", 256)
    teacher_acc = evaluate(base_cnn, test, digits.task)["accuracy"]
    student_acc = evaluate(student, test, digits.task)["accuracy"]
    print(f"distill-to-embed {scheme}: teacher {teacher_acc:.4f}, student {student_acc:.4f}")
    # scrambled labels would give chance (0.1): the teacher's outputs alone trained it (what
    # each mark costs in accuracy is measured in the benchmarks)
    assert student_acc > 0.8
    assert verify(base_cnn, key).verdict == "not_found"  # the teacher never had the marks


@pytest.mark.parametrize("scheme", ["content+adi", "newlabel"])
def test_a_distilled_student_learns_a_trigger_set_from_its_keys_labels(
    scheme: str, base_cnn: nn.Module, digits: DataBundle, scrambled: DataBundle
) -> None:
    """Determinism review, session 37: distilled, the trigger rows followed the teacher too,
    so the marks were never learnt (content p 0.14, adi p 1), and newlabel's grown head was a
    RuntimeError against the teacher's. At each scheme's default recipe, from scrambled
    labels: every mark found."""
    student, key = embed(
        new_model("cnn", digits, seed=5),
        scrambled,
        scheme,
        key=owner_key("distiller", "dd"),
        config=default_recipe(scheme),
        teacher=base_cnn,
    )
    v = verify(student, key, data=[scrambled])
    assert v.verdict == "found" and all(p.verdict == "found" for p in v.parts), v
    accuracy = evaluate(student, digits.loader("test", 256), digits.task)["accuracy"]
    assert accuracy > 0.8  # scrambled labels would give chance (0.1)
    assert verify(base_cnn, key, data=[scrambled]).verdict == "not_found"


def test_a_distilled_unet_learns_segtriggers_masks(seg32: DataBundle, seg_models) -> None:  # type: ignore[no-untyped-def]
    """Diff review, session 37: segmentation distillation took every mask from the teacher, so
    a segtrigger mark was never learnt (BER 0.5); the key's masks now reach the loss."""
    teacher, _, _ = seg_models  # its plain U-Net, trained by the small recipe used here too
    recipe = TrainConfig(epochs=20, seed=0, lr=3e-3, batch_size=16)  # tests/conftest SEG_RECIPE
    student, key = embed(
        new_model("unet", seg32, seed=0, width=8),
        seg32,
        "segtrigger",
        key=owner_key("seg distiller", "5d"),
        config=recipe,
        teacher=teacher,
    )
    assert verify(student, key, data=[seg32]).verdict == "found"
    assert verify(teacher, key, data=[seg32]).verdict == "not_found"


def test_cli_distill_to_embed_with_a_message(base_cnn, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher = tmp_path / "teacher.safetensors"
    save_model(base_cnn, model_info(base_cnn, digits), teacher)
    student, key = tmp_path / "student.safetensors", tmp_path / "k.nnkey"
    runner = CliRunner()
    args = ["embed", str(teacher), "--distill", "--model", "cnn", "--scheme", "actsign"]
    args += ["--message", "ACME", "--bits", "96"]  # the default recipe (session 40: 4 epochs)
    args += ["--out", str(student), "--key-out", str(key)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    v = json.loads(runner.invoke(app, ["verify", str(student), "--key", str(key), "--json"]).stdout)
    assert v["verdict"] == "found" and v["ber"] == 0.0 and v["n"] == 96 and v["message"] == "ACME"
    r = runner.invoke(app, ["verify", str(teacher), "--key", str(key), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["verdict"] == "not_found"
