"""A model file's tensor list is the other side's: a safetensors header (or a sharded index)
listing more tensors than any model is refused with one line before per-tensor work, and
`nnmark inspect` prints a bounded table (red team, session 27: 1M zero-size tensors in a 59 MB
header kept inspect busy past 200 s at 3.6 GB; verify took 9.4 s and 1 GB). Scaled down: the
bounds are lowered for each test."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from nnmark import io
from nnmark.cli import app
from nnmark.cli import core as cli_core
from nnmark.errors import NNMarkError
from nnmark.integrations import sharded
from nnmark.integrations.sharded import ShardedSuspect

runner = CliRunner()


def _header_file(path: Path, entries: dict[str, Any]) -> Path:
    """A safetensors file of zero-size tensors (or whatever entries are given)."""
    raw = json.dumps({**entries, "__metadata__": {}}, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)
    return path


def _empty(n: int) -> dict[str, Any]:
    return {f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)}


def test_a_header_of_too_many_tensors_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(io, "MAX_TENSORS", 50)
    header, _ = io.read_safetensors_header(_header_file(tmp_path / "ok.safetensors", _empty(50)))
    assert len(header) == 50  # at the bound: read
    many = _header_file(tmp_path / "many.safetensors", _empty(51))
    with pytest.raises(NNMarkError, match="header lists more than 50 tensors"):
        io.read_safetensors_header(many)
    # entries that are not objects are counted too, before any per-entry work
    flat = _header_file(tmp_path / "flat.safetensors", {f"t{i}": 0 for i in range(51)})
    with pytest.raises(NNMarkError, match="header lists 51 tensors, more than 50"):
        io.read_safetensors_header(flat)
    r = runner.invoke(app, ["inspect", str(many)])
    assert r.exit_code == 2 and "more than 50 tensors" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_header_of_too_many_commas_is_refused_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _header_file(tmp_path / "many.safetensors", _empty(20))
    monkeypatch.setattr(io, "MAX_HEADER_COMMAS", 40)  # 20 entries: about 80 commas

    def no_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr(io.json, "loads", no_parse)
    with pytest.raises(NNMarkError, match="header holds 80 commas, more than 40"):
        io.read_safetensors_header(path)


def test_inspect_lists_a_bounded_number_of_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_core, "INSPECT_ROWS", 5)
    path = tmp_path / "m.safetensors"
    save_file({f"w{i:02d}": torch.zeros(2) for i in range(12)}, str(path))
    r = runner.invoke(app, ["inspect", str(path)], terminal_width=200)
    assert r.exit_code == 0, r.output
    assert "w04" in r.output and "w05" not in r.output
    assert "... and 7 more tensors (12 in all)" in r.output


@pytest.mark.parametrize(
    "entry",
    [
        '{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}',  # a float: infinity
        '{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}',
        '{"dtype":"F32","shape":[1],"data_offsets":[true,4]}',
        '{"dtype":"F32","shape":[1],"data_offsets":[4,0]}',
        '{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}',
        '{"dtype":"F32","shape":[1e400],"data_offsets":[0,4]}',
        '{"dtype":7,"shape":[1],"data_offsets":[0,4]}',
        '{"dtype":"F32","shape":[1]}',
    ],
)
def test_a_header_entry_of_odd_offsets_or_shape_is_one_line(tmp_path: Path, entry: str) -> None:
    """Offsets and shapes are whole numbers >= 0, checked before any is used (review: an
    offset of 1e400 ended in "OverflowError: cannot convert float infinity to integer")."""
    raw = b'{"weight":' + entry.encode() + b"}"
    path = tmp_path / "m.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(8))
    with pytest.raises(NNMarkError, match="corrupted entry 'weight' in safetensors header"):
        io.read_safetensors_header(path)
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 2 and "corrupted entry 'weight'" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def _sharded(tmp_path: Path, n: int) -> Path:
    save_file(
        {f"w{i}": torch.full((3,), float(i)) for i in range(n)}, str(tmp_path / "a.safetensors")
    )
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {f"w{i}": "a.safetensors" for i in range(n)}}))
    return index


def test_a_sharded_index_of_too_many_tensors_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = _sharded(tmp_path, 12)
    monkeypatch.setattr(sharded, "MAX_INDEX_TENSORS", 12)
    assert len(ShardedSuspect(index).tensor_names()) == 12  # at the bound: read
    monkeypatch.setattr(sharded, "MAX_INDEX_TENSORS", 11)
    with pytest.raises(NNMarkError, match="the index places 12 tensors, more than 11"):
        ShardedSuspect(index)
    monkeypatch.setattr(sharded, "MAX_INDEX_TENSORS", 5)  # 11 commas: refused unparsed
    with pytest.raises(NNMarkError, match="places more than 5 tensors"):
        ShardedSuspect(index)


def test_a_shard_is_opened_once_for_all_its_tensors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its header was parsed per tensor read: N reads cost N x header (a shard of 100,000
    tensors: 0.9 s a read)."""
    import safetensors

    s = ShardedSuspect(_sharded(tmp_path, 12))
    opened, parsed = [], []
    real_open, real_header = safetensors.safe_open, sharded.read_safetensors_header
    monkeypatch.setattr(
        safetensors, "safe_open", lambda *a, **k: opened.append(a) or real_open(*a, **k)
    )
    monkeypatch.setattr(
        sharded, "read_safetensors_header", lambda p: parsed.append(p) or real_header(p)
    )
    for i in range(12):
        t = s.tensor(f"w{i}")
        assert t is not None and t.tolist() == [float(i)] * 3
    assert len(opened) == 1 and parsed == []
