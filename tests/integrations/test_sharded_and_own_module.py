"""Sharded checkpoints read lazily, and a user's own module or plain state dict verified."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from nnmark import verify
from nnmark.cli import app
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
    # Corrupt every shard that does not hold the marked layer: verification never reads them.
    for shard in set(weight_map.values()) - {weight_map[layer]}:
        (tmp_path / shard).write_bytes(b"x" * 100)
    key_path = tmp_path / "k.nnkey"
    key.save(key_path)
    r = runner.invoke(app, ["verify", str(index), "--key", str(key_path), "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["ber"] == 0.0
    assert ShardedSuspect(index).tensor("nope") is None
    (tmp_path / weight_map[layer]).unlink()
    r = runner.invoke(app, ["verify", str(index), "--key", str(key_path)])
    assert r.exit_code == 2 and "is missing" in r.stderr


class MyNet(nn.Module):
    """A user's own class: only the marked layer's name has to match."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3))
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)


def test_own_module_and_plain_state_dict(uchida_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model, key = uchida_cnn
    mine = MyNet()
    mine.conv3.load_state_dict(model.conv3.state_dict())
    assert verify(mine, key).verdict == "found"
    assert verify(MyNet(), key).verdict == "not_found"
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    key.save(tmp_path / "k.nnkey")
    r = runner.invoke(
        app, ["verify", str(tmp_path / "weights.pt"), "--key", str(tmp_path / "k.nnkey")]
    )
    assert r.exit_code == 0, r.stderr
