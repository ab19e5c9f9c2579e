"""Bad input found by fuzzing the CLI (session 22): one-line usage errors from the console
entry point, outputs that would replace another file, sizes from files bounded before they
are allocated (model metadata, IDX headers, a key's projection), a KDF cost the loader accepts
that the verifier can derive."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from nnmark import model_info, new_model, tasks
from nnmark.api import bound_scheme
from nnmark.cli import app
from nnmark.config import build_config, config_to_dict
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle
from nnmark.data.idx import _load, read_idx
from nnmark.errors import NNMarkError
from nnmark.forge import honest_key
from nnmark.io import ModelInfo, load_model, load_state_dict, save_model
from nnmark.keys import OwnerKey, _maxmem, _scrypt, sha256_hex
from nnmark.models import check_kwargs
from nnmark.schemes import SCHEMES
from nnmark.schemes.segtrigger import SegTriggerConfig

runner = CliRunner()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize(
    "args, says",
    [
        (["verify", "--alpha", "abc"], "Invalid value for '--alpha'"),
        (["verify", "m.safetensors"], "Missing option '--key'"),
        (["serve", "m.safetensors", "--port", "70000"], "'--port'"),
        (["train", "--workers", "65"], "'--workers'"),
    ],
)
def test_usage_errors_are_one_line_from_the_console_entry_point(args: list[str], says: str) -> None:
    """click would draw a box of five lines (and the port went unchecked to a traceback)."""
    r = subprocess.run(
        [sys.executable, "-m", "nnmark", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert says in one_line(r.stderr)


@pytest.mark.parametrize(
    "data, model, says",
    [
        (f"seg:{SHARED_DATA / 'seg-bbbc039'}", "cnn", "pick a segmentation model (unet)"),
        ("digits", "unet", "one score for each of 10 classes: pick a classifier"),
    ],
)
def test_a_model_the_task_cannot_train_is_refused_before_training(
    data: str, model: str, says: str, tmp_path: Path
) -> None:
    """A classifier on masks, a U-Net on labels: a shape error from inside the loss before."""
    out = tmp_path / "m.safetensors"
    args = ["train", "--data", data, "--model", model, "--epochs", "1", "--out", str(out)]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and says in one_line(r.stderr) and not out.exists()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory, plain_cnn, digits: DataBundle) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("hardening") / "m.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), path)
    return path


def test_outputs_that_would_replace_another_file_are_refused(model_file: Path) -> None:
    """--out equal to --key-out kept only the key; export and attack wrote over their input;
    a FIFO or device node given as --out was replaced by a regular file."""
    d = model_file.parent
    x = d / "x.safetensors"
    same = "name the same file"
    cases = [
        (["train", "--epochs", "1", "--scheme", "uchida", "--out", x, "--key-out", x], same),
        (["export", model_file, "--out", model_file], "--out must be a .onnx file"),
        (["attack", "noise", model_file, "--out", model_file, "--force"], same),
        (["attack", "noise", model_file, "--out", model_file], "refusing to overwrite"),
    ]
    before = model_file.read_bytes()
    for args, says in cases:
        r = runner.invoke(app, [str(a) for a in args])
        assert r.exit_code == 2 and says in one_line(r.stderr), r.stderr
    assert model_file.read_bytes() == before and not x.exists()
    fifo = d / "fifo.safetensors"
    os.mkfifo(fifo)
    r = runner.invoke(app, ["train", "--epochs", "1", "--out", str(fifo)])
    assert r.exit_code == 2 and "not a regular file" in one_line(r.stderr)
    assert not fifo.is_file()


def test_serve_names_an_address_it_cannot_listen_on(model_file: Path) -> None:
    r = runner.invoke(app, ["serve", str(model_file), "--host", "999.1.1.1", "--port", "0"])
    assert r.exit_code == 2 and "cannot listen on 999.1.1.1:0" in one_line(r.stderr)


def test_model_metadata_is_bounded_before_inputs_are_built(
    tmp_path: Path, plain_cnn, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    """An input_shape of 10^10 values made export and serve allocate 40 GB."""
    info = model_info(plain_cnn, digits)
    for shape in ((1, 100000, 100000), (0, 8, 8), (1, 2, 3, 4, 5)):
        path = tmp_path / "big.safetensors"
        save_model(plain_cnn, ModelInfo(**{**info.__dict__, "input_shape": shape}), path)
        with pytest.raises(NNMarkError, match="input_shape"):
            load_model(path)


def test_a_key_whose_projection_would_take_gigabytes_is_refused(
    plain_cnn, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    """Uchida re-derives a bits x M matrix: 65,536 bits on 65,536 values asked for 16 GiB."""
    key = honest_key("uchida", plain_cnn, digits)
    doc = key.to_json()
    mark = doc["committed"]["marks"][0]
    mark["data"]["shape"] = [1, 65536]
    mark["bits"] = "01" * 1024  # 2048 x 65536 = 2^27 values
    doc["commitment"] = sha256_hex(doc["committed"])
    forged = OwnerKey.from_json(json.loads(json.dumps(doc)))
    with pytest.raises(NNMarkError, match="2\\^26"):
        bound_scheme(forged, 0, digits)


@pytest.mark.parametrize(
    "scheme, edit, field",
    [
        # 4,000 segmentation triggers of 2048 x 2048: 64 GB (red team, session 24)
        ("segtrigger", {"config": {"n": 4000}, "data": {"shape": [1, 2048, 2048]}}, "config.n"),
        # abstract images are square on the input's last side: [1, 1, 65536] asked for 800 GB
        ("adi", {"data": {"input_shape": [1, 1, 65536]}}, "config.n"),
        ("adi", {"config": {"n": 100_000}, "data": {"input_shape": [3, 128, 128]}}, "config.n"),
        ("content", {"config": {"n": 100_000}, "data": {"input_shape": [3, 64, 64]}}, "config.n"),
        # a features x bits projection: 2^22 x 2^20 asked for 16 TiB
        ("deepsigns", {"bits": "01" * (1 << 19), "data": {"features": 1 << 22}}, "data.features"),
    ],
)
def test_a_key_whose_secrets_would_take_gigabytes_is_refused(
    scheme: str, edit: dict, field: str, plain_cnn, digits: DataBundle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Every secret a key makes its verifier derive (trigger inputs, projections) is at most
    2^26 values, checked from the key's fields before anything is allocated: `verify` is one
    line, exit 2, at once."""
    key = honest_key("adi" if scheme == "segtrigger" else scheme, plain_cnn, digits)
    doc = key.to_json()
    mark = doc["committed"]["marks"][0]
    if scheme == "segtrigger":  # a segmentation trigger set's fields, in place of adi's
        config = config_to_dict(SegTriggerConfig())
        mark.update(scheme="segtrigger", config=config, bits="01" * 8, data={})
    for part, fields in edit.items():
        if isinstance(fields, dict):
            mark[part].update(fields)
        else:
            mark[part] = fields
    doc["commitment"] = sha256_hex(doc["committed"])
    path = tmp_path / "k.nnkey"
    path.write_text(json.dumps(doc))
    model = tmp_path / "m.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), model)
    r = runner.invoke(app, ["verify", str(model), "--key", str(path)])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"field {field}" in lines[0] and "at most 67,108,864" in lines[0]


def test_idx_sizes_come_from_the_header_and_must_agree(tmp_path: Path) -> None:
    """A 1.5 MB .gz that unpacks to 1.5 GiB was read whole before its header was checked;
    50 images with 40 labels trained on misaligned pairs."""
    bomb = tmp_path / "bomb-idx3-ubyte.gz"
    with gzip.open(bomb, "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 100000, 1000, 1000) + bytes(1 << 16))
    with pytest.raises(NNMarkError, match="at most 2\\^27"):
        read_idx(bomb)
    wraps = tmp_path / "wraps-idx3-ubyte.gz"  # 2^31 x 2^31 x 4 is 0 in int64 (review, s. 34)
    with gzip.open(wraps, "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 2**31, 2**31, 4))
    with pytest.raises(NNMarkError, match="at most 2\\^27"):
        read_idx(wraps)
    corrupt = tmp_path / "corrupt-idx1-ubyte.gz"  # a broken deflate stream: zlib's error
    packed = bytearray(gzip.compress(struct.pack(">BBBBI", 0, 0, 8, 1, 5000) + bytes(5000)))
    packed[12:18] = b"\xff" * 6  # inside the deflate stream, after gzip's 10-byte header
    corrupt.write_bytes(bytes(packed))
    with pytest.raises(NNMarkError, match="unreadable IDX file"):
        read_idx(corrupt)

    def idx(name: str, shape: tuple[int, ...]) -> None:
        head = struct.pack(">BBBB", 0, 0, 8, len(shape)) + b"".join(
            struct.pack(">I", s) for s in shape
        )
        with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
            f.write(head + bytes(math.prod(shape)))

    idx("train-images-idx3-ubyte", (50, 28, 28))
    idx("train-labels-idx1-ubyte", (40,))
    idx("t10k-images-idx3-ubyte", (10, 28, 28))
    idx("t10k-labels-idx1-ubyte", (10,))
    with pytest.raises(NNMarkError, match="50 images and 40 labels"):
        _load("mnist", str(tmp_path))


def test_idx_images_are_bounded_together_before_they_become_floats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file under its bound, train and test together over MAX_IDX_PIXELS (4 files of
    2^28 declared pixels had peaked at 3.6 GB: red team, session 27); 60 images of 28 x 28
    here against a bound lowered to 40,000 pixels."""
    import nnmark.data.idx as idx_module

    for stem, shape in (
        ("train-images-idx3-ubyte", (50, 28, 28)), ("train-labels-idx1-ubyte", (50,)),
        ("t10k-images-idx3-ubyte", (10, 28, 28)), ("t10k-labels-idx1-ubyte", (10,)),
    ):  # fmt: skip
        head = struct.pack(">BBBB", 0, 0, 8, len(shape)) + b"".join(
            struct.pack(">I", s) for s in shape
        )
        with gzip.open(tmp_path / f"{stem}.gz", "wb") as f:
            f.write(head + bytes(math.prod(shape)))
    assert len(_load("mnist", str(tmp_path)).y) == 60
    monkeypatch.setattr(idx_module, "MAX_IDX_PIXELS", 40_000)
    with pytest.raises(NNMarkError, match="47,040 pixels of images \\(at most 40,000\\)"):
        _load("mnist", str(tmp_path))
    monkeypatch.setattr(idx_module, "MAX_IDX_IMAGES", 59)  # 1 x 1 images: labels dominate
    with pytest.raises(NNMarkError, match="60 images \\(at most 59\\)"):
        _load("mnist", str(tmp_path))


def test_an_idx_file_is_parsed_again_once_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """read_idx keeps what it parsed per process (data sets loaded again: unrelated's source on
    every plan) only for the file as it was, and not while its modification or status-change
    time is recent (the clock ticks coarsely): rewritten in place at its old size, with its
    modification time set back, or replaced by a file of its size and time, the new content is
    read. The arrays it hands out are read-only."""
    from nnmark.data import idx

    path = tmp_path / "train-labels-idx1-ubyte.gz"

    def write(to: Path, fill: int) -> None:
        with gzip.open(to, "wb") as f:
            f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 6) + bytes([fill] * 6))

    write(path, 1)
    assert read_idx(path) is not read_idx(path)  # just written: not kept (a racy time)
    os.utime(path, ns=(10**18, 10**18))  # 2001 (its status-change time is now)
    with monkeypatch.context() as m:
        m.setattr(idx, "RACY_NS", 0)  # as if that change were old
        first = read_idx(path)
        assert first.tolist() == [1] * 6 and read_idx(path) is first  # parsed once
    assert not first.flags.writeable
    with pytest.raises(ValueError):
        first[0] = 9
    old = path.stat()
    write(path, 2)  # in place, the same size: a newer modification time
    assert path.stat().st_size == old.st_size
    assert read_idx(path).tolist() == [2] * 6
    write(path, 4)  # in place again, its modification time set back: the status change shows
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert read_idx(path).tolist() == [4] * 6
    swap = tmp_path / "swap.gz"  # replaced by another file at the first's size and time
    write(swap, 3)
    os.utime(swap, ns=(old.st_atime_ns, old.st_mtime_ns))
    os.replace(swap, path)
    assert read_idx(path).tolist() == [3] * 6


def test_every_kdf_the_loader_accepts_can_be_derived() -> None:
    """maxmem was 128 N r p: over 2^31 for p >= 2 at the 1 GiB memory bound, a ValueError when
    verifying a key that `key show` loaded."""
    assert _maxmem(1 << 20, 8, 4) < 2**31 - 1 and _maxmem(1 << 18, 32, 4) < 2**31 - 1
    assert len(_scrypt(b"x", b"salt", 1 << 10, 1, 4)) == 32


def test_a_sharded_index_names_only_files_beside_it(tmp_path: Path, model_file: Path) -> None:
    """A shard path in the index is the other side's: `../`, an absolute path, a folder or a
    name that is not a string would read a file the verifier never chose."""
    from nnmark.integrations.sharded import ShardedSuspect

    (tmp_path / "a.safetensors").write_bytes(model_file.read_bytes())
    outside = tmp_path.parent / f"{tmp_path.name}-outside.safetensors"
    outside.write_bytes(model_file.read_bytes())
    index = tmp_path / "model.safetensors.index.json"
    for shard in (f"../{outside.name}", str(outside), "sub/a.safetensors", 5, ".a.safetensors"):
        index.write_text(json.dumps({"weight_map": {"conv1.weight": shard}}))
        with pytest.raises(NNMarkError, match="no paths"):
            ShardedSuspect(index)
    index.write_text('{"weight_map": {"conv1.weight": "a.safetensors"}, "weight_map": {}}')
    with pytest.raises(NNMarkError, match="not a safetensors index"):
        ShardedSuspect(index)
    index.write_text(json.dumps({"weight_map": {"conv1.weight": "a.safetensors"}}))
    with pytest.raises(NNMarkError, match="holds 'conv1.bias', which the weight_map places"):
        ShardedSuspect(index)  # a shard must hold what the index places in it, no more
    from safetensors.torch import load_file, save_file

    one = {"conv1.weight": load_file(str(model_file))["conv1.weight"]}
    save_file(one, str(tmp_path / "a.safetensors"))
    assert ShardedSuspect(index).tensor("conv1.weight") is not None


def test_key_files_with_a_name_twice_or_an_odd_version_are_refused(tmp_path: Path) -> None:
    """json keeps the last of two equal names where other readers keep the first: a key that
    reads one way here and another way elsewhere is refused. `true` and 2.0 are not versions."""
    key = OwnerKey.new("owner", nonce="0" * 32)
    key = key.with_mark(key.new_mark("uchida", {}, "conv2.weight", (0, 1) * 32))
    text = json.dumps(key.to_json())
    path = tmp_path / "k.nnkey"
    path.write_text(text.replace('"format":', '"version": 1, "format":', 1))
    r = runner.invoke(app, ["key", "show", str(path)])
    assert r.exit_code == 2 and "appears twice" in r.stderr
    for version in ("true", "2.0"):
        doc = json.loads(text)
        path.write_text(text.replace(f'"version": {doc["version"]}', f'"version": {version}'))
        r = runner.invoke(app, ["key", "show", str(path)])
        assert r.exit_code == 2 and f"unsupported key version {version.title()}" in r.stderr


def test_a_legacy_or_non_zip_checkpoint_is_refused_before_torch_reads_it(tmp_path: Path) -> None:
    """torch's legacy format allocates the storage sizes it declares before reading them."""
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    r = runner.invoke(app, ["verify", str(path), "--key", str(tmp_path / "none.nnkey")])
    assert r.exit_code == 2
    with pytest.raises(NNMarkError, match="not a ZIP checkpoint"):
        load_state_dict(path)
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(NNMarkError, match="not a ZIP checkpoint"):
        load_state_dict(tmp_path / "text.pt")


@pytest.mark.parametrize(
    "args, says",
    [
        (["attack", "noise", "m.safetensors", "--seed", str(10**30)], "'--seed'"),
        (["train", "--seed", "-1"], "'--seed'"),
        (["forge", "m.safetensors", "--budget", "nan"], "--budget must be in (0, 3600]"),
    ],
)
def test_numbers_out_of_range_are_refused_by_name(args: list[str], says: str) -> None:
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and says in r.stderr + r.stdout


def test_identify_counts_its_candidates_before_reading_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    # the module: the attribute nnmark.fingerprint is the function (nnmark/__init__.py)
    fingerprint = importlib.import_module("nnmark.fingerprint")
    for i in range(3):
        (tmp_path / f"{i}.nnkey").write_text("{}")
    monkeypatch.setattr(fingerprint, "MAX_CANDIDATES", 2)
    with pytest.raises(NNMarkError, match="at most 2"):
        fingerprint.load_keys(tmp_path)
    monkeypatch.setattr(fingerprint, "MAX_CANDIDATES", 3)
    monkeypatch.setattr(fingerprint, "MAX_CANDIDATE_BYTES", 5)
    with pytest.raises(NNMarkError, match="reads at most 5"):
        fingerprint.load_keys(tmp_path)


def test_identify_names_a_dangling_link_in_its_keys_folder(
    tmp_path: Path, model_file: Path
) -> None:
    """Review: a `*.nnkey` link to nothing ended in "error: FileNotFoundError: ..." (the keys'
    sizes are summed before any is read). A bad key file is an error naming it, as a corrupt
    one is."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "a.nnkey").write_text("{}")
    (keys / "b.nnkey").symlink_to(tmp_path / "gone.nnkey")
    r = runner.invoke(app, ["identify", str(model_file), "--keys", str(keys)])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == f"error: key file not found (a dangling link?): {keys / 'b.nnkey'}"


@pytest.mark.parametrize(
    "text, says",
    [
        (
            "",
            "the config is empty: give the grid's fields (docs/bench.md, examples/bench.yaml), "
            "or use --preset quick for the shipped grid",
        ),
        ("calibration_models: 1000000000000\n", "calibration_models must be an integer"),
        ("epochs: .nan\n", "integer 0 <= epochs"),
        ("epochs: 3.5\n", "integer 0 <= epochs"),
        ("lr: .inf\n", "finite lr > 0"),
        ("calibration_epochs: true\n", "calibration_epochs must be an integer"),
    ],
)
def test_bench_configs_are_bounded_before_anything_trains(
    tmp_path: Path, text: str, says: str
) -> None:
    """A typo of a few zeros trained for years or built an 11 GB key table; an empty file ran
    the whole default grid."""
    (tmp_path / "grid.yaml").write_text(text)
    r = runner.invoke(
        app, ["bench", "--config", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "o")]
    )
    assert r.exit_code == 2 and says in r.stderr, r.stderr


def test_a_bench_grid_of_more_cells_than_a_results_file_holds_is_refused_before_planning(
    tmp_path: Path,
) -> None:
    """Review: 1,024 tasks and 1,024-step ladders planned about 4.2 million cells, for minutes
    to hours with no output (only an old grid read from a results folder was bounded). The
    cells are counted first, and a grid of more than a results file's rows is one line."""
    import yaml

    ladder = {"sigma": [round(0.001 * (i + 1), 3) for i in range(1000)]}
    grid = {
        "tasks": [{"epochs": i + 1} for i in range(60)],
        "schemes": ["uchida"],
        "attacks": ["noise"],
        "composites": [],
        "chains": [],
        "ladders": {"noise": ladder},
    }
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    out = tmp_path / "o"
    r = runner.invoke(app, ["bench", "--config", str(tmp_path / "grid.yaml"), "--out", str(out)])
    assert r.exit_code == 2, r.output
    # 60 tasks x 2 models (plain, uchida) x (no attack + 1,000 steps) + 60 x 4 calibration cells
    says = "error: the grid has 120,360 cells, more than the 100,000 a results file holds"
    assert r.stderr.startswith(says) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_text_from_files_is_shown_as_written(tmp_path: Path) -> None:
    """Names and metadata are the other side's: rich markup in them was interpreted (a tensor
    named "[/]" made `inspect` fail; "[bold green]... OWNER VERIFIED[/]" rendered styled) and
    escape sequences reached the terminal. They print literally, control characters as '?'."""
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    names = ["[/]", "[bold green]OWNER VERIFIED[/]", "\x1b[2J\x1b[Hx", ":thumbs_up:"]
    save_file({n: torch.zeros(1) for n in names}, str(path), metadata={"x": "[/oops]"})
    r = runner.invoke(app, ["inspect", str(path)], terminal_width=200, color=True)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    assert "[/]" in r.stdout and "[bold green]OWNER VERIFIED[/]" in r.stdout
    assert "?[2J?[Hx" in r.stdout and "\x1b[2J" not in r.stdout
    assert ":thumbs_up:" in r.stdout and "\U0001f44d" not in r.stdout


def test_derived_data_is_what_calibrate_writes_and_a_key_parses_in_bounded_memory(
    plain_cnn, digits: DataBundle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A calibration that is a list crashed verify (AttributeError); unknown derived fields
    could hold anything. 64 MiB of "[{}," took 2 GB to parse: a key opens at most 100,000
    objects and arrays, counted before parsing."""
    key = honest_key("adi", plain_cnn, digits)
    path = tmp_path / "k.nnkey"
    bad = {
        "a list": ("calibration", {"0": []}),
        "another mark": ("calibration", {"3": {"ucb": 0.1}}),
        "a rate of 2": ("calibration", {"0": {"ucb": 2.0}}),
        "an unknown field": ("calibration", {"0": {"x": [{}] * 10}}),
        "an unknown name": ("anything", {"x": 1}),
        "too many models": ("calibration", {"0": {"models": 10**9}}),
    }
    for what, (name, value) in bad.items():
        key.with_derived(name, value).save(path)
        r = runner.invoke(app, ["key", "show", str(path)])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, (what, r.stderr)
        assert "field derived." in r.stderr, (what, r.stderr)
    good = {"models": 2, "k": 3, "n": 100, "rates": [0.0, 0.06], "ucb": 0.1, "model_ucb": 0.2}
    key.with_derived("calibration", {"0": {**good, "p_values": [1.0, 0.5]}}).save(path)
    assert OwnerKey.load(path).derived["calibration"]["0"]["k"] == 3
    doc = json.loads(path.read_text())
    doc["signature"] = {"x": [{}] * 100_000}
    path.write_text(json.dumps(doc))
    with pytest.raises(NNMarkError, match="more than 100,000 JSON objects and arrays"):
        OwnerKey.load(path)
    doc["signature"] = {"x": [10] * 500_000}  # numbers alone: 1.16 GB for 16.7 million
    path.write_text(json.dumps(doc))
    with pytest.raises(NNMarkError, match=r"more than 400,000 ',' \(values\)"):
        OwnerKey.load(path)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"input_size": 0}, "input_size must be at least 1, got 0"),
        ({"input_size": -1}, "input_size must be at least 1, got -1"),
        ({"input_size": 1}, "has no values in fc1.weight (too small)"),
    ],
)
def test_a_model_with_an_empty_or_negative_size_is_refused_in_one_line(
    kwargs: dict[str, int], says: str
) -> None:
    """Size 0 built layers of no values (torch warned over two lines, then a RuntimeError in
    training); -1 built a cnn that a key's architecture could name (red team, session 31)."""
    from nnmark.models import create_model

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no torch warning on the way
        with pytest.raises(NNMarkError, match=re.escape(says)):
            create_model("cnn", **kwargs)


def test_serve_and_export_refuse_a_model_too_large_to_run_at_its_declared_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A digits cnn whose metadata declares 4096 x 4096 inputs took 10.8 GB to serve and 11.9
    GB to export before failing (red team, session 31); a U-Net declared so would run, on 7
    billion activations. Both are counted on the meta device first and refused in one line."""
    import uvicorn

    from nnmark.models import create_model

    def served(*args: object, **kwargs: object) -> None:  # a regression fails, never blocks
        raise AssertionError("serve started a server for a model it should have refused")

    monkeypatch.setattr(uvicorn.Server, "run", served)

    for arch, says in (("cnn", "does not run on inputs"), ("unet", "would output 7,432,306,688")):
        model = create_model(arch)
        info = ModelInfo(arch=arch, arch_kwargs={}, input_shape=(1, 4096, 4096), num_classes=1)
        path = tmp_path / f"{arch}.safetensors"
        save_model(model, info, path)
        r = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "m.onnx")])
        assert r.exit_code == 2 and says in one_line(r.stderr)
        assert not (tmp_path / "m.onnx").exists()
        r = runner.invoke(app, ["serve", str(path), "--port", "0"])
        assert r.exit_code == 2 and says in one_line(r.stderr)


def test_a_model_file_cannot_ask_for_millions_of_layers(tmp_path: Path) -> None:
    """Metadata naming an mlp of depth 3,000,000 (one hidden unit: few parameters) was built on
    the meta device to be counted: minutes and gigabytes, then a traceback. Depth and blocks
    are bounded before anything is built."""
    from safetensors.torch import save_file

    for kwargs in ({"depth": 3_000_000, "hidden": 1}, {"depth": "2"}, {"depth": True}):
        info = ModelInfo(arch="mlp", arch_kwargs=kwargs, input_shape=(1, 8, 8), num_classes=10)
        path = tmp_path / "deep.safetensors"
        save_file({"w": torch.zeros(1)}, str(path), metadata=info.to_metadata())
        r = runner.invoke(app, ["evaluate", str(path)])
        assert r.exit_code == 2, (kwargs, r.stdout, r.stderr)
        assert "depth must be an integer in [1, 1000]" in r.stderr, r.stderr


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"input_size": 8.5}, "model 'cnn': input_size must be an integer, got 8.5"),
        ({"num_classes": "10"}, "model 'cnn': num_classes must be an integer, got '10'"),
        ({"in_channels": True}, "model 'cnn': in_channels must be an integer, got True"),
        ({"x": 1}, "model 'cnn' takes no argument 'x' (it takes hidden, in_channels, input_size,"),
        ({"arch": "mlp", "width": 4}, "model 'ensemble' takes no argument 'width'"),
        ({"arch": "resnet20", "dropout": "0.5"}, "model 'ensemble': dropout must be a number"),
        ({"arch": "resnet20", "dropout": 1}, "model 'ensemble': dropout must be in [0, 1), got 1"),
    ],
)
def test_a_model_files_arch_kwargs_are_checked_against_the_architecture(
    tmp_path: Path, kwargs: dict[str, object], says: str
) -> None:
    """Review: arch_kwargs reached the model's constructor unchecked: 8.5 or "10" ended in
    torch's own text, `true` built a model of one channel, an unknown name said "SmallCNN.
    __init__() got an unexpected keyword argument". Names and types are checked against the
    architecture's signature (an ensemble's against its members') as the metadata is read."""
    from safetensors.torch import save_file

    arch = "ensemble" if "arch" in kwargs else "cnn"
    info = ModelInfo(arch=arch, arch_kwargs=kwargs, input_shape=(1, 8, 8), num_classes=10)
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata=info.to_metadata())
    with pytest.raises(NNMarkError, match="malformed nnmark metadata"):
        ModelInfo.from_metadata(info.to_metadata(), str(path))
    r = runner.invoke(app, ["evaluate", str(path)])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith(f"error: {path}: malformed nnmark metadata ({says}"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "spec, says",
    [
        ("finetune:split=nosuch", "finetune: split must be one of train, val, test, thief"),
        ("overwrite:split=nosuch", "overwrite: split must be one of train, val, test, thief"),
        ("finetune:batch_size=0", "finetune: batch_size must be >= 1, got 0"),
        ("neuralcleanse:batch_size=0", "neuralcleanse: batch_size must be >= 1, got 0"),
        ("copycat:batch_size=0", "copycat: batch_size must be >= 1, got 0"),
        ("knockoff:batch_size=0", "knockoff: batch_size must be >= 1, got 0"),
    ],
)
def test_attack_options_that_only_the_training_read_are_checked_when_built(
    spec: str, says: str
) -> None:
    """Red team (CLI): these reached the catch-all as `KeyError: 'nosuch'`, a ValueError from a
    TrainConfig built inside the attack, `range() arg 3 must not be zero` and ART's own text."""
    from nnmark.attacks import build_attack
    from nnmark.train import TrainConfig

    with pytest.raises(NNMarkError, match=re.escape(says)):
        build_attack(spec)
    with pytest.raises(NNMarkError, match="split must be one of"):
        build_config(TrainConfig, {"split": "nosuch"})


def test_a_model_whose_metadata_names_another_task_or_negative_classes_is_one_line(
    tmp_path: Path, model_file: Path
) -> None:
    """Red team (CLI): a classifier whose file says `nnmark.task: segmentation` reached evaluate's
    counts (`The size of tensor a (10) must match ...`); `num_classes: -5` was read as it was
    and copied by attack. Both one line, exit 2."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model_file), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    for edit, says in (
        ({"nnmark.task": "segmentation"}, "(a segmentation model by its metadata; digits is"),
        ({"nnmark.num_classes": "-5"}, "num_classes must be 0 (not recorded) to 1,048,576"),
    ):
        path = tmp_path / "lying.safetensors"
        save_file(tensors, str(path), metadata={**meta, **edit})
        r = runner.invoke(app, ["evaluate", str(path)])
        assert r.exit_code == 2 and says in one_line(r.stderr), r.stderr
    # embed, attack --data and evaluate share the check, before any work (embed reached
    # `evaluate` with the data's task, not the model's)
    seg, out = tmp_path / "seg.safetensors", tmp_path / "e.safetensors"
    save_file(tensors, str(seg), metadata={**meta, "nnmark.task": "segmentation"})
    r = runner.invoke(app, ["embed", str(seg), "--out", str(out), "--key-out", str(tmp_path / "k")])
    assert r.exit_code == 2 and "(a segmentation model by its metadata" in one_line(r.stderr)
    assert not out.exists()
    net, info = load_model(model_file)
    loader = [(torch.zeros(2, *info.input_shape), torch.zeros(2, 1, 8, 8))]
    with pytest.raises(
        NNMarkError, match=r"segmentation \(the task evaluated\): the model answers"
    ):
        tasks.evaluate(net, loader, "segmentation")


def test_a_token_file_that_is_a_folder_or_missing_says_which(tmp_path: Path) -> None:
    from nnmark.cli.common import read_token

    with pytest.raises(NNMarkError, match="token file is a directory"):
        read_token(tmp_path)
    with pytest.raises(NNMarkError, match="token file not found"):
        read_token(tmp_path / "none")


def test_a_rate_written_as_an_integer_is_a_number() -> None:
    """`dropout: 0` (JSON's 0, not 0.0) was refused as a size below 1: the size check read
    every integer as a size. Sizes are the arguments annotated int; a rate is a number in
    [0, 1)."""
    check_kwargs("wrn", {"dropout": 0})
    check_kwargs("ensemble", {"arch": "resnet20", "dropout": 0})
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got -0.5"):
        check_kwargs("wrn", {"dropout": -0.5})


def _respelled(value: Any) -> Any:
    """Another JSON spelling Python's == takes for the same value (None where there is none)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


@pytest.mark.parametrize("name", SCHEMES.names())
def test_a_config_has_one_spelling(name: str) -> None:
    """Red team: a key's config was checked as a dict, where 1 == True == 1.0, so a hand-edited
    key could write `contrast: 1`, `R: 3.0` or `inputs: 20.0` and be read as the canonical
    config (a second spelling: another secret for one config). Every such respelling of every
    scheme's default options is refused; the spelling plan writes is not."""
    cls = SCHEMES.get(name)
    owner = OwnerKey.new("spelling", nonce="cd" * 16)
    written = cls.canonical_config(cls.Config())

    def problem(config: dict[str, Any]) -> str:
        try:
            cls(owner.new_mark(name, config, None, ()))
        except NNMarkError as exc:  # the data check comes after the config's: any reason
            return str(exc)
        return ""

    assert "not complete and canonical" not in problem(written)
    respelled = {k: _respelled(v) for k, v in written.items() if _respelled(v) is not None}
    for option, value in respelled.items():
        refused = "not complete and canonical" in problem({**written, option: value})
        # the one spelling kept: an integer for a float option, as plan writes a config object
        # that holds 1 for 1.0 (keys made so still read; see Scheme.__init__)
        assert refused == (type(written[option]) is not float), (option, value)


def test_a_config_object_passed_to_embed_is_written_in_its_fields_types() -> None:
    """The other half of one spelling: a config dataclass built by hand with an integer for a
    number (`UchidaConfig(lam=1)`) goes through build_config like options do, so its key
    holds `1.0` and reads back."""
    from nnmark.api import resolve_schemes
    from nnmark.schemes.uchida import UchidaConfig

    ((cls, config),) = resolve_schemes(UchidaConfig(lam=1))
    assert type(config.lam) is float and cls.canonical_config(config)["lam"] == 1.0
    # a key plan wrote from such an object without embed's normalising (or before it) reads
    owner = OwnerKey.new("spelling", nonce="cd" * 16)
    with pytest.raises(NNMarkError, match="data.shape is missing"):  # past the config check
        cls(owner.new_mark("uchida", {**cls.canonical_config(config), "lam": 1}, None, ()))


def test_a_model_file_cannot_ask_for_an_ensemble_of_thousands(tmp_path: Path) -> None:
    """An ensemble's `members` came from the file's metadata unbounded: 200,000 cnn members
    took over 300 s and 3 GB on the meta device before the size check (red team, session 27).
    """
    from safetensors.torch import save_file

    many = "members must be an integer in [1, 64]"
    deep = "members x depth must be at most 1000, got 64 x 1000"  # 64 mlps: 27 s to count
    for kwargs, says in (
        *(({"arch": "cnn", "members": m}, many) for m in (200_000, 65)),
        # not an integer: refused with the metadata, before the ensemble's own bound
        *(({"arch": "cnn", "members": m}, "members must be an integer, got") for m in ("3", True)),
        ({"arch": "cnn", "members": 0}, "members must be at least 1, got 0"),
        ({"arch": "mlp", "members": 64, "depth": 1000, "hidden": 1}, deep),
    ):
        info = ModelInfo(arch="ensemble", arch_kwargs=kwargs, input_shape=(1, 8, 8), num_classes=10)
        path = tmp_path / "many.safetensors"
        save_file({"w": torch.zeros(1)}, str(path), metadata=info.to_metadata())
        r = runner.invoke(app, ["evaluate", str(path)])
        assert r.exit_code == 2, (kwargs, r.stdout, r.stderr)
        assert says in one_line(r.stderr), r.stderr


@pytest.mark.parametrize(
    ("attack", "says"),
    [
        ("unlearn:forget=1000000000", "forget must be in [1, 65536]"),
        ("ensemble:members=100000", "members must be in [1, 64]"),
    ],
)
def test_attack_options_that_size_an_allocation_are_bounded(
    model_file: Path, tmp_path: Path, attack: str, says: str
) -> None:
    """`unlearn:forget` sized its forget set unbounded (10^9 asked for 8 GB), `ensemble:members`
    the number of surrogates (red team, session 27): refused by name before anything runs."""
    out = str(tmp_path / "a.safetensors")
    args = ["attack", attack, str(model_file), "--data", "digits", "--out", out]
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and says in one_line(r.stderr), r.stdout + r.stderr


def test_unlearn_bounds_its_forget_set_by_the_inputs_size() -> None:
    """forget x the input's values is bounded too: 65,536 guessed 3 x 64 x 64 inputs are
    805 million values."""
    from nnmark.attacks.unlearn import Unlearn, UnlearnConfig

    data = DataBundle(
        name="big", task="classification", x=torch.zeros(4, 3, 64, 64),
        y=torch.zeros(4, dtype=torch.long), splits={"thief": torch.arange(4)}, num_classes=2,
    )  # fmt: skip
    with pytest.raises(NNMarkError, match="forget=65536 inputs of 12,288 values"):
        Unlearn(UnlearnConfig(forget=1 << 16)).run(torch.nn.Flatten(), data, torch.Generator())


def test_unlearn_runs_its_forget_set_in_batches(digits: DataBundle) -> None:
    """The model's answers on the forget set were computed in one batch (65,536 inputs through
    a wide mlp asked for 17 GB: red team, session 27): no batch over 256 now."""
    from nnmark.attacks.unlearn import Unlearn, UnlearnConfig

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    sizes: list[int] = []
    net.register_forward_hook(lambda _m, inputs, _o: sizes.append(len(inputs[0])))
    Unlearn(UnlearnConfig(forget=600, epochs=1)).run(net, digits, torch.Generator().manual_seed(0))
    assert sizes[:3] == [256, 256, 88] and max(sizes) <= 256


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A 1 x 1 PNG whose header declares width x height (a few bytes; decoding would fail)."""
    import io
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    raw = bytearray(buf.getvalue())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", width, height)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    path.write_bytes(bytes(raw))


def test_image_folders_are_bounded_from_their_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaders kept every decoded image (16 PNGs of 8000 x 8000, 4 MB on disk: 3.5 GB, then
    MemoryError) and PIL's bomb warning leaked to stderr: an image's declared pixels and the
    data's values are checked from the headers, before any pixel is decoded."""
    from PIL import Image

    from nnmark.data import base as data_base
    from nnmark.data import load_data

    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        Image.new("L", (4, 4), 255).save(root / c / "0.png")
    assert load_data(f"folder:{root}").x.shape == (2, 1, 32, 32)
    os.mkfifo(root / "a" / "fifo.png")  # opened, it blocked the loader forever (review, s. 34)
    with pytest.raises(NNMarkError, match="fifo.png: not a regular file"):
        load_data(f"folder:{root}")
    (root / "a" / "fifo.png").unlink()
    _png_declaring(root / "a" / "1.png", 100_000, 100_000)
    with (
        warnings.catch_warnings(record=True) as warned,
        pytest.raises(NNMarkError, match="1.png: not a readable image \\(or a decompression bomb"),
    ):
        warnings.simplefilter("always")
        load_data(f"folder:{root}")
    assert not warned  # PIL's DecompressionBombWarning printed two lines of its own
    _png_declaring(root / "a" / "1.png", 9000, 9000)  # under PIL's limits, over nnmark's
    with pytest.raises(NNMarkError, match="9000 x 9000 pixels is more than an image may hold"):
        load_data(f"folder:{root}")
    (root / "a" / "1.png").unlink()
    monkeypatch.setattr(data_base, "MAX_DATA_VALUES", 1000)
    monkeypatch.setattr("nnmark.data.folder.MAX_DATA_VALUES", 1000)
    with pytest.raises(NNMarkError, match="2 images make 2,048 values"):
        load_data(f"folder:{root}")
    seg = tmp_path / "seg"
    for sub in ("images", "masks"):
        (seg / sub).mkdir(parents=True)
        for i in range(4):
            Image.new("L", (256, 256)).save(seg / sub / f"{i}.png")
    monkeypatch.setattr("nnmark.data.segmentation.MAX_DATA_VALUES", 2 * 3 * 128 * 128)
    with pytest.raises(NNMarkError, match="4 tiles of 128 x 128 make more than"):
        load_data(f"seg:{seg}")


def test_the_pixels_an_image_folder_decodes_are_bounded_and_colour_comes_channels_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 36: links to one small PNG of 8192 x 8192 took 1.4 s each to decode,
    with nothing bounding their number (10,000 links: hours), and a colour folder was copied
    once more to put its channels first. The pixels decoding takes are summed from the headers
    (a JPEG's at the scale its draft decodes) and bounded; the images fill a channels-first
    array."""
    from PIL import Image

    from nnmark.data import load_data

    root = tmp_path / "folder"
    colours = {"a": (255, 0, 0), "b": (0, 0, 255)}
    for c, rgb in colours.items():
        (root / c).mkdir(parents=True)
        Image.new("RGB", (64, 64), rgb).save(root / c / "0.png")
        Image.new("RGB", (512, 512), rgb).save(root / c / "1.jpg")  # drafted to 64 x 64
    data = load_data(f"folder:{root}")
    assert data.x.shape == (4, 3, 32, 32) and data.x.is_contiguous()
    first = data.x[0]  # a/0.png: red, channels first
    assert float(first[0].min()) == 1.0 and float(first[1:].max()) == 0.0
    # 2 PNGs of 64 x 64 and 2 JPEGs decoded at 1/8 scale: 4 x 4,096 pixels; each JPEG's one
    # scan at full size: 2 x 512 x 512 / 8 (SCAN_COST); each file's bytes, and the PNGs' 3
    # chunks (IHDR, IDAT, IEND) at 16 (BYTE_COST, PNG_CHUNK_COST)
    files = sum(f.stat().st_size for c in colours for f in (root / c).iterdir())
    total = 4 * 4096 + 2 * 512 * 512 // 8 + files + 2 * 3 * 16
    monkeypatch.setattr("nnmark.data.folder.MAX_DECODED_PIXELS", total)
    assert load_data(f"folder:{root}").x.shape == (4, 3, 32, 32)
    monkeypatch.setattr("nnmark.data.folder.MAX_DECODED_PIXELS", total - 1)
    with pytest.raises(NNMarkError, match=f"takes more than {total - 1:,} pixels \\(at 1.jpg\\)"):
        load_data(f"folder:{root}")
    # names are counted as they are listed: millions were listed and sorted before any check
    monkeypatch.setattr("nnmark.data.base.MAX_FOLDER_ENTRIES", 5)  # 2 classes + 4 images
    with pytest.raises(NNMarkError, match="more than 5 entries in its folders"):
        load_data(f"folder:{root}")


def test_segmentation_and_key_folders_are_counted_as_they_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 37: `seg:` listed and sorted every entry (100,000 links to one 2 x 2 PNG:
    38 s, 528 MB) and a 1 x 1 image ended in a RuntimeError from the pooling; `identify --keys`
    listed and sorted every key file before counting them (300,000: 412 MB)."""
    from PIL import Image

    from nnmark.data import load_data
    from nnmark.fingerprint import load_keys

    seg = tmp_path / "seg"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir()
    for i in range(5):  # 4 images of one tile each, and one too small for any
        side = 1 if i == 4 else 256
        Image.new("L", (side, side), 100 + i).save(seg / "images" / f"{i}.png")
        Image.new("L", (side, side), 0).save(seg / "masks" / f"{i}.png")
    assert load_data(f"seg:{seg}").x.shape == (4, 1, 128, 128)
    monkeypatch.setattr("nnmark.data.base.MAX_FOLDER_ENTRIES", 4)
    with pytest.raises(NNMarkError, match="more than 4 entries in its folders"):
        load_data(f"seg:{seg}")
    monkeypatch.undo()
    for i in range(4):  # every image too small: one line, not a RuntimeError
        Image.new("L", (1, 1), 0).save(seg / "images" / f"{i}.png")
        Image.new("L", (1, 1), 0).save(seg / "masks" / f"{i}.png")
    with pytest.raises(NNMarkError, match="images smaller than 256 pixels"):
        load_data(f"seg:{seg}")
    keys = tmp_path / "keys"
    keys.mkdir()
    from nnmark.schemes.uchida import Uchida, UchidaConfig

    host = new_model("cnn", load_data("digits"), seed=0)
    for i in range(3):
        key = OwnerKey.new(f"r{i}", nonce=f"{i:02x}" * 16)
        key.with_mark(Uchida.plan(host, key, UchidaConfig(), bits=64)).save(keys / f"r{i}.nnkey")
    (keys / "notes.txt").write_text("not a key")
    assert list(load_keys(keys)) == ["r0.nnkey", "r1.nnkey", "r2.nnkey"]
    monkeypatch.setattr(sys.modules["nnmark.fingerprint"], "MAX_CANDIDATES", 2)
    with pytest.raises(NNMarkError, match="holds more than 2 keys; identify takes at most 2"):
        load_keys(keys)


@pytest.mark.parametrize(
    "values, says",
    [
        ((float("nan"), 0.5), "that are not finite numbers (NaN or inf)"),
        ((float("inf"), 0.5), "that are not finite numbers (NaN or inf)"),
        ((3e38, -3e38), "spanning more than float32 holds"),
    ],
)
def test_segmentation_images_of_pixels_that_are_not_numbers_are_refused(
    tmp_path: Path, values: tuple[float, float], says: str
) -> None:
    """Review: a float TIFF (mode F) of NaN or inf pixels loaded, its tiles all NaN, and
    training then said "diverged ... lower --lr". Refused naming the image; so is one whose
    values span past float32's range (its min-max normalisation was NaN)."""
    import numpy as np
    from PIL import Image

    seg = tmp_path / "seg"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir()
    for i in range(4):
        pixels = np.full((256, 256), 0.5, np.float32)
        if i == 2:
            pixels[0, :2] = values
        Image.fromarray(pixels).save(seg / "images" / f"{i}.tif")
        Image.new("L", (256, 256), 0).save(seg / "masks" / f"{i}.png")
    out = tmp_path / "m.safetensors"
    r = runner.invoke(app, ["train", "--data", f"seg:{seg}", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert r.output.strip() == f"error: {seg / 'images' / '2.tif'}: pixel values {says}"
    assert not out.exists()


def _tiff_of_one_strip(width: int, rows: int, offsets: int) -> bytes:
    """An uncompressed 8-bit TIFF of 2 x `rows` rows whose strip offsets name one strip
    `offsets` times: Pillow makes a tile of each, and decodes the strip as often."""
    entries = [(256, 4, 1, width), (257, 4, 1, 2 * rows), (258, 3, 1, 8), (259, 3, 1, 1)]
    entries += [(262, 3, 1, 1), (273, 4, offsets, 0), (277, 3, 1, 1), (278, 4, 1, rows)]
    entries += [(279, 4, 1, width * rows)]
    at = 8 + 2 + 12 * len(entries) + 4  # the offsets, after the one directory
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, kind, count, value in entries:
        value = at if tag == 273 else value
        short = kind == 3  # a SHORT value sits in the entry's first two bytes
        out += (
            struct.pack("<HHIHH", tag, kind, count, value, 0)
            if short
            else struct.pack("<HHII", tag, kind, count, value)
        )
    out += struct.pack("<I", 0) + struct.pack(f"<{offsets}I", *[at + 4 * offsets] * offsets)
    return bytes(out + bytes(width * rows))


def test_what_opening_and_decoding_an_image_takes_is_counted_before_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 37: a TIFF naming one strip 200,000 times decoded it as often (43 s for
    an image that declared 4 M pixels); 63 compressed text chunks of a 66 KB PNG were inflated
    at every open (0.24 s, counted as 4 pixels); Pillow joins a JPEG's Exif segments in time
    that grows with their square (65 MB: 27 s an open). A TIFF's tiles, a PNG's chunks and a
    file's bytes are counted (`decode_pixels`), and more Exif segments than 64 are refused."""
    import io
    import zlib

    from PIL import Image

    from nnmark.data.base import (
        MAX_EXIF_SEGMENTS,
        PNG_CHUNK_COST,
        PNG_TEXT_COST,
        PNG_TEXT_LIMIT,
        decode_pixels,
        open_image,
    )

    tif = tmp_path / "strips.tif"
    tif.write_bytes(_tiff_of_one_strip(64, 8, 1000))
    with open_image(tif) as im:
        assert im.size == (64, 16) and decode_pixels(im) == tif.stat().st_size + 1000 * 64 * 8
    png = tmp_path / "texts.png"
    Image.new("L", (4, 4)).save(png)
    data = png.read_bytes()
    text = b"k\x00\x00" + zlib.compress(bytes(1 << 20))  # inflates to 1 MiB

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    end = data.rindex(b"IEND") - 4
    png.write_bytes(data[:end] + chunk(b"zTXt", text) * 3 + data[end:])
    with open_image(png) as im:  # IHDR, IDAT, 3 zTXt, IEND
        expected = png.stat().st_size + 3 * PNG_TEXT_LIMIT * PNG_TEXT_COST + 6 * PNG_CHUNK_COST
        expected += 16  # its 4 x 4 pixels
        assert decode_pixels(im) == expected
    # a small compressed chunk (a colour profile's 588 bytes, in a 32 x 32 icon) counts as
    # what it inflates to, an uncompressed iTXt as nothing: 34,000 such icons were refused
    # when every such chunk counted as a full one (diff review, session 37)
    small, plain = b"k\x00\x00" + zlib.compress(b"profile" * 60), b"k\x00\x00\x00en\x00\x00text"
    png.write_bytes(data[:end] + chunk(b"zTXt", small) + chunk(b"iTXt", plain) + data[end:])
    with open_image(png) as im:
        expected = png.stat().st_size + 7 * 60 * PNG_TEXT_COST + 5 * PNG_CHUNK_COST + 16
        assert decode_pixels(im) == expected
    monkeypatch.setattr("nnmark.data.base.MAX_PNG_CHUNKS", 4)
    with pytest.raises(NNMarkError, match="texts.png: a PNG of more than 4 chunks"):
        open_image(png)
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    exif = b"\xff\xe1" + struct.pack(">H", 8 + 100) + b"Exif\x00\x00" + bytes(100)
    for n, refused in ((MAX_EXIF_SEGMENTS, False), (MAX_EXIF_SEGMENTS + 1, True)):
        path = tmp_path / f"exif{n}.jpg"
        path.write_bytes(jpeg[:2] + exif * n + jpeg[2:])
        if refused:
            with pytest.raises(NNMarkError, match=f"more than {MAX_EXIF_SEGMENTS} Exif segments"):
                open_image(path)
        else:
            open_image(path).close()


def _scans_repeated(jpeg: bytes, times: int) -> bytes:
    """The JPEG with its last scan (from the last start-of-scan marker to the end-of-image one)
    repeated: libjpeg decodes each again over the whole image (it warns and goes on)."""
    start, end = jpeg.rindex(b"\xff\xda"), jpeg.rindex(b"\xff\xd9")
    return jpeg[:end] + jpeg[start:end] * times + jpeg[end:]


def test_a_jpeg_of_many_scans_is_refused_and_its_scans_count_at_full_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 37: each scan of a progressive JPEG is decoded over the whole image at
    full size whatever the draft scale, so a few KB of repeated scans were seconds per image,
    and links to one were hours. Past MAX_JPEG_SCANS (libjpeg-turbo's own limit) a JPEG is
    refused in one line, by either loader; below it, its scans count in the decoding budget."""
    import io

    from PIL import Image

    from nnmark.data import load_data
    from nnmark.data.base import MAX_JPEG_SCANS, jpeg_markers

    buf = io.BytesIO()
    Image.new("L", (256, 256), 128).save(buf, "JPEG", progressive=True)
    progressive = buf.getvalue()
    root = tmp_path / "folder"
    for c in "ab":
        (root / c).mkdir(parents=True)
    (root / "a" / "0.jpg").write_bytes(progressive)
    (root / "b" / "0.jpg").write_bytes(_scans_repeated(progressive, 100))
    for name, scans in (("a", 6), ("b", 106)):  # libjpeg's progressive script: 6 scans
        with (root / name / "0.jpg").open("rb") as f:
            assert jpeg_markers(f) == (scans, 0)
    assert load_data(f"folder:{root}").x.shape == (2, 1, 32, 32)
    # decoded at 1/8 scale: 2 x 32 x 32 pixels, 6 + 106 scans of 256 x 256 at 1/8 each, and
    # the files' bytes
    files = sum(f.stat().st_size for c in "ab" for f in (root / c).iterdir())
    total = 2 * 32 * 32 + (6 + 106) * 256 * 256 // 8 + files
    monkeypatch.setattr("nnmark.data.folder.MAX_DECODED_PIXELS", total - 1)
    with pytest.raises(NNMarkError, match=f"takes more than {total - 1:,} pixels \\(at 0.jpg"):
        load_data(f"folder:{root}")
    monkeypatch.undo()
    bomb = _scans_repeated(progressive, MAX_JPEG_SCANS)
    (root / "b" / "0.jpg").write_bytes(bomb)
    with pytest.raises(NNMarkError, match=f"0.jpg: a JPEG of more than {MAX_JPEG_SCANS} scans"):
        load_data(f"folder:{root}")
    # the segmentation loader reads any image format for its images
    seg = tmp_path / "seg"
    (seg / "images").mkdir(parents=True)
    (seg / "masks").mkdir()
    for i in range(4):
        (seg / "images" / f"{i}.jpg").write_bytes(bomb if i == 3 else progressive)
        Image.new("L", (256, 256), 0).save(seg / "masks" / f"{i}.png")
    with pytest.raises(NNMarkError, match=f"3.jpg: a JPEG of more than {MAX_JPEG_SCANS} scans"):
        load_data(f"seg:{seg}")
    (seg / "images" / "3.jpg").write_bytes(progressive)
    assert load_data(f"seg:{seg}").x.shape == (4, 1, 128, 128)


@pytest.mark.parametrize(
    "kind, tensor",
    [
        ("sparse", lambda: torch.eye(4).to_sparse()),
        ("meta", lambda: torch.empty(4, 4, device="meta")),
        ("torch.complex64", lambda: torch.zeros(4, 4, dtype=torch.complex64)),
    ],
)
def test_a_checkpoint_of_odd_tensors_is_one_line(kind: str, tensor, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Sparse and meta tensors failed deep in reading (RuntimeError, NotImplementedError) and a
    complex one was read by its real part with a warning: refused at load, by name."""
    path = tmp_path / "odd.pt"
    torch.save({"w": torch.zeros(2), "odd": tensor()}, path)
    with pytest.raises(NNMarkError, match=f"tensor 'odd' is {kind}; a model's weights are dense"):
        load_state_dict(path)
    if kind.startswith("torch.complex"):  # safetensors holds complex tensors too
        from safetensors.torch import save_file

        save_file({"w": torch.zeros(2), "odd": tensor()}, str(tmp_path / "odd.safetensors"))
        with pytest.raises(NNMarkError, match=f"tensor 'odd' is {kind}; a model's weights"):
            load_state_dict(tmp_path / "odd.safetensors")


def _with_pickle(state: dict, pickle: bytes, path: Path, deflate: bool) -> None:  # type: ignore[type-arg]
    """`state` saved by torch, its data.pkl then replaced by `pickle`."""
    import io
    import zipfile

    buf = io.BytesIO()
    torch.save(state, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith("data.pkl"):
                how = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
                dst.writestr(info.filename, pickle, how)
            else:
                dst.writestr(info, src.read(info.filename))


def test_a_checkpoint_whose_pickle_unpickles_into_gigabytes_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 37: the weights-only unpickler builds an object per opcode, and a 5.8 KB
    file of 5 M one-byte empty sets peaked at 1.4 GB (60 M: past 4 GiB). The memory a pickle's
    objects would take is estimated from its opcodes before torch reads it, its bytes bounded
    too. A state dict of many tensors, some tied, loads, and so does one beside a loss history
    and a vocabulary (an opcode count tied to the tensors refused those; diff review)."""
    import io

    import nnmark.io

    sets = b"\x80\x04" + b"\x8f" * 2_000_000 + b"}."  # 2 M empty sets (464 MB), then a dict
    for deflate in (True, False):
        bomb = tmp_path / f"bomb{deflate}.pt"
        _with_pickle({"w": torch.zeros(2)}, sets, bomb, deflate)
        assert bomb.stat().st_size < (20_000 if deflate else 2_100_000)
        with pytest.raises(NNMarkError, match="pickle would build more than 256 MiB of objects"):
            load_state_dict(bomb)
    # many tensors, two of them tied; then beside a history and a vocabulary
    state = {f"layer{i}.weight": torch.full((2, 2), float(i)) for i in range(3000)}
    state["tied"] = state["layer0.weight"]
    history = [0.5 + i * 1e-6 for i in range(100_000)]
    vocab = {f"token{i}": i for i in range(30_000)}
    for i, saved in enumerate((state, {"state_dict": state, "history": history, "vocab": vocab})):
        buf = io.BytesIO()
        torch.save(saved, buf)
        (tmp_path / f"many{i}.pt").write_bytes(buf.getvalue())
        loaded, _ = load_state_dict(tmp_path / f"many{i}.pt")
        assert len(loaded) == 3001 and float(loaded["layer2999.weight"][0, 0]) == 2999.0
    monkeypatch.setattr(nnmark.io, "MAX_PICKLE_BYTES", 1000)
    with pytest.raises(
        NNMarkError, match=r"its pickle [\w/]+data.pkl is [\d,]+ bytes \(at most 1,000"
    ):
        load_state_dict(tmp_path / "many0.pt")


def test_a_checkpoint_whose_tensors_read_larger_than_the_file_is_refused(tmp_path: Path) -> None:
    """Expanded views (stride 0) of a one-value storage: a 289 KB file read as 8.3 GB when
    realignment copied them (red team, session 31). And views of one storage named many
    times over."""
    path = tmp_path / "expanded.pt"
    torch.save({"w": torch.zeros(2), "big": torch.zeros(1).expand(1 << 30)}, path)
    with pytest.raises(NNMarkError, match="'big' holds more values than its storage"):
        load_state_dict(path)
    base = torch.zeros(1 << 16)
    torch.save({f"v{i}": base[:] for i in range(64)}, path)
    with pytest.raises(NNMarkError, match="more than 4x the file"):
        load_state_dict(path)
    torch.save({"w": base, "tied": base}, path)  # tied weights share storage: read as given
    assert set(load_state_dict(path)[0]) == {"w", "tied"}


def test_the_other_sides_text_prints_on_one_line(
    model_file: Path, plain_cnn, digits: DataBundle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The console keeps newlines (they are the program's own), so a key's layer, its
    timestamp's TSA URL, a model's metadata or a tensor name holding one printed whole fake
    lines, e.g. "verdict: FOUND" (red team, session 26). Layer names and metadata that are not
    printable are refused; the rest is shown on its line, '?' for what a terminal acts on."""
    from safetensors.torch import load_file, save_file

    key = honest_key("uchida", plain_cnn, digits)
    doc = key.to_json()
    doc["committed"]["marks"][0]["layer"] = "conv2\nverdict:    FOUND, claimed (p 1e-30)"
    doc["commitment"] = sha256_hex(doc["committed"])
    path = tmp_path / "layer.nnkey"
    path.write_text(json.dumps(doc))
    r = runner.invoke(app, ["key", "show", str(path)])
    assert r.exit_code == 2 and "layer must be a layer name" in one_line(r.stderr)
    stamped = key.to_json()
    stamped["timestamp"] = {"tsa": "http://x\ntimestamp:  2025-01-01 (valid)", "token": "AA=="}
    path = tmp_path / "tsa.nnkey"
    path.write_text(json.dumps(stamped))
    r = runner.invoke(app, ["key", "show", str(path)])
    lines = r.stdout.strip().splitlines()
    ts = [line for line in lines if line.startswith("timestamp:")]
    assert r.exit_code == 0 and len(lines) == 10 and len(ts) == 1, r.stdout
    assert "http://x?timestamp:" in ts[0], r.stdout
    state = load_file(str(model_file))
    bad_meta = {**model_info(plain_cnn, digits).to_metadata(), "nnmark.task": "x\nverdict: FOUND"}
    save_file(state, str(tmp_path / "task.safetensors"), metadata=bad_meta)
    r = runner.invoke(app, ["inspect", str(tmp_path / "task.safetensors")])
    assert r.exit_code == 2 and "unknown task" in one_line(r.stderr)
    save_file(
        {**state, "w\nverdict: FOUND": torch.zeros(1)},
        str(tmp_path / "name.safetensors"),
        metadata=model_info(plain_cnn, digits).to_metadata(),
    )
    r = runner.invoke(app, ["inspect", str(tmp_path / "name.safetensors")])
    assert r.exit_code == 0 and "w?verdict: FOUND" in r.stdout
    assert not any(line.strip().startswith("verdict") for line in r.stdout.splitlines())


def test_a_key_with_huge_fields_is_refused_in_one_short_line(
    plain_cnn, digits: DataBundle, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """4.5 million config entries took 35 s and 1.9 GB to refuse, in a 44 MB error line; a
    60 MB scheme name was echoed whole (red team, session 28). A mark's config, data and
    stored hold at most 64 entries of names up to 64 characters, a scheme name at most 64, a
    key file at most 100,000 ':' (counted before parsing), an error line at most 500."""
    from nnmark.cli.common import _one_line
    from nnmark.config import build_config
    from nnmark.schemes.adi import AdiConfig

    doc = honest_key("adi", plain_cnn, digits).to_json()
    path = tmp_path / "k.nnkey"

    def forged(edit) -> str:  # type: ignore[no-untyped-def]
        d = json.loads(json.dumps(doc))
        edit(d["committed"]["marks"][0], d)
        d["commitment"] = sha256_hex(d["committed"])
        path.write_text(json.dumps(d))
        r = runner.invoke(app, ["key", "show", str(path)])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-500:]
        return r.stderr

    cases = {
        "at most 64 entries": lambda m, d: m["config"].update({f"k{i}": 1 for i in range(65)}),
        "named in at most 64": lambda m, d: m["data"].update({"x" * 65: 1}),
        "1 to 64 characters": lambda m, d: m.update(scheme="a" * 100_000),
        "more than 100,000 ':'": lambda m, d: d.update(signature={"x": ":" * 100_001}),
    }
    for says, edit in cases.items():
        assert says in forged(edit)
    import dataclasses

    from nnmark.schemes import scheme_for

    mark = dataclasses.replace(honest_key("adi", plain_cnn, digits).marks[0], scheme="z" * 10**6)
    with pytest.raises(NNMarkError, match=r"unknown scheme 'z{64}'$"):
        scheme_for(mark)
    line = _one_line(NNMarkError("a" * 10_000))
    assert len(line) == 500 and line.endswith("…")
    with pytest.raises(NNMarkError, match=r"k0, k1, k10, k100, k101 and 995 more for") as e:
        build_config(AdiConfig, {f"k{i}": 1 for i in range(1000)})
    assert len(str(e.value)) < 200


def test_a_key_or_candidates_demanding_hours_of_kdf_are_refused_before_deriving(
    plain_cnn, digits: DataBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """16 marks at the largest KDF (N 2^20, r 8, p 4) took 176 s to verify, and a folder of
    such keys hours to identify against (red team, session 28): a key's derivations are
    bounded at 16 reference CPU-seconds, identify's at 3,600, both before any scrypt runs."""
    from nnmark import keys
    from nnmark.fingerprint import identify

    def no_scrypt(*args: object) -> bytes:
        raise AssertionError("derived before the budget was checked")

    doc = honest_key("adi", plain_cnn, digits).to_json()
    doc["committed"]["kdf"] = {"name": "scrypt", "n": 1 << 20, "r": 8, "p": 4}
    path = tmp_path / "k.nnkey"

    def save(marks: int) -> None:
        doc["committed"]["marks"] = [doc["committed"]["marks"][0]] * marks
        doc["commitment"] = sha256_hex(doc["committed"])
        path.write_text(json.dumps(doc))

    monkeypatch.setattr(keys, "_scrypt", no_scrypt)
    save(16)
    r = runner.invoke(app, ["verify", "--key", str(path), str(tmp_path / "absent.safetensors")])
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr[-500:]
    assert "51.2 reference CPU-seconds (at most 16); refused before deriving" in r.stderr
    save(1)  # one mark at the largest cost is an owner's choice: 3.2
    one = OwnerKey.load(path)
    with pytest.raises(NNMarkError, match="3,603 reference CPU-seconds .at most 3,600."):
        identify(plain_cnn, {f"r{i}.nnkey": one for i in range(1126)})


def test_inputs_that_ended_in_another_error_are_one_line(tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """Review (session 34): `train --lr 1e300` passed the check (finite, > 0) and failed inside
    the optimiser; `key timestamp --tsa 'http://[::1'` was a ValueError; a key path that is a
    folder or a FIFO was "not found"."""
    from nnmark import TrainConfig

    with pytest.raises(ValueError, match="lr must be > 0 and a float32"):
        TrainConfig(lr=1e300)
    key = tmp_path / "k.nnkey"
    honest_key("uchida", new_model("cnn", digits), digits).save(key)
    r = CliRunner().invoke(app, ["key", "timestamp", str(key), "--tsa", "http://[::1"])
    assert r.exit_code == 2 and "not a URL: 'http://[::1'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    os.mkfifo(tmp_path / "fifo.nnkey")
    for path in (tmp_path, tmp_path / "fifo.nnkey"):
        with pytest.raises(NNMarkError, match="key file not a regular file"):
            OwnerKey.load(path)
    with pytest.raises(NNMarkError, match="key file not found"):
        OwnerKey.load(tmp_path / "none.nnkey")


def test_a_suspect_that_cannot_be_copied_whole_is_one_line(tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """verify and identify copy the suspect before reading it (nnmark.suspect.SuspectCopy):
    a FIFO, a folder, a sparse file (KB on disk claiming GB: an hour of hashing; review,
    session 35) and a file the disk has no room to copy are refused, one line, exit 2,
    before any copy is left behind."""
    import shutil
    import tempfile

    key = tmp_path / "k.nnkey"
    honest_key("uchida", new_model("cnn", digits), digits).save(key)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    os.mkfifo(tmp_path / "fifo.safetensors")
    with open(tmp_path / "sparse.safetensors", "wb") as fh:
        fh.truncate(3 << 30)
    plain = tmp_path / "plain.safetensors"
    save_model(new_model("cnn", digits), model_info(new_model("cnn", digits), digits), plain)
    cases = [
        (tmp_path / "fifo.safetensors", "not a regular file"),
        (tmp_path, "not a regular file"),
        (tmp_path / "sparse.safetensors", "a sparse file (holes where the values should be)"),
    ]
    original = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        for command in ("verify", "identify"):
            for path, says in cases:
                args = [command, str(path), "--key" if command == "verify" else "--keys"]
                r = runner.invoke(app, [*args, str(key if command == "verify" else tmp_path)])
                assert r.exit_code == 2 and says in one_line(r.stderr), (command, path, r.stderr)
        usage = shutil.disk_usage(scratch)
        fake = type(usage)(usage.total, usage.used, plain.stat().st_size)  # no room left

        from unittest import mock

        with mock.patch("shutil.disk_usage", return_value=fake):
            r = runner.invoke(app, ["verify", str(plain), "--key", str(key)])
        assert r.exit_code == 2 and "set TMPDIR to a folder on a larger disk" in one_line(r.stderr)
    finally:
        tempfile.tempdir = original
    assert not list(scratch.iterdir())


def test_a_suspect_growing_while_copied_and_a_terminated_copy(tmp_path: Path, digits) -> None:  # type: ignore[no-untyped-def]
    """Review, session 35: the copy read to the end of the file, so a file the other side grew
    after the size and disk checks (or a file system serving endless data) filled the disk;
    it copies the size it checked and refuses a file whose size changed. SIGTERM (timeout, a
    CI cancel) ended verify without removing a model-sized copy: it now raises SystemExit, so
    the copy's clean-up runs."""
    import signal
    from unittest import mock

    from nnmark.cli.common import terminated_as_exit
    from nnmark.suspect import SuspectCopy

    plain = tmp_path / "plain.safetensors"
    save_model(new_model("cnn", digits), model_info(new_model("cnn", digits), digits), plain)
    real = os.fstat

    def smaller(fd: int) -> os.stat_result:  # what the checks saw: 1 KiB less than is there
        st = list(real(fd))
        st[6] -= 1024  # st_size
        return os.stat_result(st)

    with mock.patch("os.fstat", smaller), pytest.raises(NNMarkError, match="changed size"):
        SuspectCopy(plain)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop, terminated_as_exit():
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before  # the old handler is back
