"""Who and when, over an owner key's commitment.

A key's commitment fixes what its owner claims (marks, payloads, the evidence they chose), but
not who made the key nor when. In a dispute both matter: two parties can each hold a key that
verifies on the same model (one made after seeing the model, from its weights), and the one who
committed first wins. So a key carries, outside its commitment:

- `signature`: Ed25519 over the commitment. It binds the key to an identity whose fingerprint
  the owner published beforehand; it shows who, never when (anyone can sign anything today).
- `timestamp`: an RFC 3161 token of a time-stamping authority (TSA) both sides trust. The TSA
  signs (imprint, genTime). For an unsigned key the imprint is the commitment itself, since the
  commitment is the SHA-256 of the committed JSON, which is what RFC 3161 calls the hashed
  message. For a signed key it is `stamp_imprint`: the SHA-256 of the UTF-8 text
  `nnmark-signed-commitment:<commitment>:<public_key>:<signature>` (the signature's two fields
  as the key file holds them), so the stamp also proves *who* had signed by then: anyone
  holding a key file can sign it anew, but not under the old stamp (red team, session 26).
  So a third party can check a token without nnmark:
  `openssl ts -verify -digest <imprint> -in token.der -token_in -CAfile ca.pem`.
  nnmark refuses every token that command refuses for any of these reasons (the tests
  cross-check each with OpenSSL): TSTInfo version not 1, imprint, signed attributes (the ESS
  signing-certificate attribute is required and every ID in it checked), signature, and a
  signer certificate unfit for OpenSSL's timestamp-signing purpose (extendedKeyUsage must be
  critical and timeStamping only; keyUsage, if present, digitalSignature and/or nonRepudiation
  only) or with a critical extension, in it or its CA, that nnmark does not process. It is
  stricter elsewhere (one CA level; a well-formed accuracy; no critical extension but
  basicConstraints, keyUsage and extendedKeyUsage) and, on purpose, laxer in two ways: it
  checks the certificates' validity at genTime, where OpenSSL checks it now (`-attime
  <genTime>` matches nnmark), and it accepts a TSA certificate trusted by itself (OpenSSL
  needs `-partial_chain`). The stamp proves the commitment existed by genTime plus accuracy.

Both are checked against the commitment the caller recomputes from the committed fields, and every
field of both is validated: the key file is written by the other side of the dispute.

Example::

    fp = new_identity("me.pem")
    doc = sign_commitment(key.commitment, load_identity("me.pem"))
    assert check_signature(key.commitment, doc) == fp
    stamp = fetch_timestamp(key.commitment, "https://tsa.example", signature=doc)
    assert check_timestamp(key.commitment, stamp, [ca_pem], signature=doc).signed_by == fp
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import hashlib
import http.client
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_bytes

#: Domain separation: an identity's signature over a commitment is never valid for anything else.
SIGNATURE_CONTEXT = b"nnmark-key-commitment:"
#: Domain separation of a signed key's timestamp imprint from any other SHA-256 (`stamp_imprint`).
STAMP_CONTEXT = "nnmark-signed-commitment"
MAX_IDENTITY_BYTES = 64 << 10
MAX_TOKEN_BYTES = 1 << 20
MAX_TSA_TEXT = 2048
#: A TSTInfo accuracy beyond this is refused: no honest TSA's clock is that far off, and an
#: absurd one (seconds of 10^30) would overflow the date arithmetic.
MAX_ACCURACY = _dt.timedelta(days=1)
#: The certificate extensions nnmark interprets: one it does not, marked critical, makes the
#: certificate unusable (RFC 5280 section 4.2; OpenSSL refuses such a certificate too).
_HANDLED_CRITICAL = frozenset({"basic_constraints", "key_usage", "extended_key_usage"})
_SIGNATURE_FIELDS = {"algorithm", "public_key", "signature"}
_TIMESTAMP_FIELDS = {"tsa", "token"}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# every exception asn1crypto and cryptography raise on bytes that are not what they claim
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    OverflowError,
    RecursionError,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
)


@contextmanager
def _malformed(what: str = "timestamp token") -> Iterator[None]:
    """asn1crypto parses lazily, so garbage can surface at any field access: one line for all."""
    try:
        yield
    except _PARSE_ERRORS as exc:
        raise NNMarkError(f"{what} is malformed ({type(exc).__name__})") from None


def _commitment(commitment_hex: str) -> bytes:
    if not isinstance(commitment_hex, str) or not re.fullmatch(r"[0-9a-f]{64}", commitment_hex):
        raise NNMarkError("a key commitment must be 64 lowercase hex digits")
    return bytes.fromhex(commitment_hex)


def _b64(value: Any, what: str, size: int | None = None, limit: int = MAX_TOKEN_BYTES) -> bytes:
    """Strict base64 (no whitespace, no stray characters) of an exact or bounded size."""
    want = f"{size} bytes" if size else f"at most {limit} bytes"
    if not isinstance(value, str) or len(value) > 4 * (limit // 3 + 1):
        raise NNMarkError(f"{what} must be base64 of {want}")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise NNMarkError(f"{what} must be base64 of {want}") from None
    if (size is not None and len(raw) != size) or not raw or len(raw) > limit:
        raise NNMarkError(f"{what} must be base64 of {want}, got {len(raw)} bytes")
    if base64.b64encode(raw).decode("ascii") != value:  # stray padding bits: one text per value
        raise NNMarkError(f"{what} must be canonical base64 (its unused bits set)")
    return raw


def _fields(doc: Any, allowed: set[str], what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise NNMarkError(f"{what} must be an object")
    odd = sorted(set(doc) ^ allowed)
    if odd:
        raise NNMarkError(f"{what}: {'unknown' if odd[0] in doc else 'missing'} field {odd[0]}")
    return doc


# -- signatures ---------------------------------------------------------------------------------


def fingerprint(public_key: ed25519.Ed25519PublicKey) -> str:
    """What an owner publishes: "ed25519:" and 32 hex digits of SHA-256(raw public key).

    128 bits, so making an identity with someone's published fingerprint is a 2^128 search (16
    digits, 2^64, is within reach of a large cluster: red team, session 26)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:32]


_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P


def _strong_point(raw: bytes) -> bool:
    """An Ed25519 public key that binds its signatures to one signer: a canonical encoding
    (y < p; not x = 0 with the sign bit set) of a point on the curve whose order is not small.
    OpenSSL accepts the 8 small-order points, under which a signature is forged without a
    private key, and one signature verifies under several of them (red team, session 27)."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return False
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P  # RFC 8032 5.1.3
    if v * x * x % _P != u:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
        if v * x * x % _P != u:
            return False  # not on the curve
    if x == 0 and sign:
        return False  # -0: the sign bit of a point whose x is 0 is not canonical
    # the sign bit picks x or -x, which have the same order: it does not matter below

    def add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        t = _D * a[0] * b[0] * a[1] * b[1] % _P
        x3 = (a[0] * b[1] + a[1] * b[0]) * pow(1 + t, _P - 2, _P) % _P
        y3 = (a[1] * b[1] + a[0] * b[0]) * pow(1 - t, _P - 2, _P) % _P
        return x3, y3

    point = (x, y)
    for _ in range(3):  # [8]A
        point = add(point, point)
    return point != (0, 1)


def public_key_text(private_key: ed25519.Ed25519PrivateKey) -> str:
    """An identity's public key as a key commits to it (OwnerKey.with_signer): base64 of its 32
    raw bytes, the text of a signature's `public_key`."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode("ascii")


def text_fingerprint(public_key: str) -> str:
    """The fingerprint of a public key given as `public_key_text` writes it."""
    return fingerprint(_public_key(_b64(public_key, "public key", 32), "public key"))


def _public_key(raw: bytes, what: str) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key that binds one signer (`_strong_point`), or a one-line error."""
    try:
        if not _strong_point(raw):
            raise ValueError
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise NNMarkError(
            f"{what} is not an Ed25519 public key of one signer (off the curve, not canonical, "
            "or of small order)"
        ) from None


def new_identity(path: str | Path) -> str:
    """Write a fresh Ed25519 private key (PEM, PKCS#8, unencrypted) and return its fingerprint.

    Written private (0600 from the temp file on): never readable by others, not for a moment.
    """
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(path, pem, private=True)
    return fingerprint(key.public_key())


def load_identity(path: str | Path) -> ed25519.Ed25519PrivateKey:
    """The Ed25519 private key written by `new_identity` (or `openssl genpkey -algorithm ed25519`)."""
    p = Path(path)
    if not p.is_file():
        raise NNMarkError(f"identity file not found: {p}")
    if p.stat().st_size > MAX_IDENTITY_BYTES:
        raise NNMarkError(f"{p}: too large for an identity file")
    data = p.read_bytes()
    if b"-----BEGIN" not in data:
        raise NNMarkError(f"{p}: not a PEM private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise NNMarkError(f"{p}: encrypted identity files are not supported") from None
    except (ValueError, UnsupportedAlgorithm):
        raise NNMarkError(f"{p}: not a PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise NNMarkError(
            f"{p}: a {type(key).__name__.removesuffix('PrivateKey')} key, not Ed25519"
        )
    return key


def sign_commitment(commitment_hex: str, private_key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    """The key file's "signature" object: the public key travels with it, the fingerprint names it."""
    message = SIGNATURE_CONTEXT + _commitment(commitment_hex).hex().encode()
    return {
        "algorithm": "ed25519",
        "public_key": public_key_text(private_key),
        "signature": base64.b64encode(private_key.sign(message)).decode("ascii"),
    }


def check_signature(commitment_hex: str, doc: Any, committed: str | None = None) -> str:
    """The signer's fingerprint if `doc` signs this commitment, else NNMarkError; with
    `committed` (the public key a key commits to, OwnerKey.signer), only by that key.

    A valid signature only says the holder of that identity signed: compare the fingerprint with
    the one the owner published.
    """
    message = SIGNATURE_CONTEXT + _commitment(commitment_hex).hex().encode()
    doc = _fields(doc, _SIGNATURE_FIELDS, "signature")
    if doc["algorithm"] != "ed25519":
        raise NNMarkError(f"signature: field algorithm must be 'ed25519', got {doc['algorithm']!r}")
    raw = _b64(doc["public_key"], "signature: field public_key", 32)
    sig = _b64(doc["signature"], "signature: field signature", 64)
    public_key = _public_key(raw, "signature: field public_key")
    try:
        public_key.verify(sig, message)
    except InvalidSignature:
        raise NNMarkError("signature does not match the key's commitment") from None
    if committed is not None and doc["public_key"] != committed:  # the whole key, not a digest
        raise NNMarkError(
            f"the key's signature is by {fingerprint(public_key)}, not by the signer it commits "
            f"to ({text_fingerprint(committed)})"
        )
    return fingerprint(public_key)


def stamp_imprint(commitment_hex: str, signature: Any = None) -> str:
    """What a timestamp of the key stamps (hex SHA-256): the commitment of an unsigned key; for
    a signed key, the SHA-256 of `nnmark-signed-commitment:<commitment>:<public_key>:<signature>`
    so the stamp covers who signed as well (the signature is checked first: NNMarkError)."""
    if signature is None:
        return _commitment(commitment_hex).hex()
    check_signature(commitment_hex, signature)
    text = f"{STAMP_CONTEXT}:{commitment_hex}:{signature['public_key']}:{signature['signature']}"
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# -- timestamps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Priority:
    """What a verified timestamp proves: the commitment existed at `time` (UTC) give or take
    `accuracy`, so surely by `latest`, per `tsa` (the signing certificate's subject), under the
    TSA's serial number `serial`."""

    time: _dt.datetime
    tsa: str
    serial: int
    #: The TSTInfo's accuracy: `time` is only known within plus or minus this much.
    accuracy: _dt.timedelta = _dt.timedelta(0)
    #: SHA-256 of the trusted certificate that vouched for the signer (its CA, or itself):
    #: a subject is whatever a certificate's maker wrote, so the record names the anchor.
    anchor: str = ""
    #: The fingerprint of the key's signer when the stamp covers the signature too
    #: (`stamp_imprint`): that identity had signed by `latest`. None: the commitment only.
    signed_by: str | None = None

    @property
    def latest(self) -> _dt.datetime:
        """When the stamp proves the commitment existed by: its time plus its accuracy (a TSA
        whose clock ran up to `accuracy` behind stamped up to that much later than it says)."""
        return self.time + self.accuracy

    @property
    def accuracy_text(self) -> str:
        """The accuracy for display, e.g. "1 s" or "0.5 s" (exact to the microsecond)."""
        return f"{self.accuracy.total_seconds():.6f}".rstrip("0").rstrip(".") + " s"


@dataclass(frozen=True)
class _Cert:
    der: bytes
    asn1: asn1_x509.Certificate
    crypto: x509.Certificate

    @classmethod
    def load(cls, der: bytes) -> _Cert:
        crypto = x509.load_der_x509_certificate(der)
        return cls(der, asn1_x509.Certificate.load(der, strict=True), crypto)

    @property
    def subject(self) -> str:
        return self.crypto.subject.rfc4514_string()

    def covers(self, when: _dt.datetime) -> bool:
        validity = self.asn1["tbs_certificate"]["validity"]
        return bool(validity["not_before"].native <= when <= validity["not_after"].native)


def timestamp_request(imprint_hex: str, nonce: int) -> bytes:
    """A DER TimeStampReq (v1) for the imprint (`stamp_imprint`): SHA-256, a nonce, certReq
    true."""
    if not isinstance(nonce, int) or not 0 < nonce < 1 << 160:
        raise NNMarkError("a timestamp nonce must be a positive integer below 2^160")
    return tsp.TimeStampReq(
        {
            "version": "v1",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": _commitment(imprint_hex),
            },
            "nonce": nonce,
            "cert_req": True,
        }
    ).dump()


class _TimeStampResp(core.Sequence):
    """RFC 3161's TimeStampResp: asn1crypto 1.5 requires the token, which a refusal omits."""

    _fields = [
        ("status", tsp.PKIStatusInfo),
        ("time_stamp_token", cms.ContentInfo, {"optional": True}),
    ]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A TSA answers where it is asked; a redirect could lead a POST anywhere (even ftp://)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _post(url: str, body: bytes, timeout: float, max_bytes: int) -> bytes:
    """POST `body`; the reply within `timeout` seconds in all. The exchange runs in a daemon
    thread joined with that deadline: urllib reads the status line and headers under a
    per-read timeout only, so a TSA dripping one header byte a second never timed out."""
    done: dict[str, Any] = {}

    def exchange() -> None:
        try:
            done["reply"] = _exchange(url, body, timeout, max_bytes)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            done["error"] = exc

    worker = threading.Thread(target=exchange, daemon=True, name="nnmark-tsa")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():  # abandoned: the daemon thread ends when the server lets go
        raise NNMarkError(f"TSA {url} did not answer within {timeout:g} s")
    if "error" in done:
        raise done["error"]
    reply: bytes = done["reply"]
    return reply


def _exchange(url: str, body: bytes, timeout: float, max_bytes: int) -> bytes:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname  # 'http://[::1' raised ValueError here (review, session 34)
    except ValueError:
        raise NNMarkError(f"not a URL: {url!r}") from None
    if parts.scheme not in ("http", "https") or not host:
        raise NNMarkError(f"a TSA URL must be http:// or https://, got {url!r}")
    handlers: list[Any] = [_NoRedirect()]
    if parts.hostname in ("127.0.0.1", "localhost", "::1"):
        handlers.append(urllib.request.ProxyHandler({}))  # never send loopback to a proxy
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/timestamp-query")
    request.add_header("Accept", "application/timestamp-reply")
    deadline = time.monotonic() + timeout
    try:
        with urllib.request.build_opener(*handlers).open(request, timeout=timeout) as resp:
            if int(resp.headers.get("Content-Length") or 0) > max_bytes:
                raise NNMarkError(f"TSA {url}: reply larger than {max_bytes} bytes")
            chunks, size = [], 0
            while chunk := resp.read1(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise NNMarkError(f"TSA {url}: reply larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise NNMarkError(f"TSA {url} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise NNMarkError(f"TSA {url} did not answer within {timeout:g} s") from None
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise NNMarkError(f"cannot reach TSA {url}: {reason}") from None
    except TimeoutError:
        raise NNMarkError(f"TSA {url} did not answer within {timeout:g} s") from None
    except (http.client.HTTPException, OSError, ValueError) as exc:
        raise NNMarkError(f"TSA {url}: broken HTTP exchange ({type(exc).__name__})") from None


def fetch_timestamp(
    commitment_hex: str,
    url: str,
    timeout: float = 30.0,
    max_bytes: int = 1 << 20,
    signature: Any = None,
) -> dict[str, str]:
    """Ask the TSA at `url` to timestamp the commitment, and the key's `signature` with it if it
    has one (`stamp_imprint`); the key file's "timestamp" object.

    The reply's nonce and imprint are checked (a replayed or misdirected answer is refused); its
    signature is not: that needs the TSA's certificate (`check_timestamp`).
    """
    imprint_hex = stamp_imprint(commitment_hex, signature)
    imprint = bytes.fromhex(imprint_hex)
    nonce = secrets.randbits(64) | 1
    body = _post(url, timestamp_request(imprint_hex, nonce), timeout, max_bytes)
    try:
        resp = _TimeStampResp.load(body, strict=True)
        info = resp["status"]
        status = info["status"].native
        if status not in ("granted", "granted_with_mods"):
            why = [" ".join(str(t) for t in info["status_string"].native or ())]
            why.append(", ".join(sorted(info["fail_info"].native or ())))
            detail = "; ".join(" ".join(w.split()) for w in why if w)
            raise NNMarkError(
                f"TSA {url} refused: PKIStatus {status}" + (f" ({detail})" if detail else "")
            )
        token = resp["time_stamp_token"]
        if isinstance(token, core.Void):
            raise ValueError("no token")
        der = token.dump()
    except _PARSE_ERRORS:
        raise NNMarkError(f"TSA {url} sent a malformed reply") from None
    _, tst, _ = _parse_token(der)
    with _malformed():
        if tst["nonce"].native != nonce:
            raise NNMarkError(f"TSA {url} answered another request (nonce mismatch)")
        _check_imprint(tst, imprint)
    return {"tsa": url, "token": base64.b64encode(der).decode("ascii")}


def _parse_token(der: bytes) -> tuple[cms.SignedData, tsp.TSTInfo, bytes]:
    """SignedData, TSTInfo and the exact TSTInfo bytes the signature covers."""
    with _malformed():
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise NNMarkError("timestamp token is not CMS SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].native != "tst_info":
            raise NNMarkError("timestamp token does not hold a TSTInfo")
        if isinstance(encap["content"], core.Void):
            raise NNMarkError("timestamp token has no content")
        content = bytes(encap["content"])
        return signed, tsp.TSTInfo.load(content, strict=True), content


def _check_imprint(tst: tsp.TSTInfo, *imprints: bytes) -> bytes:
    """The one of `imprints` the token stamps."""
    mi = tst["message_imprint"]
    if mi["hash_algorithm"]["algorithm"].native != "sha256":
        raise NNMarkError("timestamp token's imprint is not SHA-256")
    stamped = mi["hashed_message"].native
    if stamped not in imprints:
        what = "commitment" if len(imprints) == 1 else "commitment and signature"
        raise NNMarkError(f"timestamp token is over another {what}")
    return bytes(stamped)


def _load_trusted(trusted_certs: Sequence[bytes]) -> list[_Cert]:
    out: list[_Cert] = []
    for i, blob in enumerate(trusted_certs):
        try:
            if not isinstance(blob, bytes):
                raise TypeError
            if b"-----BEGIN" in blob:
                loaded = x509.load_pem_x509_certificates(blob)
            else:
                loaded = [x509.load_der_x509_certificate(blob)]
            out += [_Cert.load(c.public_bytes(serialization.Encoding.DER)) for c in loaded]
        except _PARSE_ERRORS:
            raise NNMarkError(f"trusted certificate #{i + 1} is not an X.509 certificate") from None
    if not out:
        raise NNMarkError("no trusted TSA certificate given: a timestamp cannot be checked")
    return out


def trusted_subjects(trusted_certs: Sequence[bytes]) -> list[str]:
    """The subjects of the certificates a verifier is about to trust (NNMarkError if one is not
    an X.509 certificate): lets a caller refuse a wrong file before any network or key work."""
    return [c.subject for c in _load_trusted(trusted_certs)]


def _attributes(signer: cms.SignerInfo) -> dict[str, Any]:
    """The signed attributes by type, each with exactly one value (CMS allows no repeats)."""
    attrs = signer["signed_attrs"]
    if isinstance(attrs, core.Void) or not len(attrs):
        raise NNMarkError("timestamp token has no signed attributes")
    out: dict[str, Any] = {}
    for attr in attrs:
        name = attr["type"].native
        if name in out or len(attr["values"]) != 1:
            raise NNMarkError(f"timestamp token: signed attribute {name} is repeated")
        out[name] = attr["values"][0]
    return out


def _find_signer(sid: cms.SignerIdentifier, certs: list[_Cert]) -> _Cert:
    for cert in certs:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            if (
                cert.asn1.issuer == ias["issuer"]
                and cert.asn1.serial_number == ias["serial_number"].native
            ):
                return cert
        elif cert.asn1.key_identifier == sid.chosen.native:
            return cert
    raise NNMarkError("timestamp signer's certificate is neither in the token nor trusted")


def _verify_signature(
    cert: _Cert, algo: algos.SignedDigestAlgorithm, sig: bytes, data: bytes, digest: str
) -> None:
    """The CMS signature over `data` with the certificate's key (RSA PKCS#1 v1.5 or PSS, ECDSA,
    Ed25519); the hash is the signer info's digest algorithm, as CMS prescribes."""
    name = algo.signature_algo
    key = cert.crypto.public_key()
    try:
        named = algo.hash_algo
    except ValueError:  # rsaEncryption, rsassa_pss, ed25519: the OID names no hash
        named = digest
    if named != digest:
        raise NNMarkError(f"timestamp token signs with {named} but digests with {digest}")
    try:
        if isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pkcs1v15":
            key.verify(sig, data, padding.PKCS1v15(), _HASHES[digest]())
        elif isinstance(key, rsa.RSAPublicKey) and name == "rsassa_pss":
            params = algo["parameters"]
            mgf = params["mask_gen_algorithm"]
            if mgf["algorithm"].native != "mgf1":
                raise NNMarkError("timestamp token: RSA-PSS with a mask other than MGF1")
            mgf_hash = _HASHES[mgf["parameters"]["algorithm"].native]()
            pss = padding.PSS(padding.MGF1(mgf_hash), params["salt_length"].native)
            key.verify(sig, data, pss, _HASHES[params["hash_algorithm"]["algorithm"].native]())
        elif isinstance(key, ec.EllipticCurvePublicKey) and name == "ecdsa":
            key.verify(sig, data, ec.ECDSA(_HASHES[digest]()))
        elif isinstance(key, ed25519.Ed25519PublicKey) and name == "ed25519":
            key.verify(sig, data)
        else:
            kind = type(key).__name__.removesuffix("PublicKey").lstrip("_")
            raise NNMarkError(f"timestamp token: {name} signatures with a {kind} key unsupported")
    except KeyError:
        raise NNMarkError("timestamp token: RSA-PSS with a hash other than SHA-2") from None
    except InvalidSignature:
        raise NNMarkError("timestamp token's signature does not verify") from None


def _issuer(signer: _Cert, trusted: list[_Cert]) -> _Cert | None:
    """The trusted certificate that vouches for the signer: the signer itself, or a trusted CA
    that issued and signed it. One level only: a TSA certificate issued by its root CA."""
    if any(t.der == signer.der for t in trusted):
        return None
    for ca in trusted:
        try:
            signer.crypto.verify_directly_issued_by(ca.crypto)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            continue
        constraints = ca.asn1.basic_constraints_value
        usage = ca.asn1.key_usage_value
        if constraints is None or not constraints["ca"].native:
            raise NNMarkError(f"trusted certificate '{ca.subject}' is not a CA certificate")
        if usage is not None and "key_cert_sign" not in usage.native:
            raise NNMarkError(f"trusted certificate '{ca.subject}' may not sign certificates")
        return ca
    raise NNMarkError(f"timestamp signer '{signer.subject}' is not issued by a trusted certificate")


def _check_critical(cert: _Cert) -> None:
    """RFC 5280 4.2: a certificate with a critical extension its user does not process must be
    refused; the extension may restrict the certificate in a way nnmark would ignore."""
    names = [e["extn_id"].dotted for e in cert.asn1["tbs_certificate"]["extensions"]]
    if len(set(names)) != len(names):
        raise NNMarkError(f"certificate '{cert.subject}' repeats an extension")
    unknown = sorted(cert.asn1.critical_extensions - _HANDLED_CRITICAL)
    if unknown:
        raise NNMarkError(f"certificate '{cert.subject}' has a critical extension {unknown[0]}")


def _check_tsa_cert(cert: _Cert) -> None:
    """RFC 3161 2.3, as OpenSSL's timestamp-signing purpose checks it: extendedKeyUsage present,
    critical and timeStamping only; keyUsage, if present, digitalSignature and/or
    nonRepudiation only. Else a TLS or code-signing certificate of a trusted CA could stamp."""
    _check_critical(cert)
    eku = cert.asn1.extended_key_usage_value
    if eku is None or eku.native != ["time_stamping"]:
        raise NNMarkError(
            f"timestamp signer '{cert.subject}' is not a time-stamping certificate "
            "(its extendedKeyUsage must be timeStamping only)"
        )
    if "extended_key_usage" not in cert.asn1.critical_extensions:
        raise NNMarkError(
            f"timestamp signer '{cert.subject}': its extendedKeyUsage is not critical (RFC 3161)"
        )
    usage = cert.asn1.key_usage_value
    allowed = {"digital_signature", "non_repudiation"}
    if usage is not None and not (usage.native & allowed and usage.native <= allowed):
        raise NNMarkError(
            f"timestamp signer '{cert.subject}': its keyUsage must be digitalSignature and/or "
            "nonRepudiation only"
        )


def _accuracy(tst: tsp.TSTInfo) -> _dt.timedelta:
    """The TSTInfo's accuracy (zero if absent); RFC 3161 wants millis and micros in 1..999."""
    acc = tst["accuracy"]
    if isinstance(acc, core.Void):
        return _dt.timedelta(0)
    seconds, millis, micros = (acc[f].native for f in ("seconds", "millis", "micros"))
    for name, value in (("millis", millis), ("micros", micros)):
        if value is not None and not 1 <= value <= 999:
            raise NNMarkError(f"timestamp token: accuracy {name} is outside 1..999")
    limit = MAX_ACCURACY.total_seconds()
    if seconds is not None and not 0 <= seconds <= limit:
        raise NNMarkError(f"timestamp token: accuracy seconds is outside 0..{limit:g}")
    total = _dt.timedelta(seconds=seconds or 0, milliseconds=millis or 0, microseconds=micros or 0)
    if total > MAX_ACCURACY:
        raise NNMarkError(f"timestamp token: accuracy is beyond {limit:g} seconds")
    return total


def _ess_names(cid: Any, cert: _Cert, algo: str) -> bool:
    """Whether an ESSCertID(v2) names `cert`: its hash, and its issuerSerial where given."""
    if cid["cert_hash"].native != hashlib.new(algo, cert.der).digest():
        return False
    serial = cid["issuer_serial"]
    if isinstance(serial, core.Void):
        return True
    names = serial["issuer"]
    return bool(
        len(names) == 1
        and names[0].name == "directory_name"
        and names[0].chosen == cert.asn1.issuer
        and serial["serial_number"].native == cert.asn1.serial_number
    )


def _check_ess(attrs: dict[str, Any], signer: _Cert, chain: list[_Cert]) -> None:
    """RFC 5035/2634: the signing-certificate attribute names the certificate that signed, so a
    token cannot be re-attributed to another certificate of the same key (RFC 3161 requires it).
    As OpenSSL: each such attribute is checked, its first ID names the signer, every other one
    a certificate of `chain`, and an issuerSerial must agree."""
    present = [name for name in ("signing_certificate", "signing_certificate_v2") if name in attrs]
    if not present:  # OpenSSL's ts -verify refuses a token without it too
        raise NNMarkError("timestamp token has no signing-certificate attribute (RFC 3161 2.4.1)")
    for name in present:
        ids = list(attrs[name]["certs"])
        if not ids:
            raise NNMarkError("timestamp token's signing-certificate attribute is empty")
        for i, cid in enumerate(ids):
            algo = "sha1"
            if name == "signing_certificate_v2":
                algo = cid["hash_algorithm"]["algorithm"].native
                if algo not in _HASHES:
                    raise NNMarkError(f"timestamp token: signing certificate hashed with {algo}")
            if not any(_ess_names(cid, c, algo) for c in ([signer] if i == 0 else chain)):
                raise NNMarkError(
                    "timestamp token's signing-certificate attribute names another cert"
                )


def check_timestamp(
    commitment_hex: str, doc: Any, trusted_certs: Sequence[bytes], signature: Any = None
) -> Priority:
    """When the commitment existed, per a TSA that `trusted_certs` (PEM or DER) vouch for, and
    whether the key's `signature` (checked first) had been made by then.

    Checks that the token is CMS SignedData over a TSTInfo whose SHA-256 imprint is the
    commitment, or the commitment with the signature (`stamp_imprint`, then
    `Priority.signed_by` names the signer); that its signed attributes hold the TSTInfo's digest and content type; that their
    signature verifies with the signer certificate; that this certificate is trusted or issued by
    a trusted CA, is for time stamping only (RFC 3161 2.3), and was valid at genTime; that
    neither certificate has a critical extension nnmark does not process; that the accuracy is
    well formed (the stamp proves existence only by `Priority.latest`). Any failure: NNMarkError.
    """
    imprint = _commitment(commitment_hex)
    signed = None if signature is None else bytes.fromhex(stamp_imprint(commitment_hex, signature))
    doc = _fields(doc, _TIMESTAMP_FIELDS, "timestamp")
    tsa = doc["tsa"]
    if not isinstance(tsa, str) or len(tsa) > MAX_TSA_TEXT or any(ord(c) < 32 for c in tsa):
        raise NNMarkError(f"timestamp: field tsa must be text of at most {MAX_TSA_TEXT}")
    der = _b64(doc["token"], "timestamp: field token")
    trusted = _load_trusted(trusted_certs)
    token, tst, content = _parse_token(der)
    with _malformed():
        if tst["version"].native != "v1":
            raise NNMarkError("timestamp token: TSTInfo version is not 1")
        covers_signature = _check_imprint(tst, imprint, *([signed] if signed else [])) == signed
        infos = token["signer_infos"]
        if len(infos) != 1:
            raise NNMarkError(f"timestamp token has {len(infos)} signers (RFC 3161 wants one)")
        signer_info = infos[0]
        digest = signer_info["digest_algorithm"]["algorithm"].native
        if digest not in _HASHES:
            raise NNMarkError(f"timestamp token digests with {digest} (sha256/384/512 only)")
        attrs = _attributes(signer_info)
        if attrs.get("content_type") is None or attrs["content_type"].native != "tst_info":
            raise NNMarkError("timestamp token: content-type attribute is not id-ct-TSTInfo")
        if "message_digest" not in attrs:
            raise NNMarkError("timestamp token has no message-digest attribute")
        if attrs["message_digest"].native != hashlib.new(digest, content).digest():
            raise NNMarkError("timestamp token: message digest does not match its TSTInfo")
        certs = token["certificates"]
        choices = [] if isinstance(certs, core.Void) else list(certs)
        embedded = [_Cert.load(c.chosen.dump()) for c in choices if c.name == "certificate"]
        cert = _find_signer(signer_info["sid"], embedded + trusted)
        # CMS signs the DER of the attributes as a SET OF (tag 0x31), not as the [0] in the token
        signed_attrs = b"\x31" + signer_info["signed_attrs"].dump()[1:]
        _verify_signature(
            cert,
            signer_info["signature_algorithm"],
            signer_info["signature"].native,
            signed_attrs,
            digest,
        )
        ca = _issuer(cert, trusted)
        _check_ess(attrs, cert, [cert] if ca is None else [cert, ca])
        _check_tsa_cert(cert)
        if ca is not None:
            _check_critical(ca)
        accuracy = _accuracy(tst)
        when = tst["gen_time"].native.astimezone(_dt.timezone.utc)
        for c in (cert,) if ca is None else (cert, ca):
            if not c.covers(when):
                raise NNMarkError(
                    f"timestamp time {when.isoformat()} is outside the validity of '{c.subject}'"
                )
        serial = int(tst["serial_number"].native)
        anchor = cert if ca is None else ca
        return Priority(
            time=when,
            tsa=cert.subject,
            serial=serial,
            accuracy=accuracy,
            anchor=hashlib.sha256(anchor.der).hexdigest(),
            signed_by=check_signature(commitment_hex, signature) if covers_signature else None,
        )


def claimed_imprint(doc: Any) -> str | None:
    """The imprint (hex) a "timestamp" object's token *claims* to stamp, unchecked (None if
    unreadable): to tell what a stamp covers before its TSA is trusted, never for a verdict."""
    try:
        doc = _fields(doc, _TIMESTAMP_FIELDS, "timestamp")
        _, tst, _ = _parse_token(_b64(doc["token"], "timestamp: field token"))
        return bytes(tst["message_imprint"]["hashed_message"].native).hex()
    except (NNMarkError, *_PARSE_ERRORS):
        return None


def timestamp_claim(doc: Any) -> tuple[str, _dt.datetime] | None:
    """The TSA and time a "timestamp" object *claims*, unchecked (None if unreadable): for
    display next to "not checked", never for a verdict."""
    try:
        doc = _fields(doc, _TIMESTAMP_FIELDS, "timestamp")
        _, tst, _ = _parse_token(_b64(doc["token"], "timestamp: field token"))
        return str(doc["tsa"]), tst["gen_time"].native.astimezone(_dt.timezone.utc)
    except (NNMarkError, *_PARSE_ERRORS):
        return None
