"""Owner keys: what verification needs, committed by a SHA-256 hash, nothing chosen freely.

Key file (JSON, `format` = "nnmark-key", `version` = 1)::

    {"format": "nnmark-key", "version": 1,
     "committed": {"owner": str, "nonce": hex, "created": ISO-8601 UTC,
                   "marks": [{"scheme": str, "config": {...}, "layer": str | null,
                              "bits": "0110...", "message": str | null, "data": {...}}]},
     "commitment": sha256 hex of the canonical JSON of "committed",
     "derived": {...}, "derived_hash": sha256 hex of the canonical JSON of "derived"}

Every secret a scheme uses (projection matrices, key positions, trigger inputs) is re-derived
from `Mark.seed(purpose)`, a hash of owner, nonce, mark index, scheme, layer, config and payload.
A forger who picks a payload after seeing a model therefore cannot pick the projection too:
fitting n bits takes about 2^n tries. `data` holds only what cannot be re-derived because it
depends on the trained model (e.g. frontier-stitching triggers). `derived` holds data added after
the commitment (a calibration) under its own hash.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_text

FORMAT = "nnmark-key"
VERSION = 1


def canonical_json(obj: Any) -> str:
    """The canonical JSON the commitment hashes: sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def bits_to_str(bits: Sequence[int]) -> str:
    return "".join("1" if b else "0" for b in bits)


def str_to_bits(text: str) -> tuple[int, ...]:
    if any(c not in "01" for c in text):
        raise NNMarkError("key file: payload bits must be a string of 0 and 1")
    return tuple(int(c) for c in text)


@dataclass(frozen=True)
class Mark:
    """One mark of a key: a scheme, its config, where it sits and what it carries."""

    scheme: str
    config: dict[str, Any]
    layer: str | None
    bits: tuple[int, ...]
    owner: str
    nonce: str
    index: int = 0
    message: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def seed(self, purpose: str) -> int:
        """A 63-bit seed for one use (e.g. "projection"), re-derivable from the key alone."""
        material = {
            "owner": self.owner,
            "nonce": self.nonce,
            "index": self.index,
            "scheme": self.scheme,
            "layer": self.layer,
            "config": self.config,
            "bits": bits_to_str(self.bits),
            "purpose": purpose,
        }
        return int(sha256_hex(material)[:16], 16) & ((1 << 63) - 1)

    def generator(self, purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed(purpose))

    def entry(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "config": self.config,
            "layer": self.layer,
            "bits": bits_to_str(self.bits),
            "message": self.message,
            "data": self.data,
        }


def payload_bits(owner: str, nonce: str, n: int, index: int = 0) -> tuple[int, ...]:
    """n pseudo-random payload bits derived from owner and nonce (the default payload)."""
    out: list[int] = []
    counter = 0
    while len(out) < n:
        digest = hashlib.sha256(f"{owner}|{nonce}|{index}|payload|{counter}".encode()).digest()
        for byte in digest:
            out.extend((byte >> (7 - i)) & 1 for i in range(8))
        counter += 1
    return tuple(out[:n])


@dataclass(frozen=True)
class OwnerKey:
    """An owner's key: owner string, nonce, creation time, marks, and data derived later."""

    owner: str
    nonce: str
    created: str
    marks: tuple[Mark, ...] = ()
    derived: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, owner: str, nonce: str | None = None) -> OwnerKey:
        """A fresh key; the nonce is random unless given (give one for reproducible keys)."""
        if not owner.strip():
            raise NNMarkError("owner must not be empty")
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        return cls(owner=owner, nonce=nonce or os.urandom(16).hex(), created=now)

    def new_mark(
        self,
        scheme: str,
        config: dict[str, Any],
        layer: str | None,
        bits: Sequence[int],
        message: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Mark:
        """A mark bound to this key (not yet added: see `with_mark`)."""
        return Mark(
            scheme=scheme,
            config=dict(config),
            layer=layer,
            bits=tuple(int(b) for b in bits),
            owner=self.owner,
            nonce=self.nonce,
            index=len(self.marks),
            message=message,
            data=dict(data or {}),
        )

    def with_mark(self, mark: Mark) -> OwnerKey:
        if mark.owner != self.owner or mark.nonce != self.nonce or mark.index != len(self.marks):
            raise ValueError("mark was not made by this key's new_mark")
        return dataclasses.replace(self, marks=(*self.marks, mark))

    def with_derived(self, name: str, value: Any) -> OwnerKey:
        """Attach data derived after the commitment (e.g. a calibration) under `name`."""
        return dataclasses.replace(self, derived={**self.derived, name: value})

    def committed(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "nonce": self.nonce,
            "created": self.created,
            "marks": [m.entry() for m in self.marks],
        }

    @property
    def commitment(self) -> str:
        return sha256_hex(self.committed())

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "committed": self.committed(),
            "commitment": self.commitment,
        }
        if self.derived:
            doc["derived"] = self.derived
            doc["derived_hash"] = sha256_hex(self.derived)
        return doc

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file, then rename): an old key is never half-overwritten."""
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_json(cls, doc: Any, source: str = "key file") -> OwnerKey:
        try:
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise NNMarkError(f"{source}: not an nnmark key file")
            if doc.get("version") != VERSION:
                raise NNMarkError(f"{source}: unsupported key version {doc.get('version')!r}")
            c = doc["committed"]
            owner, nonce, created = str(c["owner"]), str(c["nonce"]), str(c["created"])
            marks = tuple(
                Mark(
                    scheme=str(m["scheme"]),
                    config=dict(m["config"]),
                    layer=m["layer"],
                    bits=str_to_bits(m["bits"]),
                    owner=owner,
                    nonce=nonce,
                    index=i,
                    message=m.get("message"),
                    data=dict(m.get("data") or {}),
                )
                for i, m in enumerate(c["marks"])
            )
            key = cls(owner, nonce, created, marks, dict(doc.get("derived") or {}))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise NNMarkError(f"{source}: malformed key file ({exc})") from None
        if sha256_hex(c) != doc.get("commitment"):
            raise NNMarkError(f"{source}: commitment does not match the key's contents")
        if key.derived and sha256_hex(key.derived) != doc.get("derived_hash"):
            raise NNMarkError(f"{source}: derived data does not match its hash")
        if not key.marks:
            raise NNMarkError(f"{source}: the key holds no mark")
        return key

    @classmethod
    def load(cls, path: str | Path) -> OwnerKey:
        p = Path(path)
        if not p.is_file():
            raise NNMarkError(f"key file not found: {p}")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NNMarkError(f"{p}: unreadable key file ({exc.__class__.__name__})") from None
        return cls.from_json(doc, str(p))
