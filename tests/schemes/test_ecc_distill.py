"""Error-correcting payloads and distill-to-embed."""

from __future__ import annotations

import json
import random
from pathlib import Path

from typer.testing import CliRunner

from nnmark.cli import app
from nnmark.ecc import decode_bits, encode_message


def test_bch_corrects_up_to_t_and_never_returns_a_wrong_payload() -> None:
    rng = random.Random(0)
    for message, capacity in (("ACME Corp", 255), ("id-7", 64), ("Ünïcode ✓", 511)):
        bits, params = encode_message(message, capacity)
        assert len(bits) <= capacity and params["t"] >= 1
        t = params["t"]
        for _ in range(100):  # up to t errors: always the exact payload
            k = rng.randint(0, t)
            flipped = list(bits)
            for i in rng.sample(range(len(bits)), k):
                flipped[i] ^= 1
            r = decode_bits(flipped, params)
            assert r.ok and r.message == message and r.corrected == k
        failures = 0
        for _ in range(100):  # beyond t: a failure is reported, never another message
            flipped = list(bits)
            for i in rng.sample(range(len(bits)), rng.randint(t + 1, min(len(bits), 3 * t + 3))):
                flipped[i] ^= 1
            r = decode_bits(flipped, params)
            assert r.message in (None, message)
            failures += not r.ok
        assert failures >= 95


def test_message_too_long_for_the_mark_is_a_clear_error() -> None:
    import pytest

    from nnmark import NNMarkError

    with pytest.raises(NNMarkError, match="holds 32"):
        encode_message("a much too long message", 32)


def test_distill_to_embed_with_a_message(tmp_path: Path) -> None:
    runner = CliRunner()
    teacher, student, key = (
        tmp_path / "t.safetensors",
        tmp_path / "s.safetensors",
        tmp_path / "k.nnkey",
    )
    assert runner.invoke(app, ["train", "--epochs", "10", "--out", str(teacher)]).exit_code == 0
    r = runner.invoke(
        app,
        [
            "embed",
            str(teacher),
            "--distill",
            "--model",
            "cnn",
            "--epochs",
            "10",
            "--scheme",
            "uchida",
            "--message",
            "ACME Corp",
            "--bits",
            "200",
            "--out",
            str(student),
            "--key-out",
            str(key),
        ],
    )
    assert r.exit_code == 0, r.stderr
    v = json.loads(runner.invoke(app, ["verify", str(student), "--key", str(key), "--json"]).stdout)
    assert (
        v["verdict"] == "found" and v["message"] == "ACME Corp" and v["details"]["ecc"]["decoded"]
    )
    ev = json.loads(runner.invoke(app, ["evaluate", str(student), "--json"]).stdout)
    assert ev["accuracy"] > 0.9  # learned from the teacher's outputs alone
    r = runner.invoke(app, ["verify", str(teacher), "--key", str(key), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["details"]["ecc"]["decoded"] is False
