"""`nnmark embed --distill` follows the scheme's situation (nnmark.api.distill_recipes): a
scheme that marks a trained model (tartaglione) is marked into a plain student distilled
first, by its fine-tune recipe, instead of from scratch at the train recipe; the teacher stays
the only label source."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from nnmark import (
    TrainConfig,
    default_recipe,
    distill_recipes,
    embed,
    evaluate,
    model_info,
    new_model,
    save_model,
)
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError


def test_distill_recipes_follow_the_schemes_situation() -> None:
    """A scheme that marks from scratch is distilled with its mark at the default recipe; one
    that marks a trained model distils a plain student at the default recipe, then marks it by
    its fine-tune recipe; a composite with one such part is fine-tuned as `nnmark embed` and
    the bench fine-tune it (the longest part's epochs: uchida's 20)."""
    assert distill_recipes("uchida") == (None, TrainConfig())
    assert distill_recipes("content+adi") == (None, TrainConfig())
    assert distill_recipes("tartaglione") == (
        TrainConfig(),
        default_recipe("tartaglione", finetune=True),
    )
    assert distill_recipes("tartaglione")[1].epochs == 4
    assert distill_recipes("uchida+tartaglione") == (TrainConfig(), TrainConfig())


def test_a_mark_that_cannot_be_found_is_refused_before_the_plain_student(
    digits: DataBundle,
) -> None:
    """With `plain`, the marks are checked before the plain phase trains, not after it."""
    epochs: list[int] = []
    with pytest.raises(NNMarkError, match="4 bits reach at best"):
        embed(
            new_model("cnn", digits, seed=5),
            digits,
            "uchida",
            bits=4,
            teacher=new_model("cnn", digits, seed=6),
            plain=TrainConfig(),
            progress=lambda epoch, total, loss: epochs.append(epoch),
        )
    assert epochs == []


def test_cli_distills_tartaglione_into_a_plain_student_then_marks_it(  # type: ignore[no-untyped-def]
    base_cnn: nn.Module,
    digits: DataBundle,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`nnmark embed TEACHER --distill --scheme tartaglione` at the default recipe: a plain
    student distilled 20 epochs, then marked 4 epochs at R = 4 (session 41: it was marked from
    scratch, 20 epochs at R = 4, not the scheme's recipe). The command reads digits with every
    label scrambled (reading one would hurt): the teacher is the only label source."""
    gen = torch.Generator().manual_seed(1)
    scrambled = dataclasses.replace(digits, y=torch.randint(0, 10, digits.y.shape, generator=gen))
    monkeypatch.setattr("nnmark.data.load_data", lambda spec: scrambled)
    monkeypatch.setenv("NNMARK_PROGRESS", "1")  # the bar is drawn off a terminal too
    monkeypatch.setenv("COLUMNS", "200")  # and not cut at 80
    teacher = tmp_path / "teacher.safetensors"
    save_model(base_cnn, model_info(base_cnn, digits), teacher)
    student, key = tmp_path / "student.safetensors", tmp_path / "k.nnkey"
    runner = CliRunner()
    args = ["embed", str(teacher), "--distill", "--scheme", "tartaglione"]
    r = runner.invoke(app, [*args, "--out", str(student), "--key-out", str(key)])
    assert r.exit_code == 0, r.stderr  # its own check found the mark in the saved student
    # one bar over both phases: the plain student's 20 epochs, then the mark's 4
    assert "embed tartaglione: 20 plain + 4 marked" in r.stderr, r.stderr
    assert re.search(r"\b24/24\b", r.stderr), r.stderr
    v = json.loads(runner.invoke(app, ["verify", str(student), "--key", str(key), "--json"]).stdout)
    assert v["verdict"] == "found" and v["ber"] == 0.0
    # the distilled student's key commits to no reference (nnmark.api.embed's `plain`): no
    # looks are counted for --reference-unmarked
    assert "reference" not in json.loads(key.read_text()) and "looks" not in v["details"]
    r = runner.invoke(app, ["verify", str(teacher), "--key", str(key), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["verdict"] == "not_found"
    from nnmark.io import load_model

    test = digits.loader("test", 256)  # the true labels
    teacher_acc = evaluate(base_cnn, test, digits.task)["accuracy"]
    student_acc = evaluate(load_model(student)[0], test, digits.task)["accuracy"]
    print(
        f"distill-to-embed tartaglione (CLI): teacher {teacher_acc:.4f}, student {student_acc:.4f}"
    )
    # as tests/schemes/test_scheme_contract.py's fidelity guard: a broken embed falls towards
    # chance (0.1; scrambled labels read would give it too); 0.03 is 11 of digits' 359 test
    # images, about three times the worst honest embed's drop there
    assert student_acc >= teacher_acc - 0.03


def test_a_reference_is_refused_with_a_plain_phase(digits) -> None:  # type: ignore[no-untyped-def]
    """With plain= the mark goes into the plain-trained student, so `model` (untrained) is not
    the model it starts from: committing it as the reference would realign suspects to it."""
    student = new_model("cnn", digits)
    with pytest.raises(NNMarkError, match="not with plain="):
        embed(student, digits, "uchida", plain=TrainConfig(), reference=student)


def test_frontier_distilled_into_a_plain_student_is_found(base_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    """Frontier stitches a trained model's frontier: distilled, the plain student is trained
    first (the adversaries are crafted on it, not on an untrained net's warm-up), then
    stitched by frontier's fine-tune recipe; the teacher never saw the key."""
    from nnmark import OwnerKey, verify

    plain, config = distill_recipes("frontier")
    assert plain == TrainConfig() and config == default_recipe("frontier", finetune=True)
    student, key = embed(
        new_model("cnn", digits, seed=3),
        digits,
        "frontier",
        key=OwnerKey.new("distiller", nonce="d5" * 16),
        config=config,
        teacher=base_cnn,
        plain=plain,
    )
    v = verify(student, key)
    assert v.verdict == "found", v
    assert verify(base_cnn, key).verdict == "not_found"
    test = digits.loader("test", 256)
    teacher_acc = evaluate(base_cnn, test, digits.task)["accuracy"]
    student_acc = evaluate(student, test, digits.task)["accuracy"]
    print(f"distill-to-embed frontier: teacher {teacher_acc:.4f}, student {student_acc:.4f}")
    assert student_acc >= teacher_acc - 0.03  # the CLI test's fidelity guard, same reason
