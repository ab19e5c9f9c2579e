"""Fingerprints: a distinct mark per recipient of one model, and naming the one that leaked.

Each recipient gets a copy of the base model fine-tuned with a mark under their own key (owner =
the recipient's name, a fresh nonce): the payload and every secret (projection, key inputs)
differ between copies, so a copy carries its own recipient's mark and looks unmarked to every
other key. `identify` verifies a suspect against every candidate key and names the recipient
whose mark is found.

Multiple testing: with K candidate keys, the smallest of K p-values is small by chance K times
as often, so each p-value is Bonferroni-adjusted (min(1, K p)) before it is compared with alpha;
the family-wise chance of naming anyone for an unmarked model is then at most alpha.

>>> from nnmark import load_data, new_model, train, TrainConfig
>>> data = load_data("digits")
>>> base = train(new_model("cnn", data, seed=0), data, TrainConfig(epochs=2))
>>> copies = fingerprint(base, data, ["alice", "bob"], config=TrainConfig(epochs=1))
>>> identify(copies[1][0], {"alice": copies[0][1], "bob": copies[1][1]}).named
'bob'
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from torch import nn

from nnmark.data.base import DataBundle
from nnmark.errors import KeyInputsMismatch, NNMarkError
from nnmark.keys import OwnerKey, work_seconds
from nnmark.stats import DEFAULT_ALPHA
from nnmark.suspect import Suspect, as_suspect
from nnmark.train import TrainConfig

log = logging.getLogger(__name__)

CORRECTION = "bonferroni"


def fingerprint(
    model: nn.Module,
    data: DataBundle,
    recipients: list[str],
    scheme: str = "uchida",
    bits: int | None = 256,
    config: TrainConfig | None = None,
    *,
    options: dict[str, Any] | None = None,
    secret: bytes | None = None,
    created: str | None = None,
) -> list[tuple[nn.Module, OwnerKey]]:
    """One marked copy of `model` per recipient (fine-tune-to-embed), with its key, in order.

    A key's nonce is its only secret: the owner (the recipient's name), the creation time and
    the mark's options are no secret to a recipient. By default each nonce is random and the
    time is now. `secret` (at least 16 bytes, kept by the owner) and `created` (an ISO 8601
    time, every key's) make the keys reproducible: each nonce is HMAC-SHA256(secret,
    recipient), which no recipient can work out from their own (the same secret and time give
    a recipient the same key again: use a new secret per release). Nonces a recipient could guess
    (a counter, a repeated byte) let one build another's key and plant its mark in their own
    copy, and `identify` then names the innocent one (review, session 36: p 1.7e-77 for the
    victim, after 2 epochs of fine-tuning, accuracy 0.983).
    256 bits by default: pooled copies weaken each colluder's mark, and a claim needs p below
    the search-cost bound (about 1.6e-12) whether or not the keys are timestamped. The median
    of four of 8 copies named a colluder in 20 of 20 trials at 64, 128 and 256 bits, read with
    the scores (Evidence.scores); on the bits alone in 7, 15 and 16 (benchmarks/collusion.py
    --bits N --tag bitsN), no innocent ever. At 256 bits the median of all 8 still names one of
    them (at 64 it does not).
    """
    from nnmark.api import embed

    if not recipients:
        raise NNMarkError("fingerprint needs at least one recipient")
    # one form per name: "José" typed two ways was two recipients, and a retyped name another
    # nonce (review, session 36)
    recipients = [unicodedata.normalize("NFC", name) for name in recipients]
    if len(set(recipients)) != len(recipients):
        raise NNMarkError("recipient names must be distinct")
    if secret is not None and not isinstance(secret, bytes):
        raise NNMarkError(f"the fingerprint secret is bytes, got {type(secret).__name__}")
    if secret is not None and len(secret) < MIN_SECRET_BYTES:
        raise NNMarkError(
            f"the fingerprint secret has {len(secret)} bytes (at least {MIN_SECRET_BYTES}): "
            "every recipient's key is derived from it"
        )
    out = []
    for i, name in enumerate(recipients):
        nonce = None if secret is None else recipient_nonce(secret, name)
        key = OwnerKey.new(name, nonce=nonce, created=created)
        log.info("fingerprint %d/%d: %s", i + 1, len(recipients), name)
        out.append(embed(model, data, scheme, options=options, key=key, bits=bits, config=config))
    return out


#: The least a fingerprint secret holds: as many bytes as a random nonce.
MIN_SECRET_BYTES = 16


def recipient_nonce(secret: bytes, recipient: str) -> str:
    """The nonce of `recipient`'s key under the owner's `secret`: HMAC-SHA256, so knowing one
    recipient's nonce tells nothing of another's, and 16 bytes of it in hex, a nonce's size."""
    import hmac

    msg = b"nnmark fingerprint nonce\0" + unicodedata.normalize("NFC", recipient).encode()
    return hmac.new(secret, msg, "sha256").hexdigest()[:32]


@dataclass(frozen=True)
class Candidate:
    """One candidate key's result: raw and Bonferroni-adjusted p-values."""

    label: str
    owner: str
    scheme: str
    p_value: float
    p_adjusted: float
    ber: float | None
    found: bool
    reason: str | None = None


@dataclass(frozen=True)
class Identification:
    """Who leaked: the named recipient (smallest adjusted p below alpha) or None."""

    named: str | None
    candidates: tuple[Candidate, ...]
    alpha: float
    correction: str = CORRECTION
    also_found: tuple[str, ...] = ()
    #: the key file (its label) whose candidate is named; None when no one is
    named_key: str | None = None
    null: str = field(
        default=(
            "per candidate, that candidate's null (the suspect was not marked with its key); "
            "p-values Bonferroni-adjusted over the candidates, so an unmarked suspect names "
            "anyone with probability at most alpha"
        )
    )

    @property
    def exit_code(self) -> int:
        return 0 if self.named is not None else 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["candidates"] = [asdict(c) for c in self.candidates]
        d["also_found"] = list(self.also_found)
        return d


def identify(
    suspect: Suspect | nn.Module | str | Path,
    keys: Mapping[str, OwnerKey],
    alpha: float = DEFAULT_ALPHA,
    *,
    data: DataBundle | Sequence[DataBundle] | None = None,
    tsa_certs: Sequence[bytes] = (),
    suspect_seen: datetime | None = None,
) -> Identification:
    """Verify `suspect` against every candidate key (label -> key) and name the leaker, if any.

    Each key is verified at alpha / (number of keys) under verify's claim rule (a forgery cost
    or a verified timestamp; `data`, `tsa_certs` and `suspect_seen` as for verify): a candidate key is a
    key someone handed in, and a p-value alone does not say it was not searched for. The
    recipient named is the owner of the claimed key with the smallest Bonferroni-adjusted
    p-value; the owners of the other claimed keys, but the named one, are listed once each in
    `also_found` (a collusion of copies); every key's own row is in `candidates`.
    """
    if not keys:
        raise NNMarkError("no candidate keys to identify against")
    cost = sum(len(key.marks) * work_seconds(key.kdf) for key in keys.values())
    if cost > MAX_IDENTIFY_SECONDS:  # before any key is derived
        raise NNMarkError(
            f"deriving the {len(keys):,} candidate keys would take {cost:,.0f} reference "
            f"CPU-seconds (at most {MAX_IDENTIFY_SECONDS:,.0f}); refused before deriving"
        )
    from nnmark.api import verify

    s = as_suspect(suspect)
    k = len(keys)
    rows = []
    for label, key in keys.items():
        try:
            v = verify(s, key, alpha / k, data=data, tsa_certs=tsa_certs, suspect_seen=suspect_seen)
        except KeyInputsMismatch as exc:  # a key for another task: this candidate is not
            # read, the others are (it still counts in the Bonferroni correction); any other
            # error (the suspect's file, a timestamp, missing key data) stays an error
            rows.append(Candidate(label, key.owner, "-", 1.0, 1.0, None, False, f"not read: {exc}"))
            continue
        p = float(v.p_value)
        claimed = v.verdict == "found"  # p < alpha / k, and the claim rule holds
        reason = v.reason
        if not claimed and p < alpha / k and reason is None:
            reason = v.claim_rule  # significant, but a key search reaches it
        rows.append(
            Candidate(
                label=label,
                owner=key.owner,
                scheme=v.scheme,
                p_value=p,
                p_adjusted=min(1.0, p * k),
                ber=v.ber,
                found=claimed,
                reason=reason,
            )
        )
    ranked = sorted(rows, key=lambda c: c.p_adjusted)
    hits = [c for c in ranked if c.found]
    return Identification(
        named=hits[0].owner if hits else None,
        candidates=tuple(rows),
        alpha=alpha,
        # a second key of the named recipient (or the same key under two file names) is not
        # another recipient (review, session 36: it read like one)
        also_found=tuple(dict.fromkeys(c.owner for c in hits if c.owner != hits[0].owner)),
        named_key=hits[0].label if hits else None,
    )


#: Candidates `identify` takes, and their bytes in all, checked before any is read: each is
#: derived (a KDF) and verified, and all are held at once (a key file parses to at most about
#: 10x its size: nnmark.keys.MAX_KEY_CONTAINERS); an honest recipient's key is a few KB.
MAX_CANDIDATES = 10_000
#: Reference CPU-seconds (keys.work_seconds) deriving every candidate's marks may take in all,
#: checked before the first: each key is within keys.MAX_KEY_DERIVATION_SECONDS, but a folder
#: of such keys took hours (red team, session 28). An hour at the reference speed: 10,000
#: recipients' keys at the default KDF (0.05 a mark) take 500 with one mark each.
MAX_IDENTIFY_SECONDS = 3600.0
MAX_CANDIDATE_BYTES = 256 << 20


def load_keys(folder: str | Path) -> dict[str, OwnerKey]:
    """Every *.nnkey in `folder`, by file name, in sorted order (a bad key file is an error)."""
    d = Path(folder)
    if d.is_file():  # "folder not found" for a file that is there read wrong (review, s. 36)
        raise NNMarkError(
            f"--keys takes a folder of *.nnkey files, and {d} is a file: for one key, "
            "nnmark verify SUSPECT --key KEY"
        )
    if not d.is_dir():
        raise NNMarkError(f"keys folder not found: {d}")
    files = []
    for f in d.iterdir():  # counted as they are listed, before any sort (300,000: 412 MB)
        if f.name.endswith(".nnkey"):
            files.append(f)
            if len(files) > MAX_CANDIDATES:
                raise NNMarkError(
                    f"{d} holds more than {MAX_CANDIDATES:,} keys; identify takes at most {MAX_CANDIDATES:,}"
                )
    files.sort()
    if not files:
        raise NNMarkError(f"no *.nnkey files in {d}")
    size = 0
    # a bad key file is an error, said as OwnerKey.load says it (review: a dangling link ended
    # in FileNotFoundError's own text here, before any key was read)
    for f in files:
        try:
            if not f.is_file():
                what = "not a regular file" if f.exists() else "not found (a dangling link?)"
                raise NNMarkError(f"key file {what}: {f}")
            size += f.stat().st_size
        except OSError as exc:
            raise NNMarkError(f"{f}: unreadable key file ({exc.strerror})") from None
    if size > MAX_CANDIDATE_BYTES:
        raise NNMarkError(
            f"{d}: its keys take {size:,} bytes; identify reads at most {MAX_CANDIDATE_BYTES:,}"
        )
    return {f.name: OwnerKey.load(f) for f in files}
