"""Sharded checkpoints read lazily, and a user's own module or plain state dict verified."""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from nnmark import SCHEMES, OwnerKey, new_model
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.integrations.sharded import ShardedSuspect

runner = CliRunner()


def test_sharded_checkpoint_reads_only_the_needed_shard(uchida_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    layer = f"{key.marks[0].layer}.weight"
    weight_map = {}
    for i, name in enumerate(state):
        shard = f"model-{i % 3 + 1:05d}-of-00003.safetensors"
        weight_map[name] = shard
    for shard in set(weight_map.values()):
        save_file({n: state[n] for n, s in weight_map.items() if s == shard}, str(tmp_path / shard))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    r = runner.invoke(app, ["inspect", str(index)])  # what verify reads, inspect shows
    assert r.exit_code == 0 and layer in r.stdout, r.stderr
    # Garble the data of every shard that does not hold the marked layer (headers intact: they
    # are checked against the index): verification reads only the marked layer's data.
    for shard in set(weight_map.values()) - {weight_map[layer]}:
        raw = bytearray((tmp_path / shard).read_bytes())
        start = 8 + int.from_bytes(raw[:8], "little")
        raw[start:] = b"x" * (len(raw) - start)
        (tmp_path / shard).write_bytes(bytes(raw))
    key_path = tmp_path / "k.nnkey"
    key.save(key_path)
    r = runner.invoke(app, ["verify", str(index), "--key", str(key_path), "--json"])
    assert r.exit_code == 0, r.stderr
    v = json.loads(r.stdout)
    assert v["ber"] == 0.0
    # the verdict names the bytes of the model, not only its index: every shard's digest
    digests = {
        s: hashlib.sha256((tmp_path / s).read_bytes()).hexdigest() for s in weight_map.values()
    }
    assert v["suspect"]["files"] == digests
    assert list(v["suspect"]["files"]) == sorted(digests)
    assert v["suspect"]["sha256"] == hashlib.sha256(index.read_bytes()).hexdigest()
    r = runner.invoke(app, ["verify", str(index), "--key", str(key_path)])
    text = r.stdout.replace("\n", "")
    assert all(f"with {s}, SHA-256 {d}" in text for s, d in digests.items()), r.stdout
    assert ShardedSuspect(index).tensor("nope") is None
    # a decoy under the marked layer's name where the index points, the real tensor in another
    # shard that loaders read whole (red team, session 26: verified not_found, loaded marked)
    other = next(s for s in set(weight_map.values()) if s != weight_map[layer])
    real = {n: state[n] for n, s in weight_map.items() if s == other}
    save_file({**real, layer: torch.zeros_like(state[layer])}, str(tmp_path / other))
    r = runner.invoke(app, ["verify", str(index), "--key", str(key_path)])
    assert r.exit_code == 2 and f"shard {other} holds {layer!r}" in r.stderr, r.stderr
    save_file(real, str(tmp_path / other))
    (tmp_path / weight_map[layer]).unlink()
    r = runner.invoke(app, ["verify", str(index), "--key", str(key_path)])
    assert r.exit_code == 2 and "is missing" in r.stderr


ROOT = Path(__file__).resolve().parents[2]


def test_own_module_example_runs_as_documented(tmp_path: Path) -> None:
    """examples/own_module.py, the example docs/integrations.md shows, run as a user would:
    the user's own class carrying the marked layer is found, a fresh one is not, and the plain
    state dict it saves verifies through the CLI."""
    example = runpy.run_path(str(ROOT / "examples" / "own_module.py"))
    assert example["main"](tmp_path) == {"own class": "found", "fresh weights": "not_found"}
    r = runner.invoke(
        app, ["verify", str(tmp_path / "weights.pt"), "--key", str(tmp_path / "owner.nnkey")]
    )
    assert r.exit_code == 0, r.stderr
    doc = (ROOT / "docs" / "integrations.md").read_text()
    assert "python examples/own_module.py --out /tmp/own" in doc


def test_black_box_mark_on_a_sharded_index_asks_for_a_runnable_model(
    digits: DataBundle, tmp_path: Path
) -> None:
    """An index names tensors, not an architecture: a black-box key is refused with what to give
    instead, not with a claim that the scheme needs white-box access (review, session 39)."""
    model = new_model("cnn", digits, seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "a.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": dict.fromkeys(state, "a.safetensors")}))
    key = OwnerKey.new("me", nonce="00" * 16)
    content = SCHEMES.get("content")
    key = key.with_mark(content.plan(model, key, content.Config(), data=digits))
    key.save(tmp_path / "bb.nnkey")
    r = runner.invoke(app, ["verify", str(index), "--key", str(tmp_path / "bb.nnkey")])
    assert r.exit_code == 2 and "read by tensor name only" in r.stderr, r.stderr
    assert "--remote" in r.stderr and "white-box access" not in r.stderr
