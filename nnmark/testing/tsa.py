"""A loopback RFC 3161 time-stamping authority, for tests and the benchmark.

`nnmark.provenance` checks timestamp tokens in pure Python; this TSA makes them with the
`openssl ts` command line tool, an independent implementation, so the tests cross-check the two
rather than one implementation against itself. Each instance makes its own root CA and a TSA
certificate issued by it (extendedKeyUsage critical timeStamping, as RFC 3161 requires) in a
temporary folder, and answers POSTs on 127.0.0.1 at a free port until it is closed.

Example::

    with LoopbackTSA() as tsa:
        doc = fetch_timestamp(key.commitment, tsa.url)
        priority = check_timestamp(key.commitment, doc, [tsa.ca_cert_pem])

Two instances have two unrelated CAs under the *same* subject name by default, so a token of one
refused under the other's CA shows the check verifies the CA's signature, not only its name.

`openssl ts -reply` refuses to sign with a certificate that is not for time stamping, so
`issue_tsa_cert` and `resign` make the tokens it will not (another certificate of the TSA's key,
an edited TSTInfo), for negative tests; `openssl ts -verify` still judges them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from asn1crypto import cms, pem, tsp
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
MAX_REQUEST = 64 << 10

#: `openssl req -newkey` arguments per key type; the CA and the TSA use the same type.
_NEWKEY = {
    "rsa": ["-newkey", "rsa:2048"],
    "ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
}

_REQ_CONF = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
[ v3_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
{ca_extensions}
[ v3_tsa ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""

_TS_CONF = """\
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
other_policies = 1.3.6.1.4.1.99999.2
digests = {digests}
accuracy = {accuracy}
clock_precision_digits = 0
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _openssl(*args: str | Path, cwd: Path) -> bytes:
    proc = subprocess.run(
        [OPENSSL, *map(str, args)], cwd=cwd, capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"openssl {args[0]} failed: {reason[-1] if reason else proc.returncode}")
    return proc.stdout


class LoopbackTSA:
    """An RFC 3161 TSA on 127.0.0.1 backed by `openssl ts -reply` (a context manager).

    key_type: "rsa" (PKCS#1 v1.5 signatures) or "ec" (ECDSA P-256); `openssl ts` cannot sign
    with RSA-PSS keys.
    reject: answer every request with PKIStatus rejection (the TSA accepts only SHA-512 imprints).
    accuracy: the TSTInfo accuracy, as `openssl ts` configures it.
    ca_extensions: more extension lines for the CA certificate (openssl x509v3 config syntax).
    fixed_reply: when set, served for every request instead of a fresh reply (a replay or a
    garbage answer, for negative tests); `last_reply` holds the latest reply openssl made.
    """

    def __init__(
        self,
        *,
        key_type: str = "rsa",
        ca_name: str = "nnmark loopback root CA",
        tsa_name: str = "nnmark loopback TSA",
        days: int = 30,
        reject: bool = False,
        max_request: int = MAX_REQUEST,
        accuracy: str = "secs:1, millisecs:0, microsecs:0",
        ca_extensions: str = "",
    ) -> None:
        if key_type not in _NEWKEY:
            raise ValueError(f"key_type must be one of {sorted(_NEWKEY)}, got {key_type!r}")
        self.key_type, self.ca_name, self.tsa_name = key_type, ca_name, tsa_name
        self.days, self.reject, self.max_request = days, reject, max_request
        self.accuracy, self.ca_extensions = accuracy, ca_extensions
        self.fixed_reply: bytes | None = None
        self.last_reply: bytes | None = None
        self.requests = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # openssl ts -reply reads and rewrites the serial file: one reply at a time
        self._lock = threading.Lock()

    # -- set-up -------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("LoopbackTSA is not started (use it as a context manager)")
        return Path(self._tmp.name)

    def _make_pki(self) -> None:
        d = self.dir
        (d / "req.cnf").write_text(_REQ_CONF.format(ca_extensions=self.ca_extensions))
        newkey = _NEWKEY[self.key_type]
        days = str(self.days)
        _openssl("req", "-config", "req.cnf", "-x509", "-new", *newkey, "-nodes",
                 "-keyout", "ca.key", "-out", "ca.pem", "-days", days,
                 "-subj", f"/CN={self.ca_name}", "-extensions", "v3_ca", cwd=d)  # fmt: skip
        _openssl("req", "-config", "req.cnf", "-new", *newkey, "-nodes",
                 "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", f"/CN={self.tsa_name}",
                 cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-set_serial", "0x" + os.urandom(8).hex(), "-days", days,
                 "-out", "tsa.pem", "-extfile", "req.cnf", "-extensions", "v3_tsa",
                 cwd=d)  # fmt: skip
        (d / "serial").write_text("01\n")
        digests = "sha512" if self.reject else "sha256, sha384, sha512"
        (d / "ts.cnf").write_text(_TS_CONF.format(dir=d, digests=digests, accuracy=self.accuracy))

    def reply(self, query: bytes) -> bytes:
        """The DER TimeStampResp `openssl ts -reply` makes for a DER TimeStampReq."""
        d = self.dir
        with self._lock, tempfile.TemporaryDirectory(dir=d) as work:
            q, r = Path(work) / "query.tsq", Path(work) / "reply.tsr"
            q.write_bytes(query)
            _openssl("ts", "-reply", "-queryfile", q, "-config", "ts.cnf",
                     "-section", "tsa_config1", "-inkey", "tsa.key", "-signer", "tsa.pem",
                     "-chain", "ca.pem", "-out", r, cwd=d)  # fmt: skip
            return r.read_bytes()

    def issue_tsa_cert(self, extensions: str) -> bytes:
        """Another certificate (PEM) for the TSA's key, issued by the CA with these extension
        lines (openssl x509v3 config syntax) instead of an honest TSA's. It is valid from now
        (to the second): stamp after issuing it, or the stamp predates it."""
        d = self.dir
        with self._lock, tempfile.TemporaryDirectory(dir=d) as work:
            ext, out = Path(work) / "ext.cnf", Path(work) / "cert.pem"
            ext.write_text(f"[ ext ]\n{extensions}\n")
            _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                     "-set_serial", "0x" + os.urandom(8).hex(), "-days", str(self.days),
                     "-out", out, "-extfile", ext, "-extensions", "ext", cwd=d)  # fmt: skip
            return out.read_bytes()

    def resign(
        self,
        token: bytes,
        cert_pem: bytes | None = None,
        edit: Callable[[tsp.TSTInfo], None] | None = None,
        ess: bool | list[dict[str, Any]] = True,
    ) -> bytes:
        """`token` (DER) signed again with the TSA's key: by `cert_pem` (from `issue_tsa_cert`;
        the TSA's own by default) and over its TSTInfo as `edit` changes it in place. The signed
        attributes are those `openssl ts -reply` writes (content type, message digest, ESS
        signing-certificate v2; none if `ess` is False, these attributes if it is a list); the
        token carries the certificate and the CA's."""
        signed = cms.ContentInfo.load(token)["content"]
        tst = tsp.TSTInfo.load(bytes(signed["encap_content_info"]["content"]))
        if edit is not None:
            edit(tst)
        content = tst.dump(force=True)
        cert, ca = (_der_cert(b) for b in (cert_pem or self.tsa_cert_pem, self.ca_cert_pem))
        digest = hashlib.sha256(content).digest()
        ess_id = {"certs": [{"cert_hash": hashlib.sha256(cert.dump()).digest()}]}
        attrs = cms.CMSAttributes(
            [
                {"type": "content_type", "values": ["tst_info"]},
                {"type": "message_digest", "values": [digest]},
                *(ess if isinstance(ess, list) else []),
                *([{"type": "signing_certificate_v2", "values": [ess_id]}] if ess is True else []),
            ]
        )
        key = serialization.load_pem_private_key((self.dir / "tsa.key").read_bytes(), None)
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
            algo = "rsassa_pkcs1v15"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            sig, algo = key.sign(attrs.dump(), ec.ECDSA(hashes.SHA256())), "sha256_ecdsa"
        else:
            raise TypeError(f"cannot sign with a {type(key).__name__}")
        sid = {"issuer": cert.issuer, "serial_number": cert.serial_number}
        info = {
            "version": "v1",
            "sid": cms.SignerIdentifier({"issuer_and_serial_number": sid}),
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": algo},
            "signature": sig,
        }
        data = {
            "version": "v3",
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {
                "content_type": "tst_info",
                "content": tsp.TSTInfo.load(content),
            },
            "certificates": [cert, ca],
            "signer_infos": [info],
        }
        return cms.ContentInfo({"content_type": "signed_data", "content": data}).dump()

    def _serve(self) -> None:
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the http.server name
                try:
                    size = int(self.headers.get("Content-Length", ""))
                except ValueError:
                    return self._answer(411, b"Content-Length required", "text/plain")
                if not 0 < size <= tsa.max_request:
                    return self._answer(413, b"request too large", "text/plain")
                query = self.rfile.read(size)
                tsa.requests += 1
                if tsa.fixed_reply is not None:
                    return self._answer(200, tsa.fixed_reply)
                try:
                    body = tsa.reply(query)
                except (RuntimeError, OSError, subprocess.TimeoutExpired):
                    return self._answer(400, b"bad time-stamp request", "text/plain")
                tsa.last_reply = body
                self._answer(200, body)

            def _answer(
                self, code: int, body: bytes, kind: str = "application/timestamp-reply"
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # tests stay quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="loopback-tsa", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> LoopbackTSA:
        self._tmp = tempfile.TemporaryDirectory(prefix="nnmark-tsa-")
        try:
            self._make_pki()
            self._serve()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- what a client needs --------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("LoopbackTSA is not started (use it as a context manager)")
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    @property
    def ca_cert_pem(self) -> bytes:
        """The root CA a verifier trusts (`--tsa-cert`)."""
        return (self.dir / "ca.pem").read_bytes()

    @property
    def tsa_cert_pem(self) -> bytes:
        """The TSA's signing certificate, issued by the CA."""
        return (self.dir / "tsa.pem").read_bytes()

    def write_ca(self, path: str | Path) -> Path:
        """Write the CA certificate (PEM) to `path`, e.g. for `--tsa-cert`; return the path."""
        Path(path).write_bytes(self.ca_cert_pem)
        return Path(path)


def _der_cert(pem_bytes: bytes) -> asn1_x509.Certificate:
    _, _, der = pem.unarmor(pem_bytes)
    return asn1_x509.Certificate.load(der)


#: How long after its stamps a test's suspect counts as first seen: more than the loopback TSA's
#: default accuracy (1 s), well within the clock slack verify allows for a date ahead of now.
SEEN_MARGIN = _dt.timedelta(seconds=30)


def seen_now() -> _dt.datetime:
    """When a test's suspect was first seen: now plus `SEEN_MARGIN`, after every stamp the
    loopback TSA gave its keys (verify counts a timestamp only when its genTime plus accuracy
    predates the suspect's first sighting, and a stamp made just now may be up to 1 s late)."""
    return _dt.datetime.now(_dt.timezone.utc) + SEEN_MARGIN
