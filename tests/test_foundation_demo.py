"""`nnmark demo`, the README's first command, runs end to end (one epoch here: the plumbing is
under test; `make demo` runs the default 20 and is timed on a fresh clone by
benchmarks/contract_time.py). At the default recipe the demo's marked model is the session's
`uchida_cnn` recipe (seed 0, 64 bits), and "found" before and after the demo's thief
(`prune:fraction=0.5,finetune:epochs=5`) is asserted on it in
tests/attacks/test_attacks_weights.py, not at a short run here (session 40: 3 epochs did)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nnmark.cli import app


def test_demo_claims_the_marked_and_stolen_models_not_the_plain_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--epochs", "1", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    # the table's rows in order (a long label may wrap onto a continuation line: skip those)
    verdicts = [
        cells[5].strip()
        for line in result.output.splitlines()
        if line.startswith("│") and (cells := line.split("│"))[5].strip()
    ]
    # plain, marked, pruned + fine-tuned: three rows, each a verdict; the plain model is never
    # claimed (a null holds at any length of training)
    assert len(verdicts) == 3 and verdicts[0] == "not_found", verdicts
    assert set(verdicts) <= {"found", "not_found"}, verdicts
    assert {p.name for p in tmp_path.iterdir()} == {
        "plain.safetensors",
        "marked.safetensors",
        "stolen.safetensors",
        "owner.nnkey",
    }
    # a second run would replace the key: refused before any work unless --force
    key = (tmp_path / "owner.nnkey").read_bytes()
    again = CliRunner().invoke(app, ["demo", "--epochs", "1", "--out-dir", str(tmp_path)])
    assert again.exit_code == 2 and "refusing to overwrite" in again.stderr
    assert (tmp_path / "owner.nnkey").read_bytes() == key
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "owner.nnkey").mkdir()  # the models were written, then the key failed
    again = CliRunner().invoke(app, ["demo", "--epochs", "1", "--out-dir", str(clash)])
    assert again.exit_code == 2 and [p.name for p in clash.iterdir()] == ["owner.nnkey"]
