"""Distill-to-embed: a fresh student learns only from an unmarked teacher's outputs (its labels
are scrambled here, so reading one would hurt) and carries the owner's marks.

Which schemes fit: uchida (weights) and actsign (its key inputs are key-derived noise) need no
label at all; deepsigns picks its key inputs by class label, so it needs a few labels the pure
distillation setting lacks; fragile is written after any training, distillation included.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn
from typer.testing import CliRunner

from nnmark import OwnerKey, TrainConfig, embed, evaluate, model_info, new_model, save_model, verify
from nnmark.cli import app
from nnmark.data.base import DataBundle


def test_student_carries_the_marks_and_matches_the_teacher(
    base_cnn: nn.Module, digits: DataBundle
) -> None:
    scrambled = dataclasses.replace(
        digits, y=torch.randint(0, 10, digits.y.shape, generator=torch.Generator().manual_seed(1))
    )
    key = OwnerKey.new("distiller", nonce="dd" * 16)
    student, key = embed(
        new_model("cnn", digits, seed=5),
        scrambled,
        "uchida+actsign",
        key=key,
        bits=64,
        config=TrainConfig(epochs=10, lr=3e-3, seed=0),  # 1e-3: 0.88 (plain student 0.93)
        teacher=base_cnn,
    )
    v = verify(student, key)
    assert v.verdict == "found" and [p.ber for p in v.parts] == [0.0, 0.0]
    assert all(p.p_value < 1e-15 for p in v.parts)
    test = digits.loader("test", 256)
    teacher_acc = evaluate(base_cnn, test, digits.task)["accuracy"]
    student_acc = evaluate(student, test, digits.task)["accuracy"]
    print(f"distill-to-embed: teacher {teacher_acc:.4f}, student {student_acc:.4f}")
    assert student_acc >= teacher_acc - 0.03
    assert verify(base_cnn, key).verdict == "not_found"  # the teacher never had the marks


def test_cli_distill_to_embed_with_actsign(base_cnn, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher = tmp_path / "teacher.safetensors"
    save_model(base_cnn, model_info(base_cnn, digits), teacher)
    student, key = tmp_path / "student.safetensors", tmp_path / "k.nnkey"
    runner = CliRunner()
    args = ["embed", str(teacher), "--distill", "--model", "cnn", "--scheme", "actsign"]
    args += ["--epochs", "4", "--bits", "48", "--out", str(student), "--key-out", str(key)]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    v = json.loads(runner.invoke(app, ["verify", str(student), "--key", str(key), "--json"]).stdout)
    assert v["verdict"] == "found" and v["ber"] == 0.0 and v["n"] == 48
    r = runner.invoke(app, ["verify", str(teacher), "--key", str(key), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["verdict"] == "not_found"
