"""An honest user's ordinary mistakes (usability review, session 32): each is refused in one line
with exit 2 before any file is written, or said plainly, instead of a wrong file or a verdict
that blames the model."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nnmark import model_info
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.io import ModelInfo, load_model, save_model
from nnmark.models import create_model

runner = CliRunner()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, plain_cnn, digits: DataBundle) -> Path:  # type: ignore[no-untyped-def]
    """The digits cnn, and an untrained cnn built for MNIST's 28 x 28 inputs."""
    d = tmp_path_factory.mktemp("usability")
    save_model(plain_cnn, model_info(plain_cnn, digits), d / "digits.safetensors")
    mnist = create_model("cnn", in_channels=1, num_classes=10, input_size=28)
    info = ModelInfo(arch="cnn", arch_kwargs={"input_size": 28}, input_shape=(1, 28, 28))
    save_model(mnist, info, d / "mnist.safetensors")
    return d


@pytest.mark.parametrize(
    "args, says",
    [
        (["train", "--epochs", "1", "--out", "{d}/t.pt"], "--out must be a .safetensors file"),
        (["train", "--epochs", "1", "--out", "{d}/t"], "got 't'"),
        (["attack", "noise", "{d}/digits.safetensors", "--out", "{d}/a.onnx"], "nnmark export"),
        (["embed", "{d}/digits.safetensors", "--out", "{d}/e.pt"], ".safetensors file"),
        (["export", "{d}/digits.safetensors", "--out", "{d}/x.safetensors"], "a .onnx file"),
        (
            ["train", "--epochs", "1", "--bits", "8", "--out", "{d}/t.safetensors"],
            "need a --scheme",
        ),
        (["train", "--message", "hi", "--out", "{d}/t.safetensors"], "need a --scheme"),
        (["train", "--key-out", "{d}/t.nnkey", "--out", "{d}/t.safetensors"], "need a --scheme"),
        (  # taken and ignored before (usability review, session 38)
            ["train", "--scheme", "content", "--bits", "64", "--epochs", "1"]
            + ["--out", "{d}/t.safetensors", "--key-out", "{d}/t.nnkey"],
            "bits are a payload's length; content carries no payload",
        ),
    ],
)
def test_outputs_and_options_that_would_mislead_are_refused_first(
    files: Path, args: list[str], says: str
) -> None:
    """A model written as `a.onnx` or `a.pt` held safetensors bytes no command read back under
    that name, and `train --scheme none --bits 8` trained without a word about the bits."""
    before = sorted(p.name for p in files.iterdir())
    r = runner.invoke(app, [a.format(d=files) for a in args])
    assert r.exit_code == 2 and says in one_line(r.stderr), r.stderr
    assert sorted(p.name for p in files.iterdir()) == before  # nothing written


def test_attack_checks_the_data_fits_before_it_writes(files: Path) -> None:
    """`attack prune MNIST_MODEL --data digits --out EXISTING` replaced EXISTING, then failed
    inside a matmul."""
    victim = files / "victim.safetensors"
    victim.write_bytes((files / "digits.safetensors").read_bytes())
    before = victim.read_bytes()
    args = ["attack", "prune", str(files / "mnist.safetensors"), "--data", "digits"]
    r = runner.invoke(app, [*args, "--out", str(victim), "--force"])
    assert r.exit_code == 2 and "model expects inputs (1, 28, 28)" in one_line(r.stderr)
    assert victim.read_bytes() == before
    args = ["embed", str(files / "mnist.safetensors"), "--epochs", "1"]
    r = runner.invoke(app, [*args, "--out", str(files / "e.safetensors")] + [
        "--key-out", str(files / "e.nnkey")])  # fmt: skip
    assert r.exit_code == 2 and "data digits has (1, 8, 8)" in one_line(r.stderr)
    assert not (files / "e.safetensors").exists() and not (files / "e.nnkey").exists()


def test_attack_evaluates_before_it_writes(files: Path, tmp_path: Path) -> None:
    """Review (session 34): `attack --data` saved --out, then failed evaluating (a model whose
    metadata names another task; a folder too small to hold a test split) with exit 2 and a
    generic error: the existing file was replaced. Now it evaluates first, one clear line."""
    from PIL import Image

    victim = files / "victim2.safetensors"
    victim.write_bytes(b"PRECIOUS")
    digits_model = files / "digits.safetensors"
    lying = tmp_path / "seg.safetensors"  # the digits cnn, its metadata saying segmentation
    model, info = load_model(digits_model)
    save_model(model, dataclasses.replace(info, task="segmentation"), lying)
    args = ["attack", "prune", str(lying), "--data", "digits", "--out", str(victim), "--force"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "the model does not evaluate on it" in one_line(r.stderr)
    assert victim.read_bytes() == b"PRECIOUS"
    folder = tmp_path / "tiny"
    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        Image.new("L", (4, 4), 255).save(folder / c / "0.png")
    wide = tmp_path / "wide.safetensors"
    save_model(
        create_model("cnn", in_channels=1, num_classes=2, input_size=32),
        ModelInfo(arch="cnn", arch_kwargs={"input_size": 32, "num_classes": 2}),
        wide,
    )
    args = ["attack", "prune", str(wide), "--data", f"folder:{folder}", "--out", str(victim)]
    args.append("--force")
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "no data to evaluate: the split is empty" in one_line(r.stderr)
    assert victim.read_bytes() == b"PRECIOUS"


def test_a_diverged_training_is_not_saved(tmp_path: Path) -> None:
    """At --lr 1e9 every weight went NaN: the model and its key were saved with exit 0 and the
    advice "train longer"."""
    out, key = tmp_path / "t.safetensors", tmp_path / "t.nnkey"
    args = ["train", "--epochs", "1", "--lr", "1e9", "--scheme", "uchida", "--out", str(out)]
    r = runner.invoke(app, [*args, "--key-out", str(key)])
    assert r.exit_code == 2 and "training diverged" in one_line(r.stderr), r.stderr
    assert "lower --lr" in r.stderr and not out.exists() and not key.exists()


def test_reference_unmarked_with_a_key_that_commits_to_none(files: Path, tmp_path: Path) -> None:
    """A key trained without `--reference-unmarked` commits to no unmarked model; giving one at
    verify time read not_found, p 1, on the owner's own intact model. Now: exit 2, with what to
    do. The not-claimed line says what a claim needs and what p was."""
    out, key = tmp_path / "m.safetensors", tmp_path / "k.nnkey"
    args = ["train", "--epochs", "1", "--scheme", "uchida", "--out", str(out)]
    assert runner.invoke(app, [*args, "--key-out", str(key)]).exit_code == 0
    args = ["verify", str(out), "--key", str(key), "--reference-unmarked"]
    r = runner.invoke(app, [*args, str(files / "digits.safetensors")])
    assert r.exit_code == 2 and "commits to no unmarked reference" in one_line(r.stderr)
    assert "verify without it" in r.stderr
    r = runner.invoke(app, ["verify", str(files / "digits.safetensors"), "--key", str(key)])
    assert r.exit_code == 1 and "not claimed: a claim needs p < alpha" in r.stdout, r.stdout
    assert "; p is " in r.stdout


def test_a_reshaping_attack_points_to_the_unmarked_reference(
    files: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`attack morph` advised `--reference ORIGINAL`, which refuses a marked reference for the
    marks it reshapes; `--reference-unmarked` is the option that reads them."""
    out = files / "morphed.safetensors"
    with caplog.at_level(logging.WARNING):
        args = ["attack", "morph", str(files / "digits.safetensors"), "--out", str(out)]
        r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    assert "--reference-unmarked" in caplog.text and "--reference ORIGINAL" not in caplog.text


def test_calibrate_tries_the_key_before_training_models(tmp_path: Path) -> None:
    """A digits key calibrated on MNIST trained every unmarked model first (20 x 5 epochs by
    default), then failed on the key's inputs."""
    from nnmark.data import SHARED_DATA

    out, key = tmp_path / "m.safetensors", tmp_path / "k.nnkey"
    args = ["train", "--epochs", "1", "--scheme", "content", "--out", str(out)]
    # one epoch: a key, not yet a mark (exit 1 says so; the key is what this test needs)
    assert runner.invoke(app, [*args, "--key-out", str(key)]).exit_code == 1
    before = key.read_bytes()
    args = ["calibrate", str(key), "--data", f"mnist:{SHARED_DATA / 'mnist'}", "--epochs", "50"]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "do not run on a cnn for mnist" in one_line(r.stderr), r.stderr
    assert key.read_bytes() == before


def test_small_things_a_user_meets(files: Path) -> None:
    """`--version`; an ONNX file given to a command that trains or runs torch; a file an attack
    reshaped, loaded through the zoo; the demo's bounds."""
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("nnmark ")
    onnx = files / "m.onnx"
    onnx.write_bytes(b"not read")
    r = runner.invoke(app, ["evaluate", str(onnx)])
    assert r.exit_code == 2 and "read by verify and inspect only" in one_line(r.stderr)
    wide = files / "wide.safetensors"
    r = runner.invoke(
        app, ["attack", "morph", str(files / "digits.safetensors"), "--out", str(wide)]
    )
    assert r.exit_code == 0, r.stderr
    r = runner.invoke(app, ["evaluate", str(wide)])
    assert r.exit_code == 2 and "an attack changed its layers' shapes" in one_line(r.stderr)
    for option in ("--epochs", "--bits"):
        r = runner.invoke(app, ["demo", option, "0"])
        assert r.exit_code == 2 and "greater than or equal to 1" in r.stderr


def test_training_a_plain_model_for_no_epoch_is_refused(tmp_path: Path) -> None:
    """New-user review, session 39: `train --epochs 0` saved an untrained model (10 % accuracy)
    without a word. A plain model now needs an epoch; a key-only run (a scheme) still says
    that its mark did not take."""
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train", "--epochs", "0", "--out", str(out)])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "--epochs 0 trains nothing" in lines[0]
    assert not out.exists()


def test_identify_reads_the_other_candidates_when_one_key_is_for_another_task(  # type: ignore[no-untyped-def]
    uchida_cnn, digits: DataBundle, tmp_path: Path
) -> None:
    """One key for MNIST in the folder stopped `identify` with exit 2, though another key
    matched; it is now a candidate not read, with why, and the named line gives the key file.
    The other task is a tiny CIFAR-10 folder (`nnmark.testing.cifar`: 3 x 32 x 32 inputs a
    digits model cannot take, as MNIST's 28 x 28; loading MNIST twice was most of this test's
    time: session 40)."""
    from nnmark.testing.cifar import write_cifar10

    model, key = uchida_cnn
    keys = tmp_path / "keys"
    keys.mkdir()
    key.save(keys / "alice.nnkey")
    other = f"cifar10:{tmp_path / 'cifar10'}"
    write_cifar10(tmp_path / "cifar10", per_batch=40)
    args = ["train", "--data", other, "--epochs", "0"]
    args += ["--scheme", "content", "--owner", "bob", "--out", str(tmp_path / "b.safetensors")]
    # no epoch: bob's key, no mark (exit 1 says so)
    assert runner.invoke(app, [*args, "--key-out", str(keys / "bob.nnkey")]).exit_code == 1
    suspect = tmp_path / "s.safetensors"
    save_model(model, model_info(model, digits), suspect)
    ident = ["identify", str(suspect), "--keys", str(keys)]
    ident += ["--data", other]  # bob's key re-derives from it
    r = runner.invoke(app, [*ident, "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    rows = {c["label"]: c for c in json.loads(r.stdout)["candidates"]}
    assert rows["alice.nnkey"]["found"] and not rows["bob.nnkey"]["found"]
    assert rows["bob.nnkey"]["reason"].startswith("not read: ")
    r = runner.invoke(app, ident)
    assert r.exit_code == 0 and f"named: {key.owner} (alice.nnkey)" in r.stdout, r.stdout


def test_an_option_set_twice_is_refused() -> None:
    """`--set fraction=0.5 --set fraction=0.6`: the last won without a word."""
    from nnmark.config import parse_sets
    from nnmark.errors import NNMarkError

    assert parse_sets(["lam=0.1", "lam=0.1"]) == {"lam": "0.1"}
    with pytest.raises(NNMarkError, match="--set fraction given twice"):
        parse_sets(["fraction=0.5", "fraction=0.6"])


def test_identify_still_stops_on_an_error_that_is_not_a_key_for_another_task(
    plain_cnn, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Only a key for other inputs is a candidate not read (review, session 32): a suspect file
    whose architecture is unknown, which a black-box mark must run, is an error, exit 2, as
    verify says, not "named: none"."""
    import torch

    keys = tmp_path / "keys"
    keys.mkdir()
    args = [
        "train",
        "--epochs",
        "1",
        "--scheme",
        "content",
        "--out",
        str(tmp_path / "m.safetensors"),
    ]
    # one epoch: a key, not yet a mark (exit 1 says so)
    assert runner.invoke(app, [*args, "--key-out", str(keys / "alice.nnkey")]).exit_code == 1
    bare = tmp_path / "stolen.pt"
    torch.save(plain_cnn.state_dict(), bare)
    r = runner.invoke(app, ["identify", str(bare), "--keys", str(keys)])
    assert r.exit_code == 2 and "no nnmark metadata" in one_line(r.stderr), r.stdout + r.stderr


def test_a_closed_pipe_exits_141_and_an_uppercase_suffix_is_refused(files: Path) -> None:
    """Rich ended a command whose reader left with exit 1, verify's "not found"; the loaders
    read `.safetensors` as written, so `M.SAFETENSORS` would be a file no command reads back."""
    import subprocess
    import sys

    model = files / "digits.safetensors"
    for args in (f"inspect {model}", "--version", "attack --list"):
        cmd = f"{sys.executable} -m nnmark {args} | true"
        r = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, timeout=120)
        assert r.returncode == 141 and b"Traceback" not in r.stderr, (args, r.stderr)
    r = runner.invoke(app, ["train", "--epochs", "1", "--out", str(files / "UP.SAFETENSORS")])
    assert r.exit_code == 2 and "--out must be a .safetensors file" in one_line(r.stderr)


def test_a_crafted_spec_json_is_compared_or_refused_in_one_line(tmp_path: Path) -> None:
    """An empty ladder or an infinite epoch count in a results folder's spec.json raised
    IndexError / OverflowError on the generic path (review, session 32): the old grid's cells
    that cannot be planned are left out of the comparison; a spec.json larger than any grid
    this version writes is refused before it is planned, and one whose ladder is empty (no
    grid since session 36) is refused as not a grid, in one line."""
    from nnmark.bench.grid import BenchSpec
    from nnmark.bench.runner import MAX_SPEC_BYTES, check_resume
    from nnmark.bench.store import ResultStore
    from nnmark.errors import NNMarkError

    grid = {"schemes": ["uchida"], "attacks": ["prune"], "chains": [], "composites": []}
    new = BenchSpec.from_dict({**grid, "calibration_models": 0, "epochs": 1})
    names = {"digits|cnn|e1|f1.0|b64|lr0.001|uchida|prune:fraction=0.3|s0"}
    for i, spec in enumerate(
        (
            {"schemes": ["uchida"], "attacks": ["prune"], "ladders": {"prune": {"fraction": []}}},
            {"ladders": {"finetune": {"epochs": [float("inf"), 1, 2]}}},
            {**grid, "about": "x" * MAX_SPEC_BYTES},
        )
    ):
        out = tmp_path / f"run{i}"
        out.mkdir()
        (out / "spec.json").write_text(json.dumps(spec))
        try:
            check_resume(ResultStore(out), new, names)
        except NNMarkError as exc:
            assert i != 1 and "use another --out" in str(exc), exc
        else:
            assert i == 1


def test_a_dot_is_not_a_model_name() -> None:
    """`/v2/models/../infer` passed as the name '..' (review, session 32): httpx resolved it
    into another path."""
    from nnmark.errors import NNMarkError
    from nnmark.remote.client import plain_name, remote_address

    for bad in (".", ".."):
        with pytest.raises(NNMarkError, match="path step"):
            plain_name(bad, "--model-name")
    with pytest.raises(NNMarkError, match="path step"):
        remote_address("http://127.0.0.1:8000/v2/models/../infer")
    assert plain_name("a.b", "--model-name") == "a.b"


def test_a_checkpoint_wrapped_as_model_is_read(plain_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`{'model': sd}` read as "not a state dict of tensors" while `{'state_dict': sd}` was
    read; a dict of other things names its fields."""
    import torch

    from nnmark.errors import NNMarkError
    from nnmark.io import load_state_dict

    path = tmp_path / "ckpt.pth"
    torch.save({"model": plain_cnn.state_dict(), "epoch": 3}, path)
    state, info = load_state_dict(path)
    assert info is None and state.keys() == plain_cnn.state_dict().keys()
    torch.save({"weights": [1, 2], "epoch": 3}, path)
    with pytest.raises(NNMarkError, match="its fields: 'weights', 'epoch'"):
        load_state_dict(path)


def test_an_attack_that_leaves_nan_names_its_options_not_lr(files: Path) -> None:
    """`attack noise:sigma=1e308` said "lower --lr", an option attack does not have (review)."""
    out = files / "nan.safetensors"
    args = ["attack", "noise:sigma=1e308", str(files / "digits.safetensors"), "--out", str(out)]
    r = runner.invoke(app, args)
    line = one_line(r.stderr)
    assert r.exit_code == 2 and "weaken the attack's options" in line and "--lr" not in line
    assert not out.exists()


def test_a_sharded_index_is_refused_where_a_model_is_built(tmp_path: Path) -> None:
    """evaluate, attack and export build the model: an index is refused by what it is, not as
    an unknown '.json' format whose message lists the index among the formats (review, session
    39)."""
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {}}))
    out = str(tmp_path / "out.safetensors")
    for args in (
        ["evaluate", str(index)],
        ["attack", "prune", str(index), "--out", out],
        ["export", str(index), "--format", "onnx", "--out", str(tmp_path / "out.onnx")],
    ):
        r = runner.invoke(app, args)
        line = one_line(r.stderr)
        assert r.exit_code == 2 and "read by verify and inspect only" in line, (args, line)
        assert "unknown model format" not in line


def test_a_plain_state_dict_where_a_model_is_built_says_how_to_add_the_metadata(
    digits: DataBundle, tmp_path: Path
) -> None:
    """A `.pt` state dict (examples/own_module.py writes one) names no architecture: evaluate,
    attack and embed say how to save it with metadata, not only that it is unknown (review,
    session 39)."""
    import torch

    from nnmark import new_model

    weights = tmp_path / "weights.pt"
    torch.save(new_model("cnn", digits, seed=0).state_dict(), weights)
    out = str(tmp_path / "out.safetensors")
    for args in (
        ["evaluate", str(weights)],
        ["attack", "prune", str(weights), "--out", out],
        ["embed", str(weights), "--out", out],
    ):
        r = runner.invoke(app, args)
        line = one_line(r.stderr)
        assert r.exit_code == 2 and "nnmark.save_model(model, nnmark.model_info(" in line, line


def test_result_lines_are_not_wrapped_when_piped(digits: DataBundle, tmp_path: Path) -> None:
    """`nnmark evaluate ... | cat` split "dice 0.8583, iou\\n0.7517" at 80 columns: a line of
    data is one line, whatever the width, for the program reading it (review, session 39)."""
    from nnmark import new_model

    deep = tmp_path / ("a-folder-name-long-enough-to-push-the-line-past-eighty-columns" * 2)
    deep.mkdir()
    model = new_model("cnn", digits, seed=0)
    save_model(model, model_info(model, digits), deep / "m.safetensors")
    r = runner.invoke(app, ["evaluate", str(deep / "m.safetensors")])
    assert r.exit_code == 0, r.stderr
    line = f"{deep / 'm.safetensors'} on digits [test]: accuracy "
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(line), r.stdout


def test_train_help_lists_the_zoo_from_the_registry() -> None:
    """`--model` named no architecture (review, session 39): its help lists the registry's."""
    from nnmark.models import MODELS

    r = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0 and f"Architecture from the zoo: {', '.join(MODELS.names())}" in (
        " ".join(r.stdout.split())
    )
