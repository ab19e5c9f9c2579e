"""BCH payloads: up to t codeword errors always give the exact message, beyond t a failure is
reported, never a wrong message (the fast version of benchmarks/ecc_trials.py); repeated
codewords fill a fixed-length host; `embed --message` -> `verify` decodes it for every
bit-carrying white-box scheme of the registry."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from scheme_recipes import BIT_SCHEMES, POSITION_SCHEMES
from typer.testing import CliRunner

from nnmark import NNMarkError, model_info, save_model
from nnmark.cli import app
from nnmark.ecc import DecodeResult, decode_bits, encode_message, majority

CASES = [("ACME Corp", 255), ("id-7", 64), ("Ünïcode ✓", 511), ("ACME Corp", 897)]


def _flip_codeword_bits(bits: tuple[int, ...], n: int, which: list[int]) -> list[int]:
    """Flip codeword bits `which` in every copy: the worst case for the majority vote."""
    out = list(bits)
    for j in which:
        for i in range(j, len(out), n):
            out[i] ^= 1
    return out


@pytest.mark.parametrize(("message", "capacity"), CASES)
def test_up_to_t_errors_always_decode_the_exact_message(message: str, capacity: int) -> None:
    rng = random.Random(capacity)
    bits, params = encode_message(message, capacity)
    n, t = params["n"], params["t"]
    assert len(bits) == capacity and n <= capacity and t >= 1
    for trial in range(150):
        k = t if trial < 50 else rng.randint(0, t)  # a third exactly at the capacity t
        flipped = _flip_codeword_bits(bits, n, rng.sample(range(n), k))
        assert decode_bits(flipped, params) == DecodeResult(True, message, k, t)


@pytest.mark.parametrize(("message", "capacity"), CASES)
def test_beyond_t_errors_report_failure_never_a_wrong_message(message: str, capacity: int) -> None:
    rng = random.Random(capacity + 1)
    bits, params = encode_message(message, capacity)
    n, t = params["n"], params["t"]
    failures = 0
    for _ in range(150):
        flipped = _flip_codeword_bits(
            bits, n, rng.sample(range(n), rng.randint(t + 1, min(n, 4 * t + 4)))
        )
        r = decode_bits(flipped, params)
        assert r.message in (None, message) and r.ok == (r.message is not None)
        failures += not r.ok
    assert failures == 150


def test_a_repeated_codeword_outvotes_independent_bit_errors() -> None:
    """897 bits (tartaglione's positions on the digits CNN): 7 copies of a t = 5 code. 10 %
    independent flips (a single codeword of 897 bits would tolerate 9.6 % at best, t = 64 being
    bchlib's limit) leave 0.3 wrong codeword bits on average after the vote: P(> t) ~ 1e-6."""
    bits, params = encode_message("ACME Corp", 897)
    assert params["copies"] == 7 and params["tolerable_error_rate"] > 0.15
    rng = random.Random(7)
    for _ in range(100):
        r = decode_bits([b ^ (rng.random() < 0.10) for b in bits], params)
        assert r.ok and r.message == "ACME Corp"


def test_majority_drops_the_last_of_an_even_number_of_copies() -> None:
    assert majority([1, 0, 0, 0], 2) == [1, 0]  # bit 0: copies 1, 0 -> the first decides
    assert majority([1, 0, 0, 1, 1, 0, 0, 1, 0], 3) == [1, 1, 0]  # three copies each
    assert majority([1, 0, 0, 1, 1, 0, 0, 1, 0, 0], 3) == [1, 1, 0]  # bit 0's 4th copy dropped


def test_the_strongest_single_codeword_fits_a_small_host() -> None:
    _, p255 = encode_message("ACME Corp", 255)
    _, p128 = encode_message("ACME Corp", 128)
    assert p255["t"] > p128["t"] >= 1 and p255["copies"] == p128["copies"] == 1
    assert p255["k"] == 8 * (len("ACME Corp") + 2)  # message + CRC-16


def test_a_message_too_long_names_the_bits_it_needs() -> None:
    with pytest.raises(NNMarkError, match=r"needs at least 208 bits .* the mark holds 32$"):
        encode_message("a much too long message", 32)


def test_wrong_length_is_a_failure() -> None:
    bits, params = encode_message("id-7", 64)
    assert not decode_bits(bits[:-1], params).ok


def test_cli_message_too_long_exits_2_with_one_line(tmp_path: Path) -> None:
    args = ["train", "--scheme", "actsign", "--bits", "32", "--message", "a much too long message"]
    args += [
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "m.safetensors"),
        "--key-out",
        str(tmp_path / "k"),
    ]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and not list(tmp_path.iterdir())
    assert r.stderr.strip().splitlines() == [
        "error: message of 23 bytes needs at least 208 bits with error correction "
        "(BCH t=1, CRC-16); the mark holds 32"
    ]


@pytest.fixture(scope="module")
def base_file(base_cnn, digits, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("ecc") / "base.safetensors"
    save_model(base_cnn, model_info(base_cnn, digits), path)
    return path


@pytest.mark.parametrize("name", BIT_SCHEMES)
def test_embed_message_then_verify_decodes_it(name: str, base_file: Path, tmp_path: Path) -> None:
    """End to end through the CLI: the payload fills the mark (one bit per marked entry for the
    position marks), and both the JSON and the table report the decoded text."""
    out, key = tmp_path / "m.safetensors", tmp_path / "k.nnkey"
    args = ["embed", str(base_file), "--scheme", name, "--message", "ACME Corp"]
    args += ["--out", str(out), "--key-out", str(key)]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.stderr
    v = json.loads(runner.invoke(app, ["verify", str(out), "--key", str(key), "--json"]).stdout)
    assert v["verdict"] == "found" and v["message"] == "ACME Corp", v
    assert v["details"]["ecc"]["decoded"] is True
    if name in POSITION_SCHEMES:
        assert v["n"] == v["details"]["positions"] > 255  # filled, not sized from --bits
        assert v["details"]["ecc"]["copies"] > 1
    table = runner.invoke(app, ["verify", str(out), "--key", str(key)])
    assert table.exit_code == 0 and f"{name}: payload 'ACME Corp' (BCH decoded" in table.stdout
    plain = runner.invoke(app, ["verify", str(base_file), "--key", str(key), "--json"])
    doc = json.loads(plain.stdout)
    assert (
        plain.exit_code == 1
        and doc["message"] is None
        and doc["details"]["ecc"]["decoded"] is False
    )
