"""BCH payloads: up to t flipped bits always give the exact message; beyond t a failure is
reported, never a wrong message (the fast version of benchmarks/ecc_trials.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nnmark import NNMarkError
from nnmark.cli import app
from nnmark.ecc import DecodeResult, decode_bits, encode_message


@pytest.mark.parametrize(
    ("message", "capacity"), [("ACME Corp", 255), ("id-7", 64), ("Ünïcode ✓", 511)]
)
def test_up_to_t_errors_always_decode_the_exact_message(message: str, capacity: int) -> None:
    rng = random.Random(capacity)
    bits, params = encode_message(message, capacity)
    t = params["t"]
    assert len(bits) == params["n"] <= capacity and t >= 1
    for trial in range(150):
        k = t if trial < 50 else rng.randint(0, t)  # a third exactly at the capacity t
        flipped = list(bits)
        for i in rng.sample(range(len(bits)), k):
            flipped[i] ^= 1
        assert decode_bits(flipped, params) == DecodeResult(True, message, k, t)


@pytest.mark.parametrize(
    ("message", "capacity"), [("ACME Corp", 255), ("id-7", 64), ("Ünïcode ✓", 511)]
)
def test_beyond_t_errors_report_failure_never_a_wrong_message(message: str, capacity: int) -> None:
    rng = random.Random(capacity + 1)
    bits, params = encode_message(message, capacity)
    t = params["t"]
    wrong = failures = 0
    for _ in range(150):
        k = rng.randint(t + 1, min(len(bits), 4 * t + 4))
        flipped = list(bits)
        for i in rng.sample(range(len(bits)), k):
            flipped[i] ^= 1
        r = decode_bits(flipped, params)
        wrong += r.message is not None and r.message != message
        failures += not r.ok
        assert r.ok == (r.message is not None)
    assert wrong == 0 and failures == 150


def test_the_strongest_code_that_fits_is_chosen() -> None:
    _, p255 = encode_message("ACME Corp", 255)
    _, p128 = encode_message("ACME Corp", 128)
    assert p255["t"] > p128["t"] >= 1 and p255["n"] <= 255 and p128["n"] <= 128
    assert p255["k"] == 8 * (len("ACME Corp") + 2)  # message + CRC-16


def test_a_message_too_long_names_the_bits_it_needs() -> None:
    with pytest.raises(NNMarkError, match=r"needs at least 208 bits .* the mark holds 32$"):
        encode_message("a much too long message", 32)


def test_wrong_length_is_a_failure() -> None:
    bits, params = encode_message("id-7", 64)
    assert not decode_bits(bits[:-1], params).ok


def test_cli_message_too_long_exits_2_with_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--scheme",
            "actsign",
            "--bits",
            "32",
            "--message",
            "a much too long message",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "m.safetensors"),
            "--key-out",
            str(tmp_path / "k"),
        ],
    )
    assert r.exit_code == 2 and not list(tmp_path.iterdir())
    assert r.stderr.strip().splitlines() == [
        "error: message of 23 bytes needs at least 208 bits with error correction "
        "(BCH t=1, CRC-16); the mark holds 32"
    ]
