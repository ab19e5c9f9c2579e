"""Fingerprints: one mark per recipient; `identify` names the recipient of a leaked, fine-tuned
copy and nobody for an unmarked model (3 recipients here; 8 in benchmarks/fingerprints.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from torch import nn
from typer.testing import CliRunner

from nnmark import OwnerKey, attack, default_recipe, model_info, save_model
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.fingerprint import fingerprint, identify, recipient_nonce
from nnmark.testing.tsa import seen_now

RECIPIENTS = ["alice", "bob", "carol"]


@pytest.fixture(scope="module")
def copies(base_cnn: nn.Module, digits: DataBundle) -> list[tuple[nn.Module, OwnerKey]]:
    return fingerprint(
        base_cnn,
        digits,
        RECIPIENTS,
        "uchida",
        config=default_recipe("uchida", finetune=True),  # each copy as `nnmark embed` marks it
        secret=b"nnmark fingerprints, fixed for reruns",
        created="2026-01-01T00:00:00+00:00",  # with the secret: the same keys every run
    )


@pytest.fixture(scope="module")
def leaked(copies, digits) -> list[nn.Module]:  # type: ignore[no-untyped-def]
    """Each recipient's copy after the thief fine-tunes it (3 epochs on the thief split)."""
    return [attack(model, "finetune:epochs=3", digits) for model, _ in copies]


@pytest.fixture(scope="module")
def keys_dir(copies, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("keys")
    for name, (_, key) in zip(RECIPIENTS, copies):
        key.save(d / f"{name}.nnkey")
    return d


def test_each_copy_carries_a_distinct_mark(copies) -> None:  # type: ignore[no-untyped-def]
    assert [k.owner for _, k in copies] == RECIPIENTS
    assert len({k.marks[0].bits for _, k in copies}) == len(RECIPIENTS)


def test_recipients_nonces_come_from_the_owners_secret_not_from_their_order(copies) -> None:  # type: ignore[no-untyped-def]
    """Review, session 36: the fingerprint keys' nonces were given as a counter ("00" * 16,
    "01" * 16, ...), so a recipient rebuilt another's key from their own and planted its mark:
    identify named the innocent one at p 1.7e-77. A nonce is now HMAC(the owner's secret,
    the recipient's name), and a secret shorter than a nonce is refused before any training."""
    secret = b"nnmark fingerprints, fixed for reruns"
    nonces = [key.nonce for _, key in copies]
    assert nonces == [recipient_nonce(secret, name) for name in RECIPIENTS]
    assert len(set(nonces)) == len(RECIPIENTS) and all(len(n) == 32 for n in nonces)
    assert recipient_nonce(secret + b"!", "alice") != nonces[0]  # the secret, not the name alone
    with pytest.raises(NNMarkError, match="at least 16"):
        fingerprint(nn.Linear(2, 2), None, ["alice"], secret=b"0" * 15)  # type: ignore[arg-type]
    with pytest.raises(NNMarkError, match="secret is bytes, got str"):
        fingerprint(nn.Linear(2, 2), None, ["alice"], secret="0" * 16)  # type: ignore[arg-type]
    # one name typed two ways (composed, decomposed) is one recipient, with one nonce
    assert recipient_nonce(secret, "Jos\u00e9") == recipient_nonce(secret, "Jose\u0301")
    with pytest.raises(NNMarkError, match="recipient names must be distinct"):
        fingerprint(nn.Linear(2, 2), None, ["Jos\u00e9", "Jose\u0301"])  # type: ignore[arg-type]


def test_identify_names_the_leaker_after_fine_tuning(copies, leaked) -> None:  # type: ignore[no-untyped-def]
    keys = {name: key for name, (_, key) in zip(RECIPIENTS, copies)}
    for name, model in zip(RECIPIENTS, leaked):
        result = identify(model, keys)
        assert result.named == name and result.also_found == ()
        own = next(c for c in result.candidates if c.owner == name)
        assert own.p_adjusted == pytest.approx(min(1.0, 3 * own.p_value)) and own.found
        others = [c for c in result.candidates if c.owner != name]
        assert all(c.p_adjusted > 1e-3 for c in others)
    twice = identify(leaked[0], keys | {"alice-again": keys["alice"]})  # one key, two files
    assert twice.named == "alice" and twice.also_found == ()
    assert [c.found for c in twice.candidates] == [True, False, False, True]


def test_identify_names_nobody_for_an_unmarked_model(copies, base_cnn) -> None:  # type: ignore[no-untyped-def]
    keys = {name: key for name, (_, key) in zip(RECIPIENTS, copies)}
    result = identify(base_cnn, keys)
    assert result.named is None and result.exit_code == 1
    assert all(c.p_adjusted > 1e-3 for c in result.candidates)


def test_identify_cli(leaked, base_cnn, keys_dir, digits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    suspect = tmp_path / "leak.safetensors"
    save_model(leaked[1], model_info(leaked[1], digits), suspect)
    r = runner.invoke(app, ["identify", str(suspect), "--keys", str(keys_dir), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["named"] == "bob" and doc["correction"] == "bonferroni"
    assert doc["named_key"] == "bob.nnkey"
    # a recipient is named for this file: its digest, as verify's (review, session 35)
    digest = hashlib.sha256(suspect.read_bytes()).hexdigest()
    assert doc["suspect"] == {"path": str(suspect), "sha256": digest}
    assert sorted(c["label"] for c in doc["candidates"]) == [f"{n}.nnkey" for n in RECIPIENTS]
    r = runner.invoke(app, ["identify", str(suspect), "--keys", str(keys_dir)])
    assert (
        r.exit_code == 0
        and "named: bob (bob.nnkey)" in r.stdout
        and "Bonferroni over 3" in r.stdout
        and f"SHA-256 {digest}" in r.stdout.replace("\n", "")
    )
    plain = tmp_path / "plain.safetensors"
    save_model(base_cnn, model_info(base_cnn, digits), plain)
    r = runner.invoke(app, ["identify", str(plain), "--keys", str(keys_dir), "--json"])
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["named"] is None and doc["named_key"] is None


def test_identify_cli_errors_exit_2_with_one_line(keys_dir, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.nnkey").write_text("{}")
    cases = [
        (
            ["identify", "nope.safetensors", "--keys", str(tmp_path / "none")],
            "keys folder not found",
        ),
        (["identify", "nope.safetensors", "--keys", str(empty)], "no *.nnkey files in"),
        (
            ["identify", "nope.safetensors", "--keys", str(keys_dir / "alice.nnkey")],
            "is a file: for one key, nnmark verify SUSPECT --key KEY",
        ),
        (
            ["identify", "nope.safetensors", "--keys", str(tmp_path / "bad")],
            "not an nnmark key file",
        ),
        (["identify", "nope.safetensors", "--keys", str(keys_dir)], "model file not found"),
    ]
    for args, text in cases:
        r = runner.invoke(app, args)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and text in lines[0], (args, r.stderr)


@pytest.mark.parametrize("how", ["mean", "median"])
def test_two_colluders_pooling_their_copies_are_named_and_the_third_is_not(  # type: ignore[no-untyped-def]
    copies, how: str, stamp, tsa
) -> None:
    """Issue 18: alice and bob average (or take the median of) their copies' weights; identify
    names a colluder and never carol (3 recipients, every pair; 8 recipients and k = 2, 4, 8 in
    benchmarks/collusion.py). The keys are timestamped when the copies go out; identify holds
    each to verify's claim rule, whose search-cost bound the stamp does not waive: at 64 bits
    the median of alice's and carol's copies named no one, so fingerprints are 256 bits."""
    from nnmark.attacks.collusion import collude

    keys = {name: stamp(key) for name, (_, key) in zip(RECIPIENTS, copies)}
    models = dict(zip(RECIPIENTS, (m for m, _ in copies)))
    for innocent in RECIPIENTS:
        pair = [n for n in RECIPIENTS if n != innocent]
        pooled = collude([models[n] for n in pair], how)
        result = identify(pooled, keys, tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())  # type: ignore[arg-type]
        named = {result.named, *result.also_found} - {None}
        assert named and named <= set(pair), (pair, named)


def test_collusion_pools_every_tensor_and_refuses_mismatched_copies(copies) -> None:  # type: ignore[no-untyped-def]
    import torch

    from nnmark.attacks.collusion import collude
    from nnmark.errors import NNMarkError

    a, b, c = (m for m, _ in copies)
    mean, median = collude([a, b]), collude([a, b, c], "median")
    for name, t in mean.state_dict().items():
        ta, tb, tc = a.state_dict()[name], b.state_dict()[name], c.state_dict()[name]
        if t.is_floating_point():
            assert torch.allclose(t, (ta + tb) / 2)
            assert torch.equal(
                median.state_dict()[name], torch.stack([ta, tb, tc]).median(0).values
            )
    with pytest.raises(NNMarkError, match="at least 2"):
        collude([a])
    with pytest.raises(NNMarkError, match="one architecture"):
        collude([a, nn.Linear(2, 2)])
