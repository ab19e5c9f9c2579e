"""`nnmark key`: who made an owner key and when (nnmark.provenance), and what it holds.

A signature names who committed to a key; a timestamp from a trusted TSA proves it existed by a
time, and, on a signed key, that the signature had been made by then. Both sit outside the
commitment, so adding them rewrites the key file without changing what it commits to. Sign
first, then timestamp: a stamp made before the signature does not cover it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from nnmark.cli.common import app, check_output, command, out, read_certs
from nnmark.errors import NNMarkError, one_line
from nnmark.keys import OwnerKey

key_app = typer.Typer(
    name="key",
    help="Sign an owner key, timestamp it with an RFC 3161 TSA, show who and when.",
    no_args_is_help=True,
)
app.add_typer(key_app, name="key")

_command = functools.partial(command, target=key_app)


def _read_cert(path: Path) -> bytes:
    """A --tsa-cert file, checked to hold certificates before any network or key work."""
    return read_certs([path])[0]


KeyArg = Annotated[Path, typer.Argument(help="Owner key file (*.nnkey)")]
TsaCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tsa-cert",
        help="Trusted TSA certificate or its root CA (PEM or DER; a PEM may hold several)",
    ),
]


@_command("identity")
def identity_cmd(
    out_path: Annotated[Path, typer.Option("--out", help="Private key file to write (PEM, 0600)")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file")] = False,
) -> None:
    """Make a new Ed25519 identity and print its fingerprint.

    Publish the fingerprint (web page, contract, repository): a signature only names whoever holds
    the private key, and the fingerprint is how others tell that it is you.
    """
    from nnmark.provenance import new_identity

    check_output(out_path, force)
    out.print(f"identity {out_path}: {new_identity(out_path)}", markup=False)


ReplaceOpt = Annotated[
    bool,
    typer.Option(
        "--replace",
        help="Replace the one the key holds (an earlier timestamp proves more: keep a copy)",
    ),
]


def _keep(key_path: Path, what: str, held: bool) -> None:
    """Refuse to drop the key's `what` silently: an earlier timestamp proves priority over
    more copies than a later one (red team, session 26: stamping twice turned found to
    not_found, when a stamp still waived the search cost)."""
    if held:
        raise NNMarkError(
            f"{key_path} already holds a {what}; an earlier one proves more than a later one, "
            "so it is kept (pass --replace to replace it, after keeping a copy of the key)"
        )


@_command("sign")
def sign_cmd(
    key_path: KeyArg,
    identity: Annotated[Path, typer.Option("--identity", help="Private key from `key identity`")],
    replace: ReplaceOpt = False,
) -> None:
    """Sign the key's commitment with an identity and store the signature in the key file.

    Sign before `key timestamp`: the stamp then proves the signature was made by its time. A
    stamp that covers the signature being replaced is void with it and is removed (--replace).
    """
    from nnmark.cli.common import signer_for
    from nnmark.provenance import check_signature, sign_commitment

    key = OwnerKey.load(key_path)
    _keep(key_path, "signature", key.signature is not None and not replace)
    _, private = signer_for(identity, key, key.owner)  # only the signer a key commits to
    doc = sign_commitment(key.commitment, private)
    fp = check_signature(key.commitment, doc)
    old = key.signature if _signature_status(key)["status"] == "valid" else None
    covers = None if key.timestamp is None else _covers(key, old)
    stamp, note = (
        key.timestamp,
        {
            None: "",
            "commitment": "; the key's timestamp covers the commitment, not this signature",
            "commitment and signature": "; the timestamp over the old signature was removed (void "
            "with it)",
            "neither": "; the timestamp, over neither this commitment nor its signature, was "
            "removed (void)",
        }[covers],
    )
    if covers not in (None, "commitment"):  # void with the old signature, or void already
        stamp = None
    dataclasses.replace(key, signature=doc, timestamp=stamp).save(key_path)
    out.print(
        f"signed {key_path} (commitment {key.commitment[:16]}...) as {fp}{note}",
        markup=False,
    )


@_command("timestamp")
def timestamp_cmd(
    key_path: KeyArg,
    tsa: Annotated[str, typer.Option("--tsa", help="URL of an RFC 3161 time-stamping authority")],
    tsa_cert: TsaCertOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the TSA")] = 30.0,
    replace: ReplaceOpt = False,
) -> None:
    """Timestamp the key's commitment, and its signature if it has one, with a TSA and store the
    token in the key file.

    With --tsa-cert the token is checked before it is stored; without, it is stored unchecked
    (check it later with `nnmark key show --tsa-cert`).
    """
    from nnmark.provenance import check_timestamp, fetch_timestamp

    if not 0 < timeout <= 600:
        raise NNMarkError(f"--timeout must be in (0, 600] seconds, got {timeout:g}")
    key = OwnerKey.load(key_path)
    _keep(key_path, "timestamp", key.timestamp is not None and not replace)
    trusted = [_read_cert(tsa_cert)] if tsa_cert else None  # a bad file fails before the network
    # a signature is checked before the network; the stamp covers it (provenance.stamp_imprint)
    doc = fetch_timestamp(key.commitment, tsa, timeout=timeout, signature=key.signature)
    note = "not checked: give --tsa-cert to check it"
    if trusted:
        p = check_timestamp(key.commitment, doc, trusted, signature=key.signature)
        note = f"{p.time.isoformat()} +/- {p.accuracy_text} by {p.tsa}, serial {p.serial}"
    covers = "commitment and signature" if key.signature else "commitment (the key is unsigned)"
    dataclasses.replace(key, timestamp=doc).save(key_path)
    out.print(f"timestamped {key_path} at {tsa}, over its {covers}: {note}", markup=False)


def _signature_status(key: OwnerKey) -> dict[str, Any]:
    from nnmark.provenance import check_signature

    if key.signature is None:
        return {"status": "none"}
    try:
        fp = check_signature(key.commitment, key.signature, committed=key.signer)
        return {"status": "valid", "fingerprint": fp}
    except NNMarkError as exc:
        return {"status": "invalid", "reason": str(exc)}


def _timestamp_status(
    key: OwnerKey, trusted: list[bytes] | None, signature: dict[str, Any] | None
) -> dict[str, Any]:
    """`signature`: the key's, if valid (a stamp may cover it)."""
    from nnmark.provenance import check_timestamp, timestamp_claim

    doc = key.timestamp
    if doc is None:
        return {"status": "none"}
    url = doc.get("tsa") if isinstance(doc.get("tsa"), str) else None
    if trusted is None:
        claim = timestamp_claim(doc)
        return {
            "status": "unchecked",
            "url": url,
            "claimed_time": claim[1].isoformat() if claim else None,
            "covers": _covers(key, signature),
        }
    try:
        p = check_timestamp(key.commitment, doc, trusted, signature=signature)
    except NNMarkError as exc:
        return {"status": "invalid", "url": url, "reason": str(exc)}
    return {
        "status": "valid",
        "url": url,
        "time": p.time.isoformat(),
        "accuracy_s": p.accuracy.total_seconds(),
        "latest": p.latest.isoformat(),
        "tsa": p.tsa,
        "anchor_sha256": p.anchor,
        "serial": p.serial,
        "covers": "commitment and signature" if p.signed_by else "commitment",
    }


def _covers(key: OwnerKey, signature: dict[str, Any] | None) -> str:
    """What an unchecked stamp claims to cover."""
    from nnmark.provenance import claimed_imprint, stamp_imprint

    imprint = claimed_imprint(key.timestamp)
    if signature is not None and imprint == stamp_imprint(key.commitment, signature):
        return "commitment and signature"
    return "commitment" if imprint == key.commitment else "neither"


def _arch_summary(arch: dict[str, Any] | None) -> dict[str, Any] | None:
    """The committed architecture for --json: a module's tensors counted, not listed (up to
    MAX_ARCH_TENSORS names)."""
    if arch is None or "tensors" not in arch:
        return arch
    return {"name": arch["name"], "tensors": len(arch["tensors"])}


def _arch_line(arch: dict[str, Any] | None) -> str:
    if arch is None:
        return "none committed (white-box marks are read by layer name from any model)"
    if "tensors" in arch:
        return f"module with {len(arch['tensors']):,} tensors"
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(arch["kwargs"].items()))
    return f"{arch['name']}({kwargs})"


@_command("show")
def show_cmd(
    key_path: KeyArg,
    tsa_cert: TsaCertOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Show a key's owner, marks, commitment, and whether its signature and timestamp hold.

    A timestamp is only checked against a --tsa-cert you trust; without one it is shown as
    unchecked with the time it claims.
    """
    key = OwnerKey.load(key_path)
    trusted = [_read_cert(tsa_cert)] if tsa_cert else None
    from nnmark.provenance import stamp_imprint, text_fingerprint

    sig = _signature_status(key)
    signature = key.signature if sig["status"] == "valid" else None
    ts = _timestamp_status(key, trusted, signature)
    result = {
        "key": str(key_path),
        "owner": key.owner,
        "created": key.created,
        "commitment": key.commitment,
        "committed_signer": None if key.signer is None else text_fingerprint(key.signer),
        "committed_arch": _arch_summary(key.arch),
        "marks": [{"scheme": m.scheme, "layer": m.layer, "bits": len(m.bits)} for m in key.marks],
        "signature": sig,
        "timestamp": ts,
        # what `key timestamp` stamps now (openssl ts -verify -digest IMPRINT checks a token)
        "stamp_imprint": stamp_imprint(key.commitment, signature),
    }
    if as_json:
        print(json.dumps(result))
        return
    sig_line = {
        "none": "none",
        "valid": f"{sig.get('fingerprint')} (valid)",
        "invalid": f"invalid: {sig.get('reason')}",
    }[sig["status"]]
    ts_line = {
        "none": "none",
        "valid": f"{ts.get('time')} +/- {ts.get('accuracy_s')!r} s by {ts.get('tsa')}, "
        f"serial {ts.get('serial')}, trusted through sha256:{str(ts.get('anchor_sha256'))[:32]}, "
        f"over the {ts.get('covers')} (valid)",
        "unchecked": f"not checked (give --tsa-cert): claims {ts.get('claimed_time')} "
        f"from {ts.get('url')} over the {ts.get('covers')}",
        "invalid": f"invalid: {ts.get('reason')}",
    }[ts["status"]]
    marks = "; ".join(f"{m.scheme} on {m.layer or '-'}, {len(m.bits)} bits" for m in key.marks)
    for label, value in (
        ("key", key_path),
        ("owner", key.owner),
        ("created", key.created),
        ("commitment", key.commitment),
        ("signer", result["committed_signer"] or "none committed (any identity can sign)"),
        ("arch", _arch_line(key.arch)),
        ("marks", marks),
        ("signature", sig_line),
        ("timestamp", ts_line),
        ("imprint", result["stamp_imprint"]),
    ):
        out.print(f"{label + ':':<12}{one_line(value)}", markup=False)
