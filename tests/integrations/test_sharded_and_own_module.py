"""Sharded checkpoints read lazily, and a user's own module or plain state dict verified."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from safetensors.torch import save_file
from typer.testing import CliRunner

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
    r = runner.invoke(app, ["inspect", str(index)])  # what verify reads, inspect shows
    assert r.exit_code == 0 and layer in r.stdout, r.stderr
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
