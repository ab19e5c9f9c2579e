"""Provenance of owner keys: Ed25519 signatures (who) and RFC 3161 timestamps (when).

Tokens come from `openssl ts -reply` behind a loopback TSA, and the tokens nnmark stores are
cross-checked with `openssl ts -verify`: two implementations, so a shared mistake is unlikely.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asn1crypto import pem
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from typer.testing import CliRunner

from nnmark.cli import app
from nnmark.errors import NNMarkError
from nnmark.keys import OwnerKey, sha256_hex
from nnmark.provenance import (
    check_signature,
    check_timestamp,
    fetch_timestamp,
    load_identity,
    new_identity,
    sign_commitment,
    stamp_imprint,
)
from nnmark.testing.tsa import LoopbackTSA

runner = CliRunner()


def make_key() -> OwnerKey:
    key = OwnerKey.new("ACME")
    config = {"key_type": "random", "lam": 0.05, "layer": "conv2"}
    mark = key.new_mark("uchida", config, "conv2", [0, 1] * 32, data={"shape": [16, 8, 3, 3]})
    return key.with_mark(mark)


def one_line_error(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture(scope="module")
def tsa() -> Iterator[LoopbackTSA]:
    with LoopbackTSA() as t:
        yield t


@pytest.fixture(scope="module")
def other_tsa() -> Iterator[LoopbackTSA]:
    """Another CA under the same subject name: only its signature tells it apart."""
    with LoopbackTSA(key_type="ec") as t:
        yield t


@pytest.fixture()
def key() -> OwnerKey:
    return make_key()


# -- signatures ---------------------------------------------------------------------------------


def test_signed_key_verifies_and_names_its_signer(tmp_path: Path, key: OwnerKey) -> None:
    fp = new_identity(tmp_path / "me.pem")
    assert fp.startswith("ed25519:") and len(fp) == len("ed25519:") + 32
    assert (tmp_path / "me.pem").stat().st_mode & 0o777 == 0o600
    signed = dataclasses.replace(
        key, signature=sign_commitment(key.commitment, load_identity(tmp_path / "me.pem"))
    )
    signed.save(tmp_path / "k.nnkey")
    loaded = OwnerKey.load(tmp_path / "k.nnkey")
    assert loaded.commitment == key.commitment  # the signature is outside the commitment
    assert check_signature(loaded.commitment, loaded.signature) == fp
    assert check_signature(key.commitment, loaded.signature) != new_identity(tmp_path / "b.pem")


def test_edited_owner_with_recomputed_commitment_fails(tmp_path: Path, key: OwnerKey) -> None:
    new_identity(tmp_path / "me.pem")
    doc = sign_commitment(key.commitment, load_identity(tmp_path / "me.pem"))
    dataclasses.replace(key, signature=doc).save(tmp_path / "k.nnkey")
    raw = json.loads((tmp_path / "k.nnkey").read_text())
    raw["committed"]["owner"] = "Mallory"
    raw["commitment"] = sha256_hex(raw["committed"])  # a consistent file, but not what was signed
    (tmp_path / "k.nnkey").write_text(json.dumps(raw))
    forged = OwnerKey.load(tmp_path / "k.nnkey")
    with pytest.raises(NNMarkError, match="does not match the key's commitment"):
        check_signature(forged.commitment, forged.signature)


def test_tampered_or_transplanted_signature_fails(tmp_path: Path, key: OwnerKey) -> None:
    new_identity(tmp_path / "a.pem")
    new_identity(tmp_path / "b.pem")
    doc = sign_commitment(key.commitment, load_identity(tmp_path / "a.pem"))
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[7] ^= 1
    with pytest.raises(NNMarkError, match="does not match"):
        check_signature(key.commitment, {**doc, "signature": base64.b64encode(sig).decode()})
    other = sign_commitment(key.commitment, load_identity(tmp_path / "b.pem"))
    with pytest.raises(NNMarkError, match="does not match"):
        check_signature(key.commitment, {**doc, "public_key": other["public_key"]})
    with pytest.raises(NNMarkError, match="does not match"):
        check_signature(make_key().commitment, doc)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.pop("signature"), "signature"),
        (lambda d: d.update(extra=1), "extra"),
        (lambda d: d.update(algorithm="rsa"), "algorithm"),
        (lambda d: d.update(public_key="not base64!"), "public_key"),
        (lambda d: d.update(public_key=base64.b64encode(b"x" * 31).decode()), "public_key"),
        (lambda d: d.update(public_key=7), "public_key"),
        (lambda d: d.update(signature=base64.b64encode(b"x" * 65).decode()), "signature"),
        (lambda d: d.update(signature=None), "signature"),
    ],
)
def test_malformed_signature_names_the_field(
    tmp_path: Path, key: OwnerKey, edit: Any, field: str
) -> None:
    new_identity(tmp_path / "me.pem")
    doc: dict[str, Any] = sign_commitment(key.commitment, load_identity(tmp_path / "me.pem"))
    edit(doc)
    with pytest.raises(NNMarkError, match=f"field {field}") as info:
        check_signature(key.commitment, doc)
    assert "\n" not in str(info.value)


def test_identity_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(NNMarkError, match="not found"):
        load_identity(tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(NNMarkError, match="not a PEM private key"):
        load_identity(tmp_path / "junk.pem")
    (tmp_path / "bad.pem").write_text(
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(NNMarkError, match="not a PEM private key"):
        load_identity(tmp_path / "bad.pem")
    pem = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.pem").write_bytes(pem)
    with pytest.raises(NNMarkError, match="not Ed25519"):
        load_identity(tmp_path / "rsa.pem")


# -- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_timestamp_verifies_against_its_ca(
    key: OwnerKey, kind: str, tsa: LoopbackTSA, other_tsa: LoopbackTSA
) -> None:
    t = tsa if kind == "rsa" else other_tsa
    doc = fetch_timestamp(key.commitment, t.url)
    assert set(doc) == {"tsa", "token"} and doc["tsa"] == t.url
    p = check_timestamp(key.commitment, doc, [t.ca_cert_pem])
    now = dt.datetime.now(dt.timezone.utc)
    assert p.time.tzinfo is not None and abs((p.time - now).total_seconds()) < 5
    assert p.tsa == "CN=nnmark loopback TSA" and p.serial > 0
    itself = check_timestamp(key.commitment, doc, [t.tsa_cert_pem])  # the TSA cert itself
    assert dataclasses.replace(itself, anchor=p.anchor) == p
    assert itself.anchor != p.anchor  # the record names which certificate it trusted
    ca_der = base64.b64decode(b"".join(t.ca_cert_pem.splitlines()[1:-1]))
    assert check_timestamp(key.commitment, doc, [ca_der]) == p


def test_timestamp_over_another_commitment_is_refused(key: OwnerKey, tsa: LoopbackTSA) -> None:
    doc = fetch_timestamp(key.commitment, tsa.url)
    with pytest.raises(NNMarkError, match="another commitment"):
        check_timestamp(make_key().commitment, doc, [tsa.ca_cert_pem])


def test_token_of_an_untrusted_ca_is_refused(
    key: OwnerKey, tsa: LoopbackTSA, other_tsa: LoopbackTSA
) -> None:
    doc = fetch_timestamp(key.commitment, other_tsa.url)  # its CA is in the token: not trusted
    with pytest.raises(NNMarkError, match="not issued by a trusted certificate"):
        check_timestamp(key.commitment, doc, [tsa.ca_cert_pem])
    assert check_timestamp(key.commitment, doc, [tsa.ca_cert_pem, other_tsa.ca_cert_pem])


@pytest.mark.parametrize(
    ("token", "match"),
    [
        (base64.b64encode(b"garbage").decode(), "malformed"),
        ("", "field token"),
        ("%%%", "field token"),
        (base64.b64encode(bytes(range(256)) * 4).decode(), "malformed"),
    ],
)
def test_garbage_tokens_are_refused_with_one_line(
    key: OwnerKey, tsa: LoopbackTSA, token: str, match: str
) -> None:
    with pytest.raises(NNMarkError, match=match) as info:
        check_timestamp(key.commitment, {"tsa": tsa.url, "token": token}, [tsa.ca_cert_pem])
    assert "\n" not in str(info.value)


def test_mutated_tokens_never_crash_and_never_move_the_time(
    key: OwnerKey, tsa: LoopbackTSA
) -> None:
    """Bit flips anywhere: an NNMarkError, or (in unsigned parts) the same verdict."""
    doc = fetch_timestamp(key.commitment, tsa.url)
    good = check_timestamp(key.commitment, doc, [tsa.ca_cert_pem])
    der = base64.b64decode(doc["token"])
    rng = random.Random(0)
    for _ in range(300):
        b = bytearray(der)
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        mutated = {"tsa": doc["tsa"], "token": base64.b64encode(bytes(b)).decode()}
        try:
            assert check_timestamp(key.commitment, mutated, [tsa.ca_cert_pem]) == good
        except NNMarkError as exc:
            assert "\n" not in str(exc)


def test_openssl_accepts_the_stored_token(tmp_path: Path, key: OwnerKey, tsa: LoopbackTSA) -> None:
    """The imprint convention (commitment = SHA-256 of the committed JSON) is OpenSSL's."""
    doc = fetch_timestamp(key.commitment, tsa.url)
    (tmp_path / "token.der").write_bytes(base64.b64decode(doc["token"]))
    tsa.write_ca(tmp_path / "ca.pem")
    (tmp_path / "tsa.pem").write_bytes(tsa.tsa_cert_pem)

    def verify(digest: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "ts", "-verify", "-digest", digest, "-in", str(tmp_path / "token.der"),
             "-token_in", "-CAfile", str(tmp_path / "ca.pem"), "-untrusted", str(tmp_path / "tsa.pem")],
            capture_output=True, text=True, check=False,
        )  # fmt: skip

    ok = verify(key.commitment)
    assert ok.returncode == 0 and "Verification: OK" in ok.stdout, ok.stderr
    assert verify(make_key().commitment).returncode != 0
    committed = json.dumps(
        key.committed(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    (tmp_path / "committed.json").write_bytes(committed.encode())
    by_data = subprocess.run(
        ["openssl", "ts", "-verify", "-data", str(tmp_path / "committed.json"), "-in",
         str(tmp_path / "token.der"), "-token_in", "-CAfile", str(tmp_path / "ca.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert by_data.returncode == 0, by_data.stderr  # the TSA stamped the committed JSON itself


def test_a_stamp_of_a_signed_key_covers_its_signature(
    tmp_path: Path, key: OwnerKey, tsa: LoopbackTSA
) -> None:
    """Anyone holding a key file can sign it anew; under a stamp made after the signature, the
    old stamp proves who had signed by then, and another signature voids it (red team, session
    26: a stamp covered the commitment only, so a holder could put his name on an earlier
    stamp). OpenSSL checks the token against the documented imprint text."""
    mine = sign_commitment(key.commitment, load_identity_at(tmp_path / "me.pem"))
    theirs = sign_commitment(key.commitment, load_identity_at(tmp_path / "thief.pem"))
    doc = fetch_timestamp(key.commitment, tsa.url, signature=mine)
    p = check_timestamp(key.commitment, doc, [tsa.ca_cert_pem], signature=mine)
    assert p.signed_by == check_signature(key.commitment, mine)
    text = f"nnmark-signed-commitment:{key.commitment}:{mine['public_key']}:{mine['signature']}"
    imprint = hashlib.sha256(text.encode()).hexdigest()
    assert stamp_imprint(key.commitment, mine) == imprint != key.commitment
    token = base64.b64decode(doc["token"])
    assert "Verification: OK" in openssl_verify(tmp_path, token, tsa.ca_cert_pem, imprint)
    assert "refused" in openssl_verify(tmp_path, token, tsa.ca_cert_pem, key.commitment)
    # another signature, or none, under the stamp: refused, not "not timestamped"
    for other in (theirs, None):
        with pytest.raises(NNMarkError, match="another commitment"):
            check_timestamp(key.commitment, doc, [tsa.ca_cert_pem], signature=other)
    # a stamp of the commitment alone still verifies, and covers no signature
    plain = fetch_timestamp(key.commitment, tsa.url)
    assert (
        check_timestamp(key.commitment, plain, [tsa.ca_cert_pem], signature=theirs).signed_by
        is None
    )
    # an invalid signature is refused before any network exchange
    bad = {**mine, "public_key": theirs["public_key"]}
    with pytest.raises(NNMarkError, match="does not match"):
        fetch_timestamp(key.commitment, "http://127.0.0.1:9", signature=bad)


def load_identity_at(path: Path) -> Any:
    new_identity(path)
    return load_identity(path)


SMALL_ORDER = [  # encodings OpenSSL accepts as Ed25519 public keys: each binds no signer
    bytes(32),
    (1).to_bytes(32, "little"),
    (2**255 - 20).to_bytes(32, "little"),
    (2**255 - 19).to_bytes(32, "little"),
    (2**255 - 18).to_bytes(32, "little"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
    (1 | 1 << 255).to_bytes(32, "little"),
]


@pytest.mark.parametrize("raw", SMALL_ORDER, ids=range(len(SMALL_ORDER)))
def test_a_public_key_of_small_order_is_refused(key: OwnerKey, raw: bytes) -> None:
    """Under a small-order public key a signature is made without any private key (R the
    identity, S = 0 verified for the identity point under OpenSSL), so a key committing to one
    could be signed by whoever holds the file (red team, session 27): refused as a signer and
    as a committed signer, whatever the signature."""
    from nnmark.provenance import text_fingerprint

    pk = base64.b64encode(raw).decode()
    forged = {"algorithm": "ed25519", "public_key": pk,
              "signature": base64.b64encode((1).to_bytes(32, "little") + bytes(32)).decode()}  # fmt: skip
    with pytest.raises(NNMarkError, match="not an Ed25519 public key of one signer"):
        check_signature(key.commitment, forged)
    with pytest.raises(NNMarkError, match="not an Ed25519 public key of one signer"):
        text_fingerprint(pk)


def test_base64_fields_must_be_canonical(tmp_path: Path, key: OwnerKey) -> None:
    """One text per value: the stamp imprint hashes the signature's text, so two spellings of
    one public key (stray bits after the last base64 digit) would be two imprints."""
    doc = sign_commitment(key.commitment, load_identity_at(tmp_path / "me.pem"))
    pk = doc["public_key"]  # 32 bytes: 43 digits + "=", the last digit's 2 low bits unused
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    odd = pk[:42] + alphabet[alphabet.index(pk[42]) ^ 1] + "="
    assert base64.b64decode(odd) == base64.b64decode(pk)
    with pytest.raises(NNMarkError, match="canonical base64"):
        check_signature(key.commitment, {**doc, "public_key": odd})


def openssl_verify(tmp_path: Path, token: bytes, ca_pem: bytes, digest: str) -> str:
    """`openssl ts -verify` of a DER token against a CA: its output, "Verification: OK" if
    it accepts (the signer certificate travels in the token)."""
    (tmp_path / "t.der").write_bytes(token)
    (tmp_path / "ca.pem").write_bytes(ca_pem)
    proc = subprocess.run(
        ["openssl", "ts", "-verify", "-digest", digest, "-in", str(tmp_path / "t.der"),
         "-token_in", "-CAfile", str(tmp_path / "ca.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.stdout + proc.stderr if proc.returncode == 0 else f"refused: {proc.stderr}"


def token_doc(token: bytes) -> dict[str, str]:
    return {"tsa": "test", "token": base64.b64encode(token).decode()}


def test_accuracy_is_part_of_the_priority(key: OwnerKey, tsa: LoopbackTSA) -> None:
    doc = fetch_timestamp(key.commitment, tsa.url)
    p = check_timestamp(key.commitment, doc, [tsa.ca_cert_pem])
    assert p.accuracy == dt.timedelta(seconds=1) and p.latest == p.time + p.accuracy
    assert p.accuracy_text == "1 s"

    def fine(tst: Any) -> None:
        tst["accuracy"] = {"seconds": 2, "millis": 500, "micros": 1}

    token = tsa.resign(base64.b64decode(doc["token"]), edit=fine)
    q = check_timestamp(key.commitment, token_doc(token), [tsa.ca_cert_pem])
    assert q.accuracy == dt.timedelta(seconds=2, microseconds=500001)
    assert q.accuracy_text == "2.500001 s"

    def none(tst: Any) -> None:
        del tst["accuracy"]

    token = tsa.resign(base64.b64decode(doc["token"]), edit=none)
    assert check_timestamp(key.commitment, token_doc(token), [tsa.ca_cert_pem]).accuracy == (
        dt.timedelta(0)
    )


@pytest.mark.parametrize(
    ("accuracy", "match"),
    [
        ({"seconds": 1, "millis": 0}, "millis is outside 1..999"),
        ({"millis": 1000}, "millis is outside 1..999"),
        ({"micros": 1000}, "micros is outside 1..999"),
        ({"micros": -5}, "micros is outside 1..999"),
        ({"seconds": -1}, "seconds is outside 0..86400"),
        ({"seconds": 86401}, "seconds is outside 0..86400"),
        ({"seconds": 10**40}, "seconds is outside 0..86400"),
        ({"seconds": 86400, "millis": 1}, "beyond 86400 seconds"),
    ],
)
def test_bad_accuracy_is_refused(
    key: OwnerKey, tsa: LoopbackTSA, accuracy: dict[str, int], match: str
) -> None:
    """RFC 3161: millis and micros in 1..999; seconds bounded, so no overflow, one line."""

    def edit(tst: Any) -> None:
        tst["accuracy"] = accuracy

    doc = fetch_timestamp(key.commitment, tsa.url)
    token = tsa.resign(base64.b64decode(doc["token"]), edit=edit)
    with pytest.raises(NNMarkError, match=match) as info:
        check_timestamp(key.commitment, token_doc(token), [tsa.ca_cert_pem])
    assert "\n" not in str(info.value)


def test_a_stamp_counts_only_if_genTime_plus_accuracy_predates_the_suspect(key: OwnerKey) -> None:
    """genTime is known within its accuracy: a stamp of 'now, +/- 2 min' does not prove the key
    existed before a suspect seen a minute from now."""
    from nnmark.api import provenance

    with LoopbackTSA(key_type="ec", accuracy="secs:120") as t:
        stamped = dataclasses.replace(key, timestamp=fetch_timestamp(key.commitment, t.url))
        p = check_timestamp(key.commitment, stamped.timestamp, [t.ca_cert_pem])
        now = dt.datetime.now(dt.timezone.utc)
        soon = provenance(stamped, [t.ca_cert_pem], now + dt.timedelta(minutes=1))
        assert not soon.timestamped and "proves nothing" in soon.note
        assert "genTime + accuracy 120 s" in soon.note
        later = provenance(stamped, [t.ca_cert_pem], now + dt.timedelta(minutes=4))
        assert later.timestamped and later.time == p.latest.isoformat()
        assert "genTime + accuracy 120 s" in later.sentence()


#: Signer certificates RFC 3161 2.3 (and OpenSSL's timestamp-signing purpose) refuse.
BAD_SIGNERS = {
    "eku not critical": ("extendedKeyUsage = timeStamping", "not critical"),
    "eku with serverAuth": (
        "extendedKeyUsage = critical, timeStamping, serverAuth",
        "timeStamping only",
    ),
    "no eku": ("keyUsage = critical, digitalSignature", "timeStamping only"),
    "keyUsage without signing": (
        "extendedKeyUsage = critical, timeStamping\nkeyUsage = critical, keyEncipherment",
        "keyUsage must be",
    ),
    "keyUsage with more": (
        "extendedKeyUsage = critical, timeStamping\n"
        "keyUsage = critical, digitalSignature, keyEncipherment",
        "keyUsage must be",
    ),
    "unknown critical extension": (
        "extendedKeyUsage = critical, timeStamping\n1.3.6.1.4.1.99999.7 = critical, ASN1:NULL",
        "critical extension 1.3.6.1.4.1.99999.7",
    ),
}
GOOD_SIGNER = (
    "basicConstraints = critical, CA:FALSE\nextendedKeyUsage = critical, timeStamping\n"
    "keyUsage = critical, nonRepudiation"
)


@pytest.mark.parametrize("case", sorted(BAD_SIGNERS))
def test_signer_must_be_a_time_stamping_only_certificate(
    tmp_path: Path, key: OwnerKey, tsa: LoopbackTSA, case: str
) -> None:
    """A certificate of a trusted CA for TLS (or anything besides time stamping) cannot stamp;
    OpenSSL refuses the same tokens, and accepts the same key under an honest certificate."""
    extensions, match = BAD_SIGNERS[case]
    good_cert, bad_cert = tsa.issue_tsa_cert(GOOD_SIGNER), tsa.issue_tsa_cert(extensions)
    # stamped after the certificates were issued: genTime within their validity
    der = base64.b64decode(fetch_timestamp(key.commitment, tsa.url)["token"])
    good = tsa.resign(der, good_cert)
    assert check_timestamp(key.commitment, token_doc(good), [tsa.ca_cert_pem])
    assert "Verification: OK" in openssl_verify(tmp_path, good, tsa.ca_cert_pem, key.commitment)
    bad = tsa.resign(der, bad_cert)
    with pytest.raises(NNMarkError, match=match) as info:
        check_timestamp(key.commitment, token_doc(bad), [tsa.ca_cert_pem])
    assert "\n" not in str(info.value)
    assert "refused" in openssl_verify(tmp_path, bad, tsa.ca_cert_pem, key.commitment)


def test_a_ca_with_an_unknown_critical_extension_is_refused(tmp_path: Path, key: OwnerKey) -> None:
    with LoopbackTSA(key_type="ec", ca_extensions="1.3.6.1.4.1.99999.8 = critical, ASN1:NULL") as t:
        der = base64.b64decode(fetch_timestamp(key.commitment, t.url)["token"])
        with pytest.raises(NNMarkError, match="critical extension 1.3.6.1.4.1.99999.8"):
            check_timestamp(key.commitment, token_doc(der), [t.ca_cert_pem])
        assert "refused" in openssl_verify(tmp_path, der, t.ca_cert_pem, key.commitment)


def test_a_signer_certificate_repeating_an_extension_is_refused(
    tmp_path: Path, key: OwnerKey
) -> None:
    """asn1crypto keeps the last of two extendedKeyUsage extensions, OpenSSL refuses the
    certificate: so does nnmark (openssl x509 cannot write one, so it is signed here)."""
    with LoopbackTSA(key_type="ec") as t:
        der = base64.b64decode(fetch_timestamp(key.commitment, t.url)["token"])
        cert = asn1_x509.Certificate.load(pem.unarmor(t.tsa_cert_pem)[2])
        tbs = cert["tbs_certificate"].copy()
        extensions = list(tbs["extensions"])
        extensions += [e.copy() for e in extensions if e["extn_id"].native == "extended_key_usage"]
        tbs["extensions"] = extensions
        ca_key = serialization.load_pem_private_key((t.dir / "ca.key").read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        signature = ca_key.sign(tbs.dump(force=True), ec.ECDSA(hashes.SHA256()))
        twice = asn1_x509.Certificate(
            {
                "tbs_certificate": tbs,
                "signature_algorithm": cert["signature_algorithm"],
                "signature_value": signature,
            }
        )
        token = t.resign(der, pem.armor("CERTIFICATE", twice.dump()))
        with pytest.raises(NNMarkError, match="repeats an extension"):
            check_timestamp(key.commitment, token_doc(token), [t.ca_cert_pem])
        assert "refused" in openssl_verify(tmp_path, token, t.ca_cert_pem, key.commitment)


def test_tokens_openssl_refuses_for_their_signed_content_are_refused(
    tmp_path: Path, key: OwnerKey, tsa: LoopbackTSA
) -> None:
    """RFC 3161 requires the ESS signing-certificate attribute and TSTInfo version 1, and
    `openssl ts -verify` enforces both: nnmark accepted either (and so more than OpenSSL)."""
    der = base64.b64decode(fetch_timestamp(key.commitment, tsa.url)["token"])

    def version_2(tst: Any) -> None:
        tst["version"] = 2

    for token, match in (
        (tsa.resign(der, ess=False), "no signing-certificate attribute"),
        (tsa.resign(der, edit=version_2), "TSTInfo version is not 1"),
    ):
        with pytest.raises(NNMarkError, match=match):
            check_timestamp(key.commitment, token_doc(token), [tsa.ca_cert_pem])
        assert "refused" in openssl_verify(tmp_path, token, tsa.ca_cert_pem, key.commitment)


ESS_CASES = (
    "v2 with issuerSerial",
    "v2 naming the chain",
    "v1",
    "issuerSerial of another serial",
    "an ID outside the chain",
    "the CA first",
    "v1 naming another cert beside a good v2",
    "empty",
)


def _ess_cases(tsa: LoopbackTSA) -> dict[str, tuple[list[dict[str, Any]], bool]]:
    """Signing-certificate attributes: (the attributes, whether OpenSSL and nnmark accept)."""
    tsa_cert, ca = (
        asn1_x509.Certificate.load(pem.unarmor(c)[2]) for c in (tsa.tsa_cert_pem, tsa.ca_cert_pem)
    )

    def v2(*ids: dict[str, Any]) -> dict[str, Any]:
        return {"type": "signing_certificate_v2", "values": [{"certs": list(ids)}]}

    def by(cert: asn1_x509.Certificate, algo: str = "sha256", serial: int = 0) -> dict[str, Any]:
        cid: dict[str, Any] = {"cert_hash": hashlib.new(algo, cert.dump()).digest()}
        if serial:
            name = asn1_x509.GeneralName(name="directory_name", value=cert.issuer)
            cid["issuer_serial"] = {"issuer": [name], "serial_number": serial}
        return cid

    v1_other = {"type": "signing_certificate", "values": [{"certs": [by(ca, "sha1")]}]}
    return {
        "v2 with issuerSerial": ([v2(by(tsa_cert, serial=tsa_cert.serial_number))], True),
        "v2 naming the chain": ([v2(by(tsa_cert), by(ca))], True),
        "v1": (
            [{"type": "signing_certificate", "values": [{"certs": [by(tsa_cert, "sha1")]}]}],
            True,
        ),
        "issuerSerial of another serial": ([v2(by(tsa_cert, serial=7))], False),
        "an ID outside the chain": ([v2(by(tsa_cert), {"cert_hash": bytes(32)})], False),
        "the CA first": ([v2(by(ca), by(tsa_cert))], False),
        "v1 naming another cert beside a good v2": ([v1_other, v2(by(tsa_cert))], False),
        "empty": ([v2()], False),
    }


@pytest.mark.parametrize("case", ESS_CASES)
def test_signing_certificate_attributes_are_checked_as_openssl_does(
    tmp_path: Path, key: OwnerKey, tsa: LoopbackTSA, case: str
) -> None:
    """Each ESS attribute, every ID in it, and an issuerSerial: nnmark checked only the first ID
    of one attribute, so accepted tokens `openssl ts -verify` refuses."""
    attrs, ok = _ess_cases(tsa)[case]
    der = base64.b64decode(fetch_timestamp(key.commitment, tsa.url)["token"])
    token = tsa.resign(der, ess=attrs)
    verdict = openssl_verify(tmp_path, token, tsa.ca_cert_pem, key.commitment)
    if ok:
        assert check_timestamp(key.commitment, token_doc(token), [tsa.ca_cert_pem])
        assert "Verification: OK" in verdict
    else:
        with pytest.raises(NNMarkError, match="signing-certificate attribute"):
            check_timestamp(key.commitment, token_doc(token), [tsa.ca_cert_pem])
        assert "refused" in verdict


def test_fetch_refuses_bad_answers(key: OwnerKey, tsa: LoopbackTSA) -> None:
    c = key.commitment
    with pytest.raises(NNMarkError, match="cannot reach TSA"):
        fetch_timestamp(c, "http://127.0.0.1:9/", timeout=5)
    with pytest.raises(NNMarkError, match="http:// or https://"):
        fetch_timestamp(c, "file:///etc/passwd")
    with pytest.raises(NNMarkError, match="larger than 100 bytes"):
        fetch_timestamp(c, tsa.url, max_bytes=100)
    fetch_timestamp(c, tsa.url)
    assert tsa.last_reply is not None
    try:
        tsa.fixed_reply = tsa.last_reply  # a replayed answer: right commitment, old nonce
        with pytest.raises(NNMarkError, match="nonce mismatch"):
            fetch_timestamp(c, tsa.url)
        tsa.fixed_reply = b"\x30\x03\x02\x01\x00"
        with pytest.raises(NNMarkError, match="malformed reply"):
            fetch_timestamp(c, tsa.url)
    finally:
        tsa.fixed_reply = None
    tsa.max_request, limit = 10, tsa.max_request
    try:
        with pytest.raises(NNMarkError, match="HTTP 413"):
            fetch_timestamp(c, tsa.url)
    finally:
        tsa.max_request = limit


def test_a_tsa_dripping_its_headers_is_cut_off_at_the_deadline(key: OwnerKey) -> None:
    """urllib reads the status line and headers under a per-read timeout only: a TSA sending
    one header byte every half second held `key timestamp --timeout 2` for ever. Here a byte
    every 0.1 s against a timeout of 0.5 s: only the deadline on the whole exchange ends it
    (its message; a per-read timeout would be another error), and the TSA dripped meanwhile."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    stop = threading.Event()
    dripped = [0]

    def drip() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            while not stop.wait(0.1):
                conn.sendall(b"a")
                dripped[0] += 1

    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        with pytest.raises(NNMarkError, match="did not answer within 0.5 s"):
            fetch_timestamp(
                key.commitment, f"http://127.0.0.1:{srv.getsockname()[1]}/", timeout=0.5
            )
        assert dripped[0] >= 1  # bytes came inside the timeout, and did not restart it
    finally:
        stop.set()
        srv.close()


def test_fetch_reports_a_refusal_with_its_pkistatus(key: OwnerKey) -> None:
    with (
        LoopbackTSA(key_type="ec", reject=True) as t,
        pytest.raises(NNMarkError, match="PKIStatus rejection"),
    ):
        fetch_timestamp(key.commitment, t.url)


# -- the CLI ------------------------------------------------------------------------------------


def run(*args: str | Path) -> Any:
    return runner.invoke(app, ["key", *map(str, args)])


def test_cli_identity_sign_timestamp_show(tmp_path: Path, tsa: LoopbackTSA) -> None:
    make_key().save(tmp_path / "acme.nnkey")
    ca = tsa.write_ca(tmp_path / "ca.pem")
    r = run("identity", "--out", tmp_path / "me.pem")
    assert r.exit_code == 0, r.stderr
    fp = r.stdout.split()[-1]
    assert fp.startswith("ed25519:")
    assert "refusing to overwrite" in one_line_error(run("identity", "--out", tmp_path / "me.pem"))
    r = run("identity", "--out", tmp_path / "me.pem", "--force")
    assert r.exit_code == 0 and r.stdout.split()[-1] != fp  # a new identity
    fp = r.stdout.split()[-1]

    r = run("sign", tmp_path / "acme.nnkey", "--identity", tmp_path / "me.pem")
    assert r.exit_code == 0 and fp in r.stdout, r.stderr
    raw = json.loads((tmp_path / "acme.nnkey").read_text())
    assert set(raw["signature"]) == {"algorithm", "public_key", "signature"}

    r = run("show", tmp_path / "acme.nnkey", "--json")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["signature"] == {"status": "valid", "fingerprint": fp}
    assert shown["timestamp"] == {"status": "none"}

    r = run("timestamp", tmp_path / "acme.nnkey", "--tsa", tsa.url)
    assert r.exit_code == 0 and "not checked" in r.stdout, r.stderr
    r = run("show", tmp_path / "acme.nnkey", "--json")
    assert json.loads(r.stdout)["timestamp"]["status"] == "unchecked"

    # a second stamp or signature never silently replaces the first (red team, session 26: the
    # later stamp turned a found into not_found for a suspect seen between the two)
    kept = (tmp_path / "acme.nnkey").read_bytes()
    again = one_line_error(run("timestamp", tmp_path / "acme.nnkey", "--tsa", tsa.url))
    assert "already holds a timestamp" in again and "--replace" in again
    again = one_line_error(run("sign", tmp_path / "acme.nnkey", "--identity", tmp_path / "me.pem"))
    assert "already holds a signature" in again
    assert (tmp_path / "acme.nnkey").read_bytes() == kept
    r = run("timestamp", tmp_path / "acme.nnkey", "--tsa", tsa.url, "--tsa-cert", ca, "--replace")
    assert r.exit_code == 0 and str(dt.datetime.now(dt.timezone.utc).year) in r.stdout, r.stderr
    assert "+/- 1 s by CN=nnmark loopback TSA" in r.stdout
    r = run("show", tmp_path / "acme.nnkey", "--tsa-cert", ca, "--json")
    assert r.exit_code == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["owner"] == "ACME" and len(shown["commitment"]) == 64
    assert shown["marks"] == [{"scheme": "uchida", "layer": "conv2", "bits": 64}]
    assert shown["signature"]["fingerprint"] == fp
    ts = shown["timestamp"]
    assert (
        ts["status"] == "valid" and ts["tsa"] == "CN=nnmark loopback TSA" and ts["url"] == tsa.url
    )
    assert ts["accuracy_s"] == 1.0 and ts["latest"] > ts["time"]
    # signed, then stamped: the stamp covers the signature, under the imprint `show` prints
    assert ts["covers"] == "commitment and signature"
    assert shown["stamp_imprint"] == stamp_imprint(shown["commitment"], raw["signature"])
    r = run("show", tmp_path / "acme.nnkey", "--tsa-cert", ca)
    assert r.exit_code == 0 and "(valid)" in r.stdout and fp in r.stdout
    assert "+/- 1.0 s by" in r.stdout


def test_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, tsa: LoopbackTSA, other_tsa: LoopbackTSA
) -> None:
    make_key().save(tmp_path / "acme.nnkey")
    new_identity(tmp_path / "me.pem")
    (tmp_path / "junk.pem").write_text("not a key\n")
    before = (tmp_path / "acme.nnkey").read_bytes()
    assert "not found" in one_line_error(
        run("sign", tmp_path / "missing.nnkey", "--identity", tmp_path / "me.pem")
    )
    assert "not a PEM" in one_line_error(
        run("sign", tmp_path / "acme.nnkey", "--identity", tmp_path / "junk.pem")
    )
    assert "cannot reach" in one_line_error(
        run("timestamp", tmp_path / "acme.nnkey", "--tsa", "http://127.0.0.1:9", "--timeout", "5")
    )
    other_ca = other_tsa.write_ca(tmp_path / "other.pem")
    line = one_line_error(
        run("timestamp", tmp_path / "acme.nnkey", "--tsa", tsa.url, "--tsa-cert", other_ca)
    )
    assert "not issued by a trusted certificate" in line
    assert (tmp_path / "acme.nnkey").read_bytes() == before  # a refused token is not stored
    assert "not found" in one_line_error(run("show", tmp_path / "missing.nnkey"))
    assert "not found" in one_line_error(
        run("show", tmp_path / "acme.nnkey", "--tsa-cert", tmp_path / "nope.pem")
    )
    line = one_line_error(run("show", tmp_path / "acme.nnkey", "--tsa-cert", tmp_path / "me.pem"))
    assert "not a PEM or DER X.509 certificate" in line


def test_console_script_exits_2_without_traceback(tmp_path: Path) -> None:
    """The installed `nnmark` process itself, not only the typer app under CliRunner."""
    make_key().save(tmp_path / "acme.nnkey")
    exe = Path(sys.executable).with_name("nnmark")
    assert exe.exists(), "the nnmark console script is installed next to this Python (make setup)"
    args = [
        str(exe),
        "key",
        "timestamp",
        str(tmp_path / "acme.nnkey"),
        "--tsa",
        "http://127.0.0.1:9",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach TSA"), proc.stderr


def test_signing_drops_a_stamp_over_neither_commitment_nor_signature(
    tmp_path: Path, tsa: LoopbackTSA
) -> None:
    """A stamp of another key's commitment was kept by `key sign` and shown as covering the
    commitment (red team, session 27): it is void, so it is removed, and said so."""
    key = make_key()
    stray = fetch_timestamp(make_key().commitment, tsa.url)
    dataclasses.replace(key, timestamp=stray).save(tmp_path / "k.nnkey")
    new_identity(tmp_path / "me.pem")
    r = run("sign", tmp_path / "k.nnkey", "--identity", tmp_path / "me.pem")
    assert r.exit_code == 0 and "over neither this commitment nor its signature" in r.stdout
    assert OwnerKey.load(tmp_path / "k.nnkey").timestamp is None
