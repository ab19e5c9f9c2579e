"""Ownership proofs that cannot be forged (issue 12): tampered keys are refused naming the
field, identities cannot be edited, chosen payloads get no advantage, the claim rule needs a
forgery cost or a timestamp that predates the suspect, and version 1 keys are refused."""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import hashlib
import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nnmark import OwnerKey, TrainConfig, embed, new_model, verify
from nnmark.api import SECONDS_PER_YEAR, model_info, search_seconds
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.forge import SPLIT_KDF, Target, forge, honest_key, split_key
from nnmark.io import save_model
from nnmark.keys import derivation_seconds, sha256_hex, stream
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.testing.tsa import seen_now


def written(
    model: torch.nn.Module, data: DataBundle, key: OwnerKey, **kwargs: Any
) -> tuple[torch.nn.Module, OwnerKey]:
    """An Uchida mark planned for `key` and written into `model` by the paper's Eq. (6) (the
    host weights edited toward the bits, no task loss, no epoch: `embed_without_training`).
    For tests of the key and the claim rules, which need a mark that reads, not a training
    recipe's result (session 40: these trained 3 or 10 epochs, under the default recipe).
    lam 100 reads at BER 0 for every key tried (5 direct 32-bit keys on the digits CNN, 3
    random 64-bit ones on `OwnNet`: session 40); a miss fails the tests' p asserts."""
    from nnmark.schemes import scheme_for
    from nnmark.schemes.uchida import embed_without_training

    planned, key = embed(model, data, "uchida", key=key, config=TrainConfig(epochs=0), **kwargs)
    return embed_without_training(planned, scheme_for(key.marks[0]), lam=100.0), key


runner = CliRunner()


def edited(key: OwnerKey, edit: Any) -> dict[str, Any]:
    """The key's JSON with `edit` applied to its committed part and the hash recomputed: what a
    forger who knows the format writes."""
    doc = key.to_json()
    edit(doc["committed"])
    doc["commitment"] = sha256_hex(doc["committed"])
    return doc


def write(tmp_path: Path, doc: dict[str, Any], name: str = "k.nnkey") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, uchida_cnn, plain_cnn, digits: DataBundle):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("unforgeable")
    model, key = uchida_cnn
    save_model(model, model_info(model, digits), d / "marked.safetensors")
    save_model(plain_cnn, model_info(plain_cnn, digits), d / "plain.safetensors")
    key.save(d / "owner.nnkey")
    return d


def _set(section: str, name: str, value: Any) -> Any:
    def edit(c: dict[str, Any]) -> None:
        c["marks"][0][section][name] = value

    return edit


def _as_stdm(c: dict[str, Any]) -> None:
    """An stdm key whose step a forger set to 0 (every bit matched on v1 keys)."""
    c["marks"][0].update(scheme="stdm", config={"delta": 0, "lam": 0.1, "layer": None})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_as_stdm, "delta must be in [0.1, 64]"),
        (_set("data", "shape", [10**9, 10**9]), "field data.shape"),
        (_set("data", "delta", 0.0), "field data.delta"),
        (_set("stored", "triggers", {"shape": [1], "b64": ""}), "field stored"),
        (lambda c: c["marks"][0]["config"].pop("lam"), "field config"),
        (_set("config", "lam", "0.05"), "field config"),
        (_set("config", "lam", 1e300), "lam must be in (0, 1000]"),
        (lambda c: c["marks"][0].update(bits="012"), "field committed.marks[0].bits"),
        (lambda c: c["kdf"].update(n=1 << 30), "field kdf.n"),
        # scrypt's own bound (OpenSSL refused it with a bare ValueError at verification)
        (lambda c: c["kdf"].update(n=1 << 16, r=1), "below 2^(16 r) = 2^16"),
        (lambda c: c.update(owner=""), "field committed.owner"),
        (lambda c: c["marks"][0].update(projection=[1, 2]), "unknown field"),
        (lambda c: c["marks"][0].update(scheme="nope"), "field scheme"),
    ],
)
def test_tampered_fields_are_refused_naming_the_field(
    edit: Any, message: str, files: Path, tmp_path: Path
) -> None:
    doc = edited(OwnerKey.load(files / "owner.nnkey"), edit)
    r = runner.invoke(
        app, ["verify", str(files / "plain.safetensors"), "--key", str(write(tmp_path, doc))]
    )
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.stderr


def test_nan_and_infinity_in_a_key_are_refused(files: Path, tmp_path: Path) -> None:
    """NaN is not JSON, but a forger writes it by hand (json.loads would accept it)."""
    text = json.dumps(edited(OwnerKey.load(files / "owner.nnkey"), _set("config", "lam", 0.5)))
    for bad in ("NaN", "Infinity", "1e400"):
        path = tmp_path / "k.nnkey"
        path.write_text(text.replace('"lam": 0.5', f'"lam": {bad}'))
        r = runner.invoke(app, ["verify", str(files / "plain.safetensors"), "--key", str(path)])
        assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_lone_surrogate_in_a_key_is_refused_naming_it(files: Path, tmp_path: Path) -> None:
    """json reads the escape \\ud800 alone, which no UTF-8 holds: a generic UnicodeEncodeError
    came out of the commitment's hashing (red team, session 25)."""
    text = (files / "owner.nnkey").read_text()
    owner = OwnerKey.load(files / "owner.nnkey").owner
    path = tmp_path / "k.nnkey"
    path.write_text(text.replace(json.dumps(owner), json.dumps(owner)[:-1] + '\\ud800"', 1))
    r = runner.invoke(app, ["verify", str(files / "plain.safetensors"), "--key", str(path)])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "lone UTF-16 surrogate" in lines[0], r.stderr


@pytest.mark.parametrize("version", [1, 2])
def test_previous_key_formats_are_refused_with_the_reason(
    files: Path, tmp_path: Path, version: int
) -> None:
    doc = json.loads((files / "owner.nnkey").read_text())
    doc["version"] = version
    r = runner.invoke(
        app, ["verify", str(files / "marked.safetensors"), "--key", str(write(tmp_path, doc))]
    )
    assert r.exit_code == 2 and f"key format version {version} is refused" in r.stderr
    assert "mark the model again" in r.stderr


def test_a_secret_stream_is_the_whole_twister_state_from_the_secret() -> None:
    """torch's manual_seed keeps 32 bits of a seed: version-2 streams had 2^32 values, and a
    forger fitting a key to one target stream searched about 2^32 nonces, not 1 / p (red team,
    session 31). A mark's stream is MT19937 with all 624 words from SHAKE-256 of its secret:
    torch draws exactly what a reference MT19937 with that state draws."""
    mark = OwnerKey.new("o", nonce="ab" * 16, created="2026-01-01T00:00:00+00:00").new_mark(
        "uchida", {"x": 1}, "l", (0, 1)
    )
    material = mark.secret + b"|coins"
    words = np.frombuffer(hashlib.shake_256(b"nnmark/stream|" + material).digest(4 * 624), "<u4")
    reference = np.random.MT19937(0)
    reference.state = {"bit_generator": "MT19937", "state": {"key": words.copy(), "pos": 624}}
    raw = reference.random_raw(8)
    # an int64 draw in [0, 2^32) takes two words and keeps the second
    drawn = torch.empty(4, dtype=torch.int64).random_(0, 1 << 32, generator=mark.generator("coins"))
    assert drawn.tolist() == raw[1::2].tolist()
    coins = torch.randint(0, 2, (256,), generator=stream(material))
    assert not torch.equal(coins, torch.randint(0, 2, (256,), generator=mark.generator("mask")))


def test_an_edited_identity_no_longer_derives_its_secrets(files: Path, tmp_path: Path) -> None:
    """Owner or date changed and the hash recomputed: the KDF's input changed, so the
    projection and mask are other ones and the mark is not found on the owner's own model."""
    key = OwnerKey.load(files / "owner.nnkey")
    assert verify(files / "marked.safetensors", key).verdict == "found"
    for edit in (
        lambda c: c.update(owner="thief"),
        lambda c: c.update(created="2020-01-01T00:00:00+00:00"),
    ):
        forged = OwnerKey.from_json(edited(key, edit))
        v = verify(str(files / "marked.safetensors"), forged)
        assert v.verdict == "not_found" and v.p_value > 1e-3, v


def test_a_signed_key_whose_identity_is_edited_is_refused(files: Path, tmp_path: Path) -> None:
    ident = tmp_path / "id.pem"
    r = runner.invoke(app, ["key", "identity", "--out", str(ident)])
    assert r.exit_code == 0, r.stderr
    signed = tmp_path / "signed.nnkey"
    signed.write_text((files / "owner.nnkey").read_text())
    assert runner.invoke(app, ["key", "sign", str(signed), "--identity", str(ident)]).exit_code == 0
    r = runner.invoke(
        app, ["verify", str(files / "marked.safetensors"), "--key", str(signed), "--json"]
    )
    assert r.exit_code == 0, r.stderr
    priority = json.loads(r.stdout)["priority"]
    # anyone holding the key file can sign it anew: the record says the signature has no time
    assert priority.startswith("signed by ed25519:") and "signature is not timestamped" in priority
    doc = json.loads(signed.read_text())
    doc["committed"]["owner"] = "thief"
    doc["commitment"] = sha256_hex(doc["committed"])
    r = runner.invoke(
        app, ["verify", str(files / "marked.safetensors"), "--key", str(write(tmp_path, doc))]
    )
    assert r.exit_code == 2 and "signature does not match" in r.stderr


def test_chosen_payloads_get_no_advantage(digits: DataBundle, unmarked_cnns) -> None:  # type: ignore[no-untyped-def]
    """An all-ones payload on a `direct` key (raw weight signs are not fair coins): the mask
    makes the matches fair, over 20 keys and 5 unmarked models."""
    ps = []
    for i in range(20):
        key = OwnerKey.new("chooser", nonce=f"{i:032x}")
        mark = Uchida.plan(
            unmarked_cnns[0], key, UchidaConfig(key_type="direct"), payload=(1,) * 256
        )
        key = key.with_mark(mark)
        ps += [verify(m, key).p_value for m in unmarked_cnns[:5]]
    small = sum(p < 0.05 for p in ps)
    print(f"all-ones direct payloads: {small} of {len(ps)} p < 0.05, smallest {min(ps):.2e}")
    assert min(ps) > 1e-4 and small <= 12  # P(Binomial(100, 0.05) > 12) < 0.001


def test_a_stamp_made_after_signing_names_the_signer_and_a_new_signer_voids_it(
    files: Path, tsa, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Sign, then stamp: the verdict's priority says the timestamp covers the signature. A
    holder of the key file who signs it anew cannot keep the stamp: `key sign --replace` drops
    it, and a signature swapped in by hand makes the key refused (red team, session 26)."""
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tsa.ca_cert_pem)
    key = tmp_path / "mine.nnkey"
    key.write_text((files / "owner.nnkey").read_text())
    for who in ("me", "thief"):
        assert key_cli("identity", "--out", tmp_path / f"{who}.pem").exit_code == 0
    assert key_cli("sign", key, "--identity", tmp_path / "me.pem").exit_code == 0
    r = key_cli("timestamp", key, "--tsa", tsa.url, "--tsa-cert", ca)
    assert r.exit_code == 0 and "over its commitment and signature" in r.stdout, r.stderr
    shown = json.loads(key_cli("show", key, "--tsa-cert", ca, "--json").stdout)
    assert shown["timestamp"]["covers"] == "commitment and signature"
    seen = seen_now().isoformat()
    suspect = str(files / "marked.safetensors")
    args = ["--tsa-cert", str(ca), "--suspect-seen", seen, "--json"]
    r = runner.invoke(app, ["verify", suspect, "--key", str(key), *args])
    assert r.exit_code == 0, r.stderr
    priority = json.loads(r.stdout)["priority"]
    fp = shown["signature"]["fingerprint"]
    assert priority.startswith(f"signed by {fp} (the timestamp covers the signature)"), priority

    # a thief's signature by hand under the owner's stamp: the key is refused, whole
    stolen = json.loads(key.read_text())
    thief = tmp_path / "thief.nnkey"
    thief.write_text(json.dumps(stolen))
    r = key_cli("sign", thief, "--identity", tmp_path / "thief.pem", "--replace")
    assert r.exit_code == 0 and "timestamp over the old signature was removed" in r.stdout
    stolen["signature"] = json.loads(thief.read_text())["signature"]
    forged = write(tmp_path, stolen, "forged.nnkey")
    r = runner.invoke(app, ["verify", suspect, "--key", str(forged), *args])
    assert r.exit_code == 2 and "another commitment and signature" in r.stderr, r.stderr
    # through the CLI, signing anew dropped the stamp it voids: the new signer has no time
    assert "timestamp" not in json.loads(thief.read_text())
    r = runner.invoke(app, ["verify", suspect, "--key", str(thief), *args])
    assert r.exit_code == 0, r.stderr
    assert "signature is not timestamped" in json.loads(r.stdout)["priority"]


def test_a_key_that_commits_to_its_signer_takes_no_other(files: Path, tmp_path: Path) -> None:
    """`embed --identity` commits the identity's public key before the first secret and signs
    the key: a copy of the file that leaks before it is stamped cannot be signed by anyone
    else (the signature is refused, and editing the committed signer changes every secret)."""
    for who in ("me", "thief"):
        assert key_cli("identity", "--out", tmp_path / f"{who}.pem").exit_code == 0
    key, out = tmp_path / "k.nnkey", tmp_path / "m.safetensors"
    args = ["--scheme", "uchida", "--out", str(out), "--key-out", str(key)]
    r = runner.invoke(
        app,
        ["embed", str(files / "plain.safetensors"), *args, "--identity", str(tmp_path / "me.pem")],
    )
    assert r.exit_code == 0 and "found in the saved model" in r.stdout, r.stdout + r.stderr
    shown = json.loads(key_cli("show", key, "--json").stdout)
    assert shown["committed_signer"] == shown["signature"]["fingerprint"]
    r = runner.invoke(app, ["verify", str(out), "--key", str(key), "--json"])
    assert r.exit_code == 0, r.stderr
    fp = shown["committed_signer"]
    assert json.loads(r.stdout)["priority"] == f"signed by {fp}, the signer the key commits to"

    # the thief's signature: refused by `key sign`, and by verify when put in by hand
    line = key_cli("sign", key, "--identity", tmp_path / "thief.pem", "--replace").stderr
    assert "commits to signer" in line and "only the committed signer" in line
    doc = json.loads(key.read_text())
    thief_key = OwnerKey.load(key)
    from nnmark.provenance import load_identity, public_key_text, sign_commitment

    doc["signature"] = sign_commitment(thief_key.commitment, load_identity(tmp_path / "thief.pem"))
    r = runner.invoke(app, ["verify", str(out), "--key", str(write(tmp_path, doc)), "--json"])
    assert r.exit_code == 2 and "not by the signer it commits to" in r.stderr, r.stderr
    # ... or with the committed signer edited to the thief's: another key, whose secrets differ
    doc["committed"]["signer"] = public_key_text(load_identity(tmp_path / "thief.pem"))
    doc["commitment"] = sha256_hex(doc["committed"])
    doc["signature"] = sign_commitment(doc["commitment"], load_identity(tmp_path / "thief.pem"))
    edited_key = OwnerKey.from_json(doc)
    assert edited_key.marks[0].secret != thief_key.marks[0].secret
    r = runner.invoke(app, ["verify", str(out), "--key", str(write(tmp_path, doc)), "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["verdict"] == "not_found", r.stdout
    # a committed signer that is not a public key's canonical text: refused at load
    doc["committed"]["signer"] = "AAAA"
    doc["commitment"] = sha256_hex(doc["committed"])
    with pytest.raises(NNMarkError, match="committed.signer must be canonical base64"):
        OwnerKey.from_json(doc)


def key_cli(*args: str | Path) -> Any:
    return runner.invoke(app, ["key", *map(str, args)])


def test_the_claim_rule_needs_a_forgery_cost_timestamp_or_not(  # type: ignore[no-untyped-def]
    digits: DataBundle, stamp, tsa
) -> None:
    """32 matching bits: p 2.3e-10 < alpha, but a key search reaches it in a few CPU-years, so
    not claimed, and a timestamp that predates the suspect does not change that: it proves
    priority, while a key ground against the holder's own models of the task before the stamp
    fits future models too (benchmarks/proxy_search.py). The priority line still tells a stamp
    that predates the suspect from one that comes after, one not checked and one not compared
    with the suspect's first sighting. (A `direct` key: its bits carry no scores, so p is the
    binomial tail of 32 bits; a random key's scores put the same mark far below the bound.)"""
    key = OwnerKey.new("short", nonce="3c" * 16)
    model, key = written(
        new_model("cnn", digits, seed=0), digits, key, bits=32, options={"key_type": "direct"}
    )
    v = verify(model, key)
    assert v.p_value < 1e-6 and v.verdict == "not_found"
    assert v.forgery_cost is not None and v.forgery_cost < 1000
    assert "a key search reaches it" in (v.claim_rule or "")
    stamped = stamp(key)
    certs = [tsa.ca_cert_pem]
    later = seen_now()  # the suspect first seen after the stamp
    v = verify(model, stamped, tsa_certs=certs, suspect_seen=later)
    assert v.verdict == "not_found" and "waives no search cost" in (v.claim_rule or "")
    assert "a key search reaches it" in (v.claim_rule or "")
    assert "committed no later than" in (v.priority or "")
    # the record names the trusted certificate, not only a subject anyone can write (red
    # team, session 26: two unrelated CAs named alike gave the same priority)
    import hashlib

    from nnmark.provenance import _load_trusted

    anchor = hashlib.sha256(_load_trusted(certs)[0].der).hexdigest()[:32]
    assert f"trusted through certificate sha256:{anchor}" in (v.priority or "")
    earlier = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    v = verify(model, stamped, tsa_certs=certs, suspect_seen=earlier)
    assert v.verdict == "not_found" and "proves nothing" in (v.priority or "")
    v = verify(model, stamped)  # no certificate: the token is not checked, not counted
    assert v.verdict == "not_found" and "not checked" in (v.priority or "")
    # no --suspect-seen: the stamp is shown, not counted (two red teams: a key made for a
    # suspect and stamped afterwards was claimed when an unchecked stamp counted)
    v = verify(model, stamped, tsa_certs=certs)
    assert v.verdict == "not_found" and "stamp is not counted" in (v.claim_rule or "")
    assert "committed no later than" in (v.priority or "") and "not counted" in (v.priority or "")
    v = verify(model, stamped, tsa_certs=certs, suspect_seen=later)
    assert "not counted" not in (v.claim_rule or "") + (v.priority or "")
    with pytest.raises(NNMarkError, match="in the future"):
        verify(model, stamped, tsa_certs=certs, suspect_seen=later + dt.timedelta(days=1))
    with pytest.raises(NNMarkError, match="in the future"):  # an unstamped key: still checked
        verify(model, key, suspect_seen=later + dt.timedelta(days=1))
    # an unstamped key: the date has nothing to be compared with, and the verdict says so
    v = verify(model, key, suspect_seen=later)
    assert "no timestamp to compare it with" in (v.priority or "")
    assert "suspect-seen" not in (verify(model, key).priority or "")


def test_a_timestamp_over_another_commitment_is_refused(
    files: Path, stamp, tsa, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    key = OwnerKey.load(files / "owner.nnkey")
    mine = key.marks[0]
    other = OwnerKey.new("other", nonce="99" * 16)
    other = stamp(
        other.with_mark(
            other.new_mark(mine.scheme, mine.config, mine.layer, mine.bits, data=mine.data)
        )
    )
    swapped = dataclasses.replace(key, timestamp=other.timestamp)
    swapped.save(tmp_path / "k.nnkey")
    (tmp_path / "ca.pem").write_bytes(tsa.ca_cert_pem)
    r = runner.invoke(
        app,
        [
            "verify",
            str(files / "marked.safetensors"),
            "--key",
            str(tmp_path / "k.nnkey"),
            "--tsa-cert",
            str(tmp_path / "ca.pem"),
        ],
    )
    assert r.exit_code == 2 and "another commitment" in r.stderr


def test_a_zlib_bomb_in_stored_triggers_is_refused_quickly(digits: DataBundle, plain_cnn) -> None:  # type: ignore[no-untyped-def]
    key = honest_key("frontier", plain_cnn, digits)
    bomb = base64.b64encode(zlib.compress(b"\0" * (64 << 20), 9)).decode()
    doc = edited(key, lambda c: c["marks"][0]["stored"]["triggers"].update(b64=bomb))
    with pytest.raises(NNMarkError, match="corrupted"):
        verify(plain_cnn, OwnerKey.from_json(doc))


def test_the_forgers_toolbox_gets_nothing_accepted(
    digits: DataBundle, plain_cnn, uchida_cnn
) -> None:  # type: ignore[no-untyped-def]
    """Every strategy against three schemes on a model the forger never marked and on one
    someone else marked (benchmarks/forgery.py runs them all)."""
    import functools

    from nnmark.forge import STRATEGIES, nonce_search

    table = {**STRATEGIES, "nonce_search": functools.partial(nonce_search, budget_s=0.5)}
    for model, victim in ((plain_cnn, None), uchida_cnn):
        results = forge(Target(model, digits, victim), ["uchida", "content", "adi"], None, table)
        outcomes = {r.outcome for r in results}
        print({s: sum(r.outcome == s for r in results) for s in outcomes})
        assert not [r for r in results if r.accepted]
        assert {"refused", "not_found"} <= outcomes
    search = next(r for r in results if r.strategy == "nonce_search" and r.scheme == "uchida")
    assert search.extra["cost_cpu_years_at_this_rate"] > 1000
    # 16 marks of 6 bits, each searched alone: the verdict never prices the search above what
    # was run (at SPLIT_KDF's 128 KiB, nothing: keys.MIN_PRICED_KDF_MEMORY)
    split = next(r for r in results if r.strategy == "split_search" and r.scheme == "uchida")
    work = split.extra["derivations"] * derivation_seconds(SPLIT_KDF) / SECONDS_PER_YEAR
    print(f"split search: p {split.p_value:.2e}, {split.extra['derivations']} derivations")
    assert split.p_value is not None and split.p_value < 1e-6 and split.outcome == "not_found"
    assert split.forgery_cost is not None and split.forgery_cost <= 2 * work


def test_a_kdf_that_fits_in_a_cache_is_priced_at_nothing(digits: DataBundle, plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Red team, session 25: a forger picks the KDF, and at N = 2^10, r = 1 (128 KiB) scrypt
    runs thousands at once on a GPU, where CPU-seconds price nothing real. Below 16 MiB a
    derivation is priced at nothing, so a mark made under such a key, embedded and read at
    p far below alpha, is not claimed without a timestamp; the default KDF is priced."""
    from nnmark.keys import DEFAULT_KDF, MIN_PRICED_KDF_MEMORY

    assert derivation_seconds(SPLIT_KDF) == 0.0
    assert derivation_seconds({**DEFAULT_KDF, "n": MIN_PRICED_KDF_MEMORY // 128 // 8}) > 0
    assert search_seconds([0.0, 0.05], [1e-9, 1e-9], "fisher") == 0.0
    key = OwnerKey.new("cheap owner", nonce="c4" * 16, kdf=SPLIT_KDF)
    marked, key = written(copy.deepcopy(plain_cnn), digits, key)  # a mark that reads
    v = verify(marked, key)
    print(f"cheap KDF: p {v.p_value:.2g}, cost {v.forgery_cost}, {v.claim_rule}")
    assert v.p_value < v.alpha and v.verdict == "not_found" and v.forgery_cost == 0.0
    assert "not claimed: p < alpha, but a key search reaches it in 0 CPU-years, " in v.claim_rule


def test_search_seconds_prices_the_cheapest_split_of_a_combined_key() -> None:
    """One mark: 1 / p derivations. Fisher over k marks, each searchable alone: the product of
    the parts' p spread evenly (16 marks at 1/64: 16 x 64 derivations, halved for the second
    route), never below the one-part route's half; Bonferroni: the cheapest mark to the
    smallest p."""
    assert search_seconds([0.05], [1e-12], "one") == pytest.approx(0.05 / 1e-12)
    assert search_seconds([0.05] * 16, [1 / 64] * 16, "fisher") == pytest.approx(16 * 64 * 0.05 / 2)
    strong_and_dead = search_seconds([0.05, 0.05], [1e-19, 1.0], "fisher")
    assert strong_and_dead == pytest.approx(0.05 / 1e-19 / 2)
    assert search_seconds([0.05, 1.0], [1e-9, 1e-9], "bonferroni") == pytest.approx(0.05 / 1e-9)
    # searched marks cost the same: the cheap one to 1e-8, the dear one to 1e-4, 1e6 s each
    both = search_seconds([0.01, 100.0], [1e-6, 1e-6], "fisher")
    assert both == pytest.approx(2e6 / 2)
    # a mark too dear to search is derived once; the cheap one carries the whole product
    once = search_seconds([0.01, 1e6], [1e-6, 0.5], "fisher")
    assert once == pytest.approx((0.01 / 5e-7 + 1e6) / 2)
    # a part that read nothing (NaN) is no evidence, not an infinite cost
    assert search_seconds([0.05, 0.05], [float("nan"), 1e-9], "fisher") == pytest.approx(
        search_seconds([0.05, 0.05], [1.0, 1e-9], "fisher")
    )
    assert math.isfinite(search_seconds([0.05, 0.05], [float("nan")] * 2, "fisher"))


def test_identify_names_no_one_by_a_key_verify_would_not_claim(
    tmp_path: Path, digits: DataBundle, plain_cnn
) -> None:  # type: ignore[no-untyped-def]
    """`identify` holds candidate keys to verify's claim rule: a split-searched key (p 3e-14,
    a forgery cost of seconds) names no one, and says why."""
    key, _ = split_key("uchida", Target(plain_cnn, digits))
    save_model(plain_cnn, model_info(plain_cnn, digits), tmp_path / "plain.safetensors")
    (tmp_path / "keys").mkdir()
    key.save(tmp_path / "keys" / "forger.nnkey")
    r = runner.invoke(
        app,
        [
            "identify",
            str(tmp_path / "plain.safetensors"),
            "--keys",
            str(tmp_path / "keys"),
            "--json",
        ],
    )
    assert r.exit_code == 1, r.output
    (row,) = json.loads(r.stdout)["candidates"]
    assert row["p_adjusted"] < 1e-6 and not row["found"]
    assert "a key search reaches it" in row["reason"]


def test_forge_cli(files: Path) -> None:
    r = runner.invoke(
        app,
        [
            "forge",
            str(files / "plain.safetensors"),
            "--scheme",
            "stdm",
            "--strategy",
            "tampered",
            "--strategy",
            "chosen_payload",
        ],
    )
    assert r.exit_code == 0, r.stderr
    assert "0 accepted" in r.stdout
    r = runner.invoke(app, ["forge", str(files / "plain.safetensors"), "--strategy", "guess"])
    assert r.exit_code == 2 and "unknown strategy" in r.stderr
    from nnmark.forge import STRATEGIES

    shown = " ".join(runner.invoke(app, ["forge", "--help"]).stdout.split())
    assert all(name in shown for name in STRATEGIES)  # split_search was left out


def test_same_key_same_secrets_and_the_kdf_is_memory_hard() -> None:
    a = OwnerKey.new("o", nonce="ab" * 16, created="2026-01-01T00:00:00+00:00")
    b = OwnerKey.new("o", nonce="ab" * 16, created="2026-01-01T00:00:00+00:00")
    ma = a.new_mark("uchida", {"x": 1}, "l", (0, 1))
    mb = b.new_mark("uchida", {"x": 1}, "l", (0, 1))
    assert ma.seed("projection") == mb.seed("projection")
    assert ma.seed("projection") != a.new_mark("uchida", {"x": 1}, "l", (1, 1)).seed("projection")
    assert a.kdf == {"name": "scrypt", "n": 1 << 16, "r": 8, "p": 1}  # 64 MiB per derivation
    assert torch.equal(ma.mask(), mb.mask())


def test_new_and_plain_models_through_the_cli(files: Path, digits: DataBundle) -> None:
    """The CLI shows the forgery cost and the rule; a never-marked model is not claimed."""
    r = runner.invoke(
        app, ["verify", str(files / "marked.safetensors"), "--key", str(files / "owner.nnkey")]
    )
    assert r.exit_code == 0 and "claim rule: claimed" in r.stdout and "forgery cost" in r.stdout
    r = runner.invoke(
        app, ["verify", str(files / "plain.safetensors"), "--key", str(files / "owner.nnkey")]
    )
    assert r.exit_code == 1


@pytest.mark.parametrize(
    "scheme, edit",
    [
        # the largest host a key may name (2^28 values): a 2 GiB permutation if derived eagerly
        ("stdm", lambda m: m["data"].update(shape=[16384, 16384])),
        # a million bits over a 2^27-value host: a projection of 10^14 values
        ("uchida", lambda m: m.update(bits="1" * 10**6) or m["data"].update(shape=[1, 1 << 27])),
    ],
)
def test_key_fields_that_would_allocate_gigabytes_are_checked_against_the_suspect_first(  # type: ignore[no-untyped-def]
    scheme: str, edit: Any, digits: DataBundle, plain_cnn, tmp_path: Path
) -> None:
    """A forger's key naming a huge host: nothing is derived before the suspect's tensor is
    found with the key's shape, so verification ends in seconds with not_found, under a 2 GiB
    address-space limit."""
    import resource
    import subprocess
    import sys
    import time

    key = honest_key(scheme, plain_cnn, digits)
    doc = edited(key, lambda c: edit(c["marks"][0]))
    path = write(tmp_path, doc)
    model = tmp_path / "plain.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), model)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    start = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-m", "nnmark", "verify", str(model), "--key", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limited,
    )
    print(f"{scheme}: exit {r.returncode} in {time.monotonic() - start:.1f} s", r.stderr[-300:])
    if scheme == "uchida":  # bits x host values over the projection's bound: a bad key, exit 2
        assert r.returncode == 2 and "2^26" in r.stderr and len(r.stderr.splitlines()) == 1
        return
    assert r.returncode == 1, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["verdict"] == "not_found" and "shape" in out["reason"]


def test_embedding_into_a_stamped_key_in_place_is_refused(
    files: Path, stamp, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A new mark changes the commitment, so the key's signature and timestamp would be dropped
    (red team, session 26: after `embed --key K --key-out K`, the first model K marked was no
    longer claimed). In place is refused before any work, the key untouched; to another file,
    the note says the new key needs signing and stamping again."""
    stamped = tmp_path / "k.nnkey"
    stamp(OwnerKey.load(files / "owner.nnkey")).save(stamped)
    before = stamped.read_bytes()
    args = ["embed", str(files / "plain.safetensors"), "--key", str(stamped), "--epochs", "1"]
    r = runner.invoke(
        app, [*args, "--key-out", str(stamped), "--out", str(tmp_path / "m.safetensors")]
    )
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "a new mark voids them" in lines[0], r.stderr
    assert stamped.read_bytes() == before and not (tmp_path / "m.safetensors").exists()
    r = runner.invoke(
        app,
        [*args, "--key-out", str(tmp_path / "k2.nnkey"), "--out", str(tmp_path / "m.safetensors")],
    )
    said = " ".join(r.stderr.split())  # the console wraps at its width, a long path anywhere
    assert r.exit_code == 0 and "has no timestamp" in said and "stamp it again" in said
    assert OwnerKey.load(tmp_path / "k2.nnkey").timestamp is None


def test_a_key_commits_to_its_marks_architecture_outside_the_secrets(
    uchida_cnn: tuple[torch.nn.Module, OwnerKey],
) -> None:
    """`arch` is committed (the commitment changes with it) but no secret depends on it, so a
    key's marks are the same bit for bit with or without it; a malformed one is refused."""
    _, key = uchida_cnn
    plain = OwnerKey.new("a", nonce="ab" * 16, created="2026-01-01T00:00:00+00:00")
    with_arch = plain.with_arch("cnn", {"in_channels": 1, "num_classes": 10})
    m0 = plain.new_mark("uchida", key.marks[0].config, "conv3", [0, 1] * 8)
    m1 = with_arch.new_mark("uchida", key.marks[0].config, "conv3", [0, 1] * 8)
    assert m0.secret == m1.secret
    k0, k1 = plain.with_mark(m0), with_arch.with_mark(m1)
    assert k0.commitment != k1.commitment
    assert OwnerKey.from_json(k1.to_json()).arch == {"name": "cnn", "kwargs": k1.arch["kwargs"]}
    for bad in (
        {"name": "cnn"},
        {"name": "x\nFOUND", "kwargs": {}},
        {"name": "cnn", "kwargs": {"a": [1]}},
    ):
        doc = k1.to_json()
        doc["committed"]["arch"] = bad
        doc["commitment"] = sha256_hex(doc["committed"])
        with pytest.raises(NNMarkError, match="committed.arch must be"):
            OwnerKey.from_json(doc)


class OwnNet(torch.nn.Module):
    """A user's own class (not from the zoo), BatchNorm's step counter included."""

    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16 * 64, 10)
        if extra:  # a layer the marked model never had
            self.extra = torch.nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(torch.relu(self.conv2(torch.relu(self.bn(self.conv1(x))))).flatten(1))
        return self.extra(out) if hasattr(self, "extra") else out


class OnlyConv(torch.nn.Module):  # fewer tensors: only the marked layer (examples/own_module.py)
    def __init__(self) -> None:
        super().__init__()
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)


def test_a_key_made_for_a_users_own_module_commits_its_tensors(
    digits: DataBundle, tmp_path: Path
) -> None:
    """A model from outside the zoo had no `arch`: its white-box mark read by name from a
    model holding other tensors (the marked layer moved into a deeper copy, noise left under
    its name) said not_found with no reason. The key commits the module's tensor names; a
    suspect holding others is not read by name and says why, one holding fewer reads."""
    torch.manual_seed(0)
    key = OwnerKey.new("own", nonce="ac" * 16, created="2026-01-01T00:00:00+00:00")
    marked, key = written(OwnNet(), digits, key, options={"layer": "conv2"}, bits=64)
    bn = ["bn.bias", "bn.running_mean", "bn.running_var", "bn.weight"]
    convs = ["conv1.bias", "conv1.weight", "conv2.bias", "conv2.weight"]
    assert key.arch == {"name": "module", "tensors": [*bn, *convs, "fc.bias", "fc.weight"]}
    assert OwnerKey.from_json(key.to_json()).arch == key.arch
    assert verify(marked, key).verdict == "found"
    deeper = OwnNet(extra=True)
    deeper.load_state_dict(marked.state_dict(), strict=False)
    v = verify(deeper, key)
    assert v.verdict == "not_found" and "holds tensors the model the key's uchida" in (
        v.reason or ""
    ), v
    assert "extra.bias, extra.weight" in (v.reason or "")
    fewer = OnlyConv()
    fewer.conv2.load_state_dict(marked.conv2.state_dict())
    assert verify(fewer, key).verdict == "found"
    key.save(tmp_path / "own.nnkey")
    r = CliRunner().invoke(app, ["key", "show", str(tmp_path / "own.nnkey")])
    assert r.exit_code == 0 and "arch:       module with 10 tensors" in r.stdout, r.stdout
    r = CliRunner().invoke(app, ["key", "show", str(tmp_path / "own.nnkey"), "--json"])
    assert json.loads(r.stdout)["committed_arch"] == {"name": "module", "tensors": 10}


def test_a_module_architecture_stays_out_of_the_secrets_and_is_checked_strictly() -> None:
    """The tensor names are committed (the commitment changes with them) but no secret depends
    on them; a forger writes keys, so a malformed list is refused with one line."""
    plain = OwnerKey.new("a", nonce="ab" * 16, created="2026-01-01T00:00:00+00:00")
    with_arch = plain.with_module(OwnNet())
    m0 = plain.new_mark("uchida", {}, "conv2", [0, 1] * 8)
    m1 = with_arch.new_mark("uchida", {}, "conv2", [0, 1] * 8)
    assert m1.arch is not None and len(m1.arch["tensors"]) == 10
    assert m0.secret == m1.secret and m0.seed("projection") == m1.seed("projection")
    k0, k1 = plain.with_mark(m0), with_arch.with_mark(m1)
    assert k0.commitment != k1.commitment
    with pytest.raises(ValueError, match="before the key's first mark"):
        k0.with_module(OwnNet())
    for bad in (
        {"name": "module", "tensors": [f"t{i:06d}" for i in range(100_001)]},  # too many
        {"name": "module", "tensors": []},
        {"name": "module", "tensors": ["a", 1]},
        {"name": "module", "tensors": ["b", "a"]},  # unsorted
        {"name": "module", "tensors": ["a", "a"]},  # duplicated
        {"name": "module", "tensors": ["a" * 257]},
        {"name": "module", "tensors": ["a\nFOUND"]},
        {"name": "module", "tensors": "a"},
        {"name": "cnn", "tensors": ["a"]},
        {"name": "module", "tensors": ["a"], "kwargs": {}},
    ):
        doc = k1.to_json()
        doc["committed"]["arch"] = bad
        doc["commitment"] = sha256_hex(doc["committed"])
        with pytest.raises(NNMarkError, match="committed.arch must be") as exc:
            OwnerKey.from_json(doc)
        assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


def test_reading_fewer_marks_never_lowers_a_combined_p(  # type: ignore[no-untyped-def]
    blackbox_marked, digits: DataBundle
) -> None:
    """Review (session 34): which of a key's marks are read is partly the holder's choice made
    after seeing the evidence: `arch` is committed but outside every secret (edited, the key's
    white-box marks no longer match the suspect), and a served model hides the weights. A mark
    not read enters the combination at p = 1, and Fisher's (like Bonferroni's) combination
    grows with each part's p, so the fewer marks read, the larger the p: the choice buys
    nothing. (Combining only the marks read let the holder pick the smaller of two p-values.)"""
    model, key = blackbox_marked["content"]
    key = key.with_mark(Uchida.plan(model, key, UchidaConfig(), bits=64, data=digits))
    arch = {"name": "mlp", "kwargs": {}}
    edited = dataclasses.replace(
        key, arch=arch, marks=tuple(dataclasses.replace(m, arch=arch) for m in key.marks)
    )
    assert all(a.secret == b.secret for a, b in zip(key.marks, edited.marks))
    honest, chosen = verify(model, key, data=digits), verify(model, edited, data=digits)
    assert chosen.parts[1].details.get("not_read") and not honest.parts[1].details.get("not_read")
    assert chosen.parts[0].p_value == honest.parts[0].p_value < 1e-6
    assert honest.parts[1].p_value > 1e-3  # never embedded: the edit could only help
    assert chosen.p_value >= honest.p_value


def test_a_tensor_the_suspects_architecture_never_runs_is_not_read(  # type: ignore[no-untyped-def]
    plain_cnn, digits: DataBundle, tmp_path: Path
) -> None:
    """Review (session 34): a key that commits no architecture (the field is optional) names
    a layer `aux`; the suspect is a never-marked cnn's file plus one tensor `aux.weight`
    built to read the key's bits, which the cnn never runs. Found at p 6e-104 before; now not
    read, with why."""
    from safetensors.torch import load_file, save_file

    key = OwnerKey.new("forger", nonce="a1" * 16)  # no with_arch
    config = UchidaConfig(layer="aux")
    mark = key.new_mark(
        "uchida", Uchida.canonical_config(config), "aux", [1] * 64, data={"shape": [64, 64, 3, 3]}
    )
    key = key.with_mark(mark)
    scheme = Uchida(key.marks[0])
    x = scheme.matrix(64 * 9)
    w = torch.linalg.lstsq(x, (scheme.target.float() * 2 - 1) * 5).solution
    plain = tmp_path / "plain.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), plain)
    from safetensors import safe_open

    with safe_open(str(plain), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(plain)) | {"aux.weight": w.reshape(1, 64, 3, 3).repeat(64, 1, 1, 1)}
    forged = tmp_path / "plus_aux.safetensors"
    save_file(tensors, str(forged), metadata=meta)
    v = verify(str(forged), key)
    assert v.verdict == "not_found" and v.p_value == 1.0, v
    assert "its own architecture (cnn) has not (e.g. aux.weight)" in (v.reason or "")
