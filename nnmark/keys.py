"""Owner keys: committed fields only, every secret re-derived through a memory-hard KDF.

Key file (JSON, `format` = "nnmark-key", `version` = 3)::

    {"format": "nnmark-key", "version": 3,
     "committed": {"owner": str, "nonce": 32 hex, "created": ISO-8601 UTC,
                   "kdf": {"name": "scrypt", "n": 65536, "r": 8, "p": 1},
                   "reference": sha256 hex, "signer": base64 Ed25519 key,  # optional
                   "arch": {"name": str, "kwargs": {...}}                  # optional
                         | {"name": "module", "tensors": [sorted names]},
                   "marks": [{"scheme": str, "config": {...}, "layer": str | null,
                              "bits": "0110...", "message": str | null,
                              "data": {...}, "stored": {...}}]},
     "commitment": sha256 hex of the canonical JSON of "committed",
     "signature": {...}, "timestamp": {...},          # optional, over the commitment
     "derived": {...}, "derived_hash": sha256 hex of the canonical JSON of "derived"}

What a key holds, and why nothing else:

- `data` holds what a scheme's derivation *starts from* and cannot find in the suspect: host
  shapes, the content hash of the data set key inputs are drawn from, an error-correcting code's
  parameters. Every secret (projections, positions, dithers, masks, trigger inputs and labels) is
  re-derived at verification from `Mark.generator(purpose)`, never read from the file.
- `stored` holds what depends on the trained model and so cannot be re-derived (frontier's
  adversarial triggers). A verdict that rests on stored evidence needs a verified timestamp
  (nnmark.provenance): whoever holds the key chose that evidence.
- `signer` is the public key of the identity that signs the key (nnmark.provenance), committed
  before the first secret: only a signature by that identity is accepted, and the marks depend
  on it, so a key file that leaks before it is signed and stamped cannot be signed by another.
- `arch` is the architecture of the model the marks were embedded in: a zoo model's name and
  kwargs, or for any other module (the user's own class, a Lightning or Hugging Face model)
  the sorted names of its parameters and buffers ("module"). A white-box mark is read from a
  suspect of another architecture never by layer name alone (a resnet20's marked block moved
  to another position of a resnet32, the name the key reads holding noise, read not_found
  with no reason: red team, session 27); a suspect may hold fewer tensors than committed (a
  class of the user's own holding the marked layer), never others. Names only, no shapes:
  the host layer's shape is already checked from the mark's `data`, another tensor's shape
  does not move a layer's place, and a shape per tensor would be a JSON array each, against
  MAX_KEY_CONTAINERS. It is committed but not part of any secret: it only ever stops a
  reading, and a key's marks stay the same bit for bit with or without it.
- The root secret of a mark is scrypt over *all* its committed fields but `arch` and the
  marked model's digest in `stored` (owner, nonce, creation time, KDF cost, reference, signer,
  scheme, config, layer, payload, message, data, frontier's stored triggers): changing any of
  them (a new nonce, another payload, another step size) is a new derivation. A forger who
  searches for a key that fits a model they never marked pays one derivation per try, and a
  try succeeds at p-value p with probability p; the verdict reports that cost
  (`forgery_cost`).

Version 1 keys (before 0.2) stored trigger inputs and step sizes that verification trusted, and
derived secrets with a bare hash; version 2 keys drew each secret stream from a torch generator
seeded with 63 bits, of which torch keeps 32 (`stream`). Both are refused with that reason.
`derived` holds data added after the commitment (a calibration) under its own hash; it can only
make a verdict more conservative.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import datetime as _dt
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_text, unique_keys
from nnmark.layers import tensor_names

FORMAT = "nnmark-key"
VERSION = 3
#: scrypt at N = 2^16, r = 8: 64 MiB and 0.148 s per derivation (median, minimum 0.141) on the
#: 2-core VM nnmark is developed on (benchmarks/results/kdf_cost.md).
DEFAULT_KDF: dict[str, Any] = {"name": "scrypt", "n": 1 << 16, "r": 8, "p": 1}
#: The reference cost of one derivation at DEFAULT_KDF, in CPU-seconds: what a forger's key
#: search pays per try (benchmarks/kdf_cost.py measures it; benchmarks/results/kdf_cost.md).
#: A verdict's forgery cost uses this fixed figure, scaled by N r p, not a time measured while
#: verifying: a verdict must not depend on how busy the verifier's machine is. It is set below
#: every measured figure (minimum 0.141 s here), at what a core about 2.8x faster would pay, so
#: that a faster forger does not make the cost an overstatement; a GPU or ASIC farm pays less
#: per try, which docs/security.md counts in the threat model's compute budget.
REFERENCE_SECONDS = 0.05
MAX_KEY_BYTES = 64 << 20
#: JSON objects and arrays a key file may open: an honest key holds a few per mark (its
#: triggers are one base64 string); 64 MiB of "[{}," took 2 GB to parse.
MAX_KEY_CONTAINERS = 100_000
#: Object members (':' characters, counted before parsing) a key file may hold: an honest key
#: holds a few dozen per mark; 4.5 million config entries took 35 s and 1.9 GB to refuse
#: (red team, session 28).
MAX_KEY_MEMBERS = 100_000
#: Commas (values, counted before parsing) a key file may hold: an honest key's longest list is
#: its committed tensor names (MAX_ARCH_TENSORS); 64 MiB of "1e1," parsed to 16.7 million
#: floats in 1.16 GB before the commitment was found wrong (red team, session 31).
MAX_KEY_VALUES = 400_000
#: Entries a mark's config, data and stored may hold, and the length of their names: the
#: schemes' own hold at most 11 (tartaglione's config), named in at most 14 characters.
MAX_MARK_ENTRIES = 64
MAX_ENTRY_NAME = 64
#: A scheme's name (the registered ones are at most 11 characters).
MAX_SCHEME_NAME = 64
#: Unmarked models one calibration entry may describe (`nnmark calibrate --models`).
MAX_CALIBRATION_MODELS = 1_000
MAX_MARKS = 16
#: Stored fields written after a mark is embedded (the marked model's digest, for realignment):
#: the secret the embedding used cannot depend on them. Every other stored field is in the
#: secret (frontier's triggers and labels: its coins are drawn after they are fixed, so a
#: holder who fits the triggers to the coins pays one derivation per try; red team, session 28).
AFTER_EMBEDDING = frozenset({"marked_sha256"})
#: The tensors a key's generic architecture may name (OwnerKey.with_module), and their length:
#: a forger writes keys, and a verifier holds the names as a set.
MAX_ARCH_TENSORS = 100_000
MAX_TENSOR_NAME = 256
#: The `arch` name of a model from outside the zoo, committed by its tensors' names.
MODULE_ARCH = "module"
MAX_BITS = 1 << 20
MAX_TEXT = 4096
#: The largest KDF cost a key may ask of a verifier (memory 128 * n * r bytes: 1 GiB).
MAX_KDF_MEMORY = 1 << 30
#: The least scrypt memory (128 N r bytes) a derivation must take to be priced at all. Below
#: it scrypt fits in a GPU's caches and a forger runs thousands at once, so CPU-seconds say
#: nothing about what a try costs (red team, session 25: a forger picks N = 2^10, r = 1,
#: 128 KiB). Such a key's search is priced at nothing: only a verified timestamp claims it.
MIN_PRICED_KDF_MEMORY = 16 << 20

#: Key formats nnmark once wrote and now refuses, and why a verdict under them can be forged.
REFUSED_VERSIONS = {
    1: "it stored trigger inputs and step sizes that verification trusted and derived its "
    "secrets with a bare hash, so a verdict under it can be forged",
    2: "each of its secret streams had 32 bits (torch's generator kept 32 of its seed's), so a "
    "frontier, tartaglione or watermas verdict under it can be forged in a few CPU-years",
}

_TOP_FIELDS = {
    "format",
    "version",
    "committed",
    "commitment",
    "derived",
    "derived_hash",
    "signature",
    "timestamp",
}
_COMMITTED_FIELDS = {"owner", "nonce", "created", "kdf", "marks", "reference", "signer", "arch"}
#: Committed fields a key may leave out (keys made before them verify as they did).
_OPTIONAL_COMMITTED = {"reference", "signer", "arch"}
_MARK_FIELDS = {"scheme", "config", "layer", "bits", "message", "data", "stored"}


def canonical_json(obj: Any) -> str:
    """The canonical JSON the commitment hashes: sorted keys, no spaces, UTF-8, finite numbers."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def sha256_hex(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def bits_to_str(bits: Sequence[int]) -> str:
    return "".join("1" if b else "0" for b in bits)


def str_to_bits(text: str) -> tuple[int, ...]:
    if not isinstance(text, str) or any(c not in "01" for c in text):
        raise NNMarkError("key file: field bits must be a string of 0 and 1")
    if len(text) > MAX_BITS:
        raise NNMarkError(f"key file: field bits holds {len(text)} bits (at most {MAX_BITS})")
    return tuple(int(c) for c in text)


def check_kdf(kdf: Any, source: str = "key file") -> dict[str, Any]:
    """A validated KDF cost: scrypt, N a power of two in [2^10, 2^20], r in [1, 32], p in
    [1, 4], memory 128 N r at most 1 GiB (a key must not make its verifier allocate more)."""
    if not isinstance(kdf, dict) or set(kdf) != {"name", "n", "r", "p"}:
        raise NNMarkError(f"{source}: field kdf must be {{name, n, r, p}}")
    n, r, p = kdf["n"], kdf["r"], kdf["p"]
    if kdf["name"] != "scrypt":
        raise NNMarkError(f"{source}: field kdf.name must be 'scrypt', got {kdf['name']!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (n, r, p)):
        raise NNMarkError(f"{source}: fields kdf.n, kdf.r, kdf.p must be integers")
    if not (1 << 10) <= n <= (1 << 20) or n & (n - 1):
        raise NNMarkError(f"{source}: field kdf.n must be a power of two in [2^10, 2^20], got {n}")
    if not 1 <= r <= 32 or not 1 <= p <= 4:
        raise NNMarkError(f"{source}: fields kdf.r in [1, 32] and kdf.p in [1, 4], got {r}, {p}")
    if n >= 1 << (16 * r):  # scrypt's own bound (RFC 7914), which OpenSSL enforces
        raise NNMarkError(f"{source}: field kdf.n must be below 2^(16 r) = 2^{16 * r}, got {n}")
    if 128 * n * r > MAX_KDF_MEMORY:
        raise NNMarkError(f"{source}: field kdf asks for {128 * n * r >> 20} MiB (at most 1024)")
    return {"name": "scrypt", "n": n, "r": r, "p": p}


@functools.lru_cache(maxsize=512)
def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    """The derivation (memoised: a pure function of its inputs)."""
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=_maxmem(n, r, p), dklen=32)


def _maxmem(n: int, r: int, p: int) -> int:
    """scrypt's working memory (OpenSSL: 128 r (N + 2) for V, 128 r p for B) and a margin: p
    runs in sequence, so it is not a factor (check_kdf keeps this under 1.1 GiB)."""
    return 128 * r * (n + 2) + 128 * r * p + (1 << 24)


def derivation_seconds(kdf: dict[str, Any]) -> float:
    """The reference CPU-seconds of one derivation at this cost (scrypt's work grows as
    N r p): REFERENCE_SECONDS at DEFAULT_KDF; nothing below MIN_PRICED_KDF_MEMORY."""
    if 128 * kdf["n"] * kdf["r"] < MIN_PRICED_KDF_MEMORY:
        return 0.0
    return work_seconds(kdf)


#: The most reference CPU-seconds (work_seconds) deriving one key's marks may take, checked
#: when a key is read or a mark added, before any derivation: a key is the other side's file,
#: and 16 marks at the largest KDF (N 2^20, r 8, p 4: 3.2 each) took 176 s (red team, session
#: 28). The default KDF is 0.05 a mark; an owner raising it for disputes (docs/security.md)
#: keeps room: every one of 16 marks at 1 GiB (12.8), or one mark at the largest cost (3.2).
MAX_KEY_DERIVATION_SECONDS = 16.0


def work_seconds(kdf: dict[str, Any]) -> float:
    """The reference CPU-seconds one derivation at this cost takes (N r p scaled from
    REFERENCE_SECONDS at DEFAULT_KDF): what verifying pays, priced or not."""
    base = DEFAULT_KDF["n"] * DEFAULT_KDF["r"] * DEFAULT_KDF["p"]
    return float(REFERENCE_SECONDS * kdf["n"] * kdf["r"] * kdf["p"] / base)


def check_derivation_budget(kdf: dict[str, Any], marks: int, source: str = "key file") -> None:
    """Refuse a key whose `marks` derivations at `kdf` exceed MAX_KEY_DERIVATION_SECONDS."""
    cost = marks * work_seconds(kdf)
    if cost > MAX_KEY_DERIVATION_SECONDS:
        raise NNMarkError(
            f"{source}: deriving its {marks} mark(s) at kdf n={kdf['n']}, r={kdf['r']}, "
            f"p={kdf['p']} would take {cost:g} reference CPU-seconds (at most "
            f"{MAX_KEY_DERIVATION_SECONDS:g}); refused before deriving"
        )


def measure_derivation(kdf: dict[str, Any]) -> float:
    """Seconds one derivation at this cost takes here now, on a fresh input (benchmarks)."""
    start = time.perf_counter()
    hashlib.scrypt(
        os.urandom(16),
        salt=b"nnmark/timing",
        n=kdf["n"],
        r=kdf["r"],
        p=kdf["p"],
        maxmem=_maxmem(kdf["n"], kdf["r"], kdf["p"]),
        dklen=32,
    )
    return time.perf_counter() - start


@dataclass(frozen=True)
class Mark:
    """One mark of a key: a scheme, its config, where it sits and what it carries."""

    scheme: str
    config: dict[str, Any]
    layer: str | None
    bits: tuple[int, ...]
    owner: str
    nonce: str
    created: str = ""
    kdf: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_KDF))
    index: int = 0
    message: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    stored: dict[str, Any] = field(default_factory=dict)
    #: the key's unmarked reference model (OwnerKey.reference), which every secret depends on
    reference: str | None = None
    #: the key's committed signer (OwnerKey.signer), which every secret depends on
    signer: str | None = None
    #: the architecture of the model the key's marks were embedded in (OwnerKey.arch; not in
    #: the secret)
    arch: dict[str, Any] | None = None

    def material(self) -> dict[str, Any]:
        """Everything the root secret depends on: every committed field but the key's `arch`
        and the stored fields written after embedding (AFTER_EMBEDDING)."""
        bound = {k: v for k, v in self.stored.items() if k not in AFTER_EMBEDDING}
        return {
            "owner": self.owner,
            "nonce": self.nonce,
            "created": self.created,
            "kdf": self.kdf,
            "index": self.index,
            **({} if self.reference is None else {"reference": self.reference}),
            **({} if self.signer is None else {"signer": self.signer}),
            **{k: v for k, v in self.entry().items() if k != "stored"},
            **({"stored": bound} if bound else {}),
        }

    @property
    def secret(self) -> bytes:
        """The mark's 256-bit root secret (scrypt; memoised per process)."""
        k = self.kdf
        salt = f"nnmark/v{VERSION}/{self.nonce}".encode()
        return _scrypt(canonical_json(self.material()).encode(), salt, k["n"], k["r"], k["p"])

    @property
    def derivation_seconds(self) -> float:
        """The reference CPU-seconds of deriving this mark's secret (derivation_seconds)."""
        return derivation_seconds(self.kdf)

    def seed(self, purpose: str) -> int:
        """A 63-bit seed for one use that needs no secrecy (e.g. a warm-up's training seed),
        re-derivable from the key alone. Never a secret stream's: a torch generator keeps 32
        bits of a seed (`generator` says why that matters)."""
        digest = hashlib.sha256(self.secret + b"|" + purpose.encode()).digest()
        return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)

    def generator(self, purpose: str) -> torch.Generator:
        """The secret stream for one use (e.g. "projection"): a torch generator whose whole
        state comes from the mark's 256-bit secret (`stream`)."""
        return stream(self.secret + b"|" + purpose.encode())

    def mask(self, n: int | None = None) -> torch.Tensor:
        """The key's secret bit mask (fair coins): what bit-carrying schemes embed is
        payload XOR mask, so a model that never saw the key matches any payload, chosen or not,
        with probability exactly 1/2 per bit."""
        size = len(self.bits) if n is None else n
        return torch.randint(0, 2, (size,), generator=self.generator("mask"))

    def entry(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "config": self.config,
            "layer": self.layer,
            "bits": bits_to_str(self.bits),
            "message": self.message,
            "data": self.data,
            "stored": self.stored,
        }


#: Words of the Mersenne Twister state of torch's CPU generator (MT19937).
MT_WORDS = 624
#: A seed whose MT19937 initial words find the state's place in torch's generator state.
_MT_PROBE = 5489


@functools.cache
def _mt_layout() -> tuple[int, int]:
    """(byte offset, bytes per word) of the MT19937 words in `torch.Generator().get_state()`,
    found by seeding with _MT_PROBE and looking for the words the MT19937 initialisation
    gives: read from torch itself, not assumed from one version's struct layout."""
    state = torch.Generator().manual_seed(_MT_PROBE).get_state().numpy().tobytes()
    words = [_MT_PROBE]
    for i in range(1, 4):
        words.append((1812433253 * (words[-1] ^ (words[-1] >> 30)) + i) & 0xFFFFFFFF)
    for width in (8, 4):
        pattern = b"".join(w.to_bytes(width, "little") for w in words)
        at = state.find(pattern)
        if at >= 0 and state.find(pattern, at + 1) < 0 and at + width * MT_WORDS <= len(state):
            return at, width
    raise NNMarkError(  # pragma: no cover - a torch whose generator nnmark does not know
        "torch's CPU generator state has a layout nnmark does not know: secret streams cannot "
        "be derived with this torch"
    )


def stream(material: bytes) -> torch.Generator:
    """A torch CPU generator whose MT19937 state (624 words) is SHAKE-256 of `material`.

    `torch.Generator().manual_seed(s)` keeps only the low 32 bits of s: every secret stream of
    version-2 keys had 2^32 possible values, so a forger who can make a verdict rest on one
    stream (frontier's coins with triggers of their choosing; tartaglione's mask over weights
    whose signs never change) fixed a target stream and tried nonces until the key hit it,
    about 2^32 derivations (7 CPU-years at the default KDF, 1.7 at the cheapest priced one)
    whatever p the verdict then reported (red team, session 31). Filled from SHAKE-256, the
    stream has the entropy of `material` (a mark's 256-bit secret), and a key search pays
    1 / p derivations again. The first draw twists the state, as after any seeding."""
    at, width = _mt_layout()
    words = hashlib.shake_256(b"nnmark/stream|" + material).digest(4 * MT_WORDS)
    wide = b"".join(words[i : i + 4] + bytes(width - 4) for i in range(0, len(words), 4))
    gen = torch.Generator().manual_seed(_MT_PROBE)  # seeded: the next draw twists the state
    state = bytearray(gen.get_state().numpy().tobytes())
    state[at : at + width * MT_WORDS] = wide
    gen.set_state(torch.frombuffer(state, dtype=torch.uint8).clone())
    return gen


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class OwnerKey:
    """An owner's key: owner, nonce, creation time, KDF cost, marks; the signature and the
    timestamp over its commitment; data derived later."""

    owner: str
    nonce: str
    created: str
    marks: tuple[Mark, ...] = ()
    derived: dict[str, Any] = field(default_factory=dict)
    kdf: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_KDF))
    signature: dict[str, Any] | None = None
    timestamp: dict[str, Any] | None = None
    #: SHA-256 of the unmarked model the marks were embedded from (nnmark.io.model_sha256),
    #: committed before any secret: the one model `verify --reference-unmarked` realigns to
    reference: str | None = None
    #: The Ed25519 public key (base64 of its 32 raw bytes) of the one identity whose signature
    #: the key accepts, committed before any secret (`with_signer`)
    signer: str | None = None
    #: {"name": zoo architecture, "kwargs": its kwargs} of the model the marks were embedded
    #: in (`with_arch`), or {"name": "module", "tensors": its sorted tensor names} for any
    #: other module (`with_module`); committed before the first mark, in no secret
    arch: dict[str, Any] | None = None

    @classmethod
    def new(
        cls,
        owner: str,
        nonce: str | None = None,
        *,
        created: str | None = None,
        kdf: dict[str, Any] | None = None,
    ) -> OwnerKey:
        """A fresh key; the nonce is random and the creation time now unless given (give both
        for a reproducible key: every secret depends on them). The nonce is the key's only
        secret (its owner and time are no secret): one that others can guess lets them derive
        the key and plant its mark (nnmark.fingerprint.recipient_nonce derives one from a
        secret of yours)."""
        _check_owner(owner, "owner")
        nonce = nonce or os.urandom(16).hex()
        _check_nonce(nonce, "nonce")
        created = _check_created(created or _now(), "created")
        return cls(
            owner=owner, nonce=nonce, created=created, kdf=check_kdf(dict(kdf or DEFAULT_KDF))
        )

    def with_reference(self, sha256: str) -> OwnerKey:
        """Commit to the unmarked model the marks will be embedded from (its model_sha256):
        every secret then depends on it, so it was fixed before any secret was known and a
        realignment to it cannot have been chosen for a suspect. Only before the first mark."""
        if self.marks:
            raise ValueError("a reference is committed before the key's first mark")
        return dataclasses.replace(self, reference=check_sha256(sha256, "reference"))

    def with_arch(self, name: str, kwargs: dict[str, Any]) -> OwnerKey:
        """Commit to the zoo architecture the marks will be embedded in (nnmark.api.embed does,
        for a zoo model): a white-box mark is then read only from a suspect of that
        architecture. Only before the first mark."""
        if self.marks:
            raise ValueError("an architecture is committed before the key's first mark")
        arch = check_arch({"name": name, "kwargs": dict(kwargs)}, "arch")
        return dataclasses.replace(self, arch=arch)

    def with_module(self, model: torch.nn.Module) -> OwnerKey:
        """Commit to the tensors of a model from outside the zoo (a user's own class, a
        Lightning or transformers model; nnmark.api.embed does): a white-box mark is then not
        read from a suspect holding tensors it lacks. Only before the first mark.

        >>> key = OwnerKey.new("me").with_module(torch.nn.Linear(2, 1))
        >>> key.arch
        {'name': 'module', 'tensors': ['bias', 'weight']}
        """
        if self.marks:
            raise ValueError("an architecture is committed before the key's first mark")
        arch = {"name": MODULE_ARCH, "tensors": sorted(tensor_names(model))}
        return dataclasses.replace(self, arch=check_arch(arch, "arch"))

    def with_signer(self, public_key: str) -> OwnerKey:
        """Commit to the identity that will sign the key (base64 of its raw Ed25519 public key,
        nnmark.provenance.public_key_text): only its signature is then accepted, and every
        secret depends on it, so whoever gets the file before it is signed cannot put another
        name on it. Only before the first mark."""
        if self.marks:
            raise ValueError("a signer is committed before the key's first mark")
        return dataclasses.replace(self, signer=check_public_key(public_key, "signer"))

    def new_mark(
        self,
        scheme: str,
        config: dict[str, Any],
        layer: str | None,
        bits: Sequence[int],
        message: str | None = None,
        data: dict[str, Any] | None = None,
        stored: dict[str, Any] | None = None,
    ) -> Mark:
        """A mark bound to this key (not yet added: see `with_mark`)."""
        return Mark(
            scheme=scheme,
            config=dict(config),
            layer=layer,
            bits=tuple(int(b) for b in bits),
            owner=self.owner,
            nonce=self.nonce,
            created=self.created,
            kdf=dict(self.kdf),
            index=len(self.marks),
            message=message,
            data=dict(data or {}),
            stored=dict(stored or {}),
            reference=self.reference,
            signer=self.signer,
            arch=self.arch,
        )

    def with_mark(self, mark: Mark) -> OwnerKey:
        if (
            mark.owner != self.owner
            or mark.nonce != self.nonce
            or mark.created != self.created
            or mark.kdf != self.kdf
            or mark.index != len(self.marks)
            or mark.reference != self.reference
            or mark.signer != self.signer
            or mark.arch != self.arch
        ):
            raise ValueError("mark was not made by this key's new_mark")
        check_derivation_budget(self.kdf, len(self.marks) + 1, "key")
        # a new mark changes the commitment: a signature or timestamp over the old one is void
        return dataclasses.replace(self, marks=(*self.marks, mark), signature=None, timestamp=None)

    def with_stored(self, indices: Sequence[int], name: str, value: Any) -> OwnerKey:
        """Commit `value` under `stored[name]` of the marks at `indices` (committed, not part of
        any secret: e.g. the marked model's SHA-256, known only after embedding)."""
        marks = tuple(
            dataclasses.replace(m, stored={**m.stored, name: value}) if m.index in indices else m
            for m in self.marks
        )
        return dataclasses.replace(self, marks=marks, signature=None, timestamp=None)

    def with_derived(self, name: str, value: Any) -> OwnerKey:
        """Attach data derived after the commitment (e.g. a calibration) under `name`."""
        return dataclasses.replace(self, derived={**self.derived, name: value})

    def committed(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "nonce": self.nonce,
            "created": self.created,
            "kdf": self.kdf,
            "marks": [m.entry() for m in self.marks],
            **({} if self.reference is None else {"reference": self.reference}),
            **({} if self.signer is None else {"signer": self.signer}),
            **({} if self.arch is None else {"arch": self.arch}),
        }

    @property
    def commitment(self) -> str:
        return sha256_hex(self.committed())

    @property
    def derivation_seconds(self) -> float:
        """Seconds one try of a key search costs: a derivation per mark."""
        return sum(m.derivation_seconds for m in self.marks)

    def to_json(self) -> dict[str, Any]:
        """The key file's JSON: a copy (editing it leaves the key as it was; the key's dicts
        were shared with it, and a test that edited one corrupted a shared key)."""
        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "committed": copy.deepcopy(self.committed()),
            "commitment": self.commitment,
        }
        if self.signature is not None:
            doc["signature"] = self.signature
        if self.timestamp is not None:
            doc["timestamp"] = self.timestamp
        if self.derived:
            doc["derived"] = copy.deepcopy(self.derived)
            doc["derived_hash"] = sha256_hex(self.derived)
        return doc

    def save(self, path: str | Path) -> None:
        """Write atomically (temp file, then rename): an old key is never half-overwritten;
        0600, since it proves ownership."""
        atomic_write_text(path, self.text(), private=True)

    def text(self) -> str:
        """The key file's content."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, doc: Any, source: str = "key file") -> OwnerKey:
        """A key from its JSON, every field checked: a key is the other side's file."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise NNMarkError(f"{source}: not an nnmark key file")
        try:  # json reads "\ud800" alone, which no UTF-8 (nor a commitment) can hold
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise NNMarkError(
                f"{source}: a string holds a lone UTF-16 surrogate: not text"
            ) from None
        except (TypeError, ValueError):
            pass  # not JSON values: the field checks below name the field
        version = doc.get("version")
        if type(version) is not int:  # bool, 2.0: not a version a key file writes
            raise NNMarkError(f"{source}: unsupported key version {version!r}")
        if version in REFUSED_VERSIONS:
            raise NNMarkError(
                f"{source}: key format version {version} is refused: "
                f"{REFUSED_VERSIONS[version]}; mark the model again with this nnmark"
            )
        if version != VERSION:
            raise NNMarkError(f"{source}: unsupported key version {version!r}")
        _fields(doc, _TOP_FIELDS, {"format", "version", "committed", "commitment"}, source, "")
        c = doc["committed"]
        if not isinstance(c, dict):
            raise NNMarkError(f"{source}: field committed must be an object")
        _fields(c, _COMMITTED_FIELDS, _COMMITTED_FIELDS - _OPTIONAL_COMMITTED, source, "committed.")
        owner = _check_owner(c["owner"], f"{source}: field committed.owner")
        nonce = _check_nonce(c["nonce"], f"{source}: field committed.nonce")
        created = _check_created(c["created"], f"{source}: field committed.created")
        kdf = check_kdf(c["kdf"], source)

        def optional(name: str, check: Any) -> Any:
            return None if name not in c else check(c[name], f"{source}: field committed.{name}")

        reference: str | None = optional("reference", check_sha256)
        signer: str | None = optional("signer", check_public_key)
        arch: dict[str, Any] | None = optional("arch", check_arch)
        marks_doc = c["marks"]
        if not isinstance(marks_doc, list) or not 1 <= len(marks_doc) <= MAX_MARKS:
            raise NNMarkError(f"{source}: field committed.marks must hold 1 to {MAX_MARKS} marks")
        check_derivation_budget(kdf, len(marks_doc), source)
        marks = tuple(
            dataclasses.replace(
                _read_mark(m, i, owner, nonce, created, kdf, source),
                reference=reference,
                signer=signer,
                arch=arch,
            )
            for i, m in enumerate(marks_doc)
        )
        if not isinstance(doc["commitment"], str) or sha256_hex(c) != doc["commitment"]:
            raise NNMarkError(f"{source}: commitment does not match the key's contents")
        derived = doc.get("derived") or {}
        if not isinstance(derived, dict):
            raise NNMarkError(f"{source}: field derived must be an object")
        if derived and sha256_hex(derived) != doc.get("derived_hash"):
            raise NNMarkError(f"{source}: derived data does not match its hash")
        _check_derived(derived, len(marks), source)
        for name in ("signature", "timestamp"):
            if name in doc and not isinstance(doc[name], dict):
                raise NNMarkError(f"{source}: field {name} must be an object")
        return cls(
            owner,
            nonce,
            created,
            marks,
            derived,
            kdf,
            doc.get("signature"),
            doc.get("timestamp"),
            reference,
            signer,
            arch,
        )

    @classmethod
    def load(cls, path: str | Path) -> OwnerKey:
        p = Path(path)
        if not p.is_file():
            what = "not a regular file" if p.exists() else "not found"
            raise NNMarkError(f"key file {what}: {p}")
        size = p.stat().st_size
        if size > MAX_KEY_BYTES:
            raise NNMarkError(f"{p}: {size} bytes is too large for a key file")
        try:
            text = p.read_text(encoding="utf-8")
            if text.count("{") + text.count("[") > MAX_KEY_CONTAINERS:  # before parsing
                raise ValueError(f"more than {MAX_KEY_CONTAINERS:,} JSON objects and arrays")
            if text.count(":") > MAX_KEY_MEMBERS:
                raise ValueError(f"more than {MAX_KEY_MEMBERS:,} ':' (object members)")
            if text.count(",") > MAX_KEY_VALUES:
                raise ValueError(f"more than {MAX_KEY_VALUES:,} ',' (values)")
            doc = json.loads(text, parse_constant=_no_constant, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as exc:
            why = "empty" if not text.strip() else f"not JSON: {exc.msg} at line {exc.lineno}"
            raise NNMarkError(f"{p}: unreadable key file ({why})") from None
        except UnicodeDecodeError:
            raise NNMarkError(f"{p}: unreadable key file (not UTF-8 text)") from None
        except (OSError, RecursionError) as exc:
            raise NNMarkError(f"{p}: unreadable key file ({exc.__class__.__name__})") from None
        except ValueError as exc:
            raise NNMarkError(f"{p}: unreadable key file ({exc})") from None
        return cls.from_json(doc, str(p))


def _check_derived(derived: dict[str, Any], marks: int, source: str) -> None:
    """`derived` as `nnmark calibrate` writes it: per mark index, counts and rates in range
    (a list where an object belongs crashed verify; unknown fields could hold anything)."""
    for name, value in derived.items():
        if name != "calibration":
            raise NNMarkError(
                f"{source}: field derived.{name[:40]!r} is not derived data nnmark writes"
            )
        if not isinstance(value, dict):
            raise NNMarkError(f"{source}: field derived.calibration must be an object")
        for index, entry in value.items():
            at = f"{source}: field derived.calibration.{index[:20]}"
            if index not in {str(i) for i in range(marks)} or not isinstance(entry, dict):
                raise NNMarkError(f"{at} must be a mark's index, holding an object")
            for field_name, v in entry.items():
                if field_name in ("models", "k", "n"):
                    ok = isinstance(v, int) and not isinstance(v, bool)
                    ok = ok and 0 <= v <= MAX_CALIBRATION_MODELS * (1 << 20)
                    ok = ok and (field_name != "models" or 1 <= v <= MAX_CALIBRATION_MODELS)
                elif field_name in ("ucb", "model_ucb"):
                    ok = _unit(v)
                elif field_name in ("rates", "p_values"):
                    ok = isinstance(v, list) and len(v) <= MAX_CALIBRATION_MODELS
                    ok = ok and all(_unit(x) for x in v)
                else:
                    raise NNMarkError(f"{at}.{field_name[:40]!r} is not a calibration field")
                if not ok:
                    raise NNMarkError(f"{at}.{field_name} is out of range")


def _unit(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a key may hold")


def _fields(doc: dict[str, Any], allowed: set[str], required: set[str], src: str, at: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise NNMarkError(f"{src}: unknown field {at}{unknown[0]}")
    missing = sorted(required - set(doc))
    if missing:
        raise NNMarkError(f"{src}: missing field {at}{missing[0]}")


def _check_owner(owner: Any, what: str) -> str:
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 256:
        raise NNMarkError(f"{what} must be a non-empty string of at most 256 characters")
    if any(ord(ch) < 32 for ch in owner):
        raise NNMarkError(f"{what} must not hold control characters")
    return owner


def _check_nonce(nonce: Any, what: str) -> str:
    if not isinstance(nonce, str) or not 32 <= len(nonce) <= 64:
        raise NNMarkError(f"{what} must be 32 to 64 hex digits")
    try:
        bytes.fromhex(nonce)
    except ValueError:
        raise NNMarkError(f"{what} must be 32 to 64 hex digits") from None
    return nonce


def check_sha256(value: Any, what: str) -> str:
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise NNMarkError(f"{what} must be 64 lowercase hex digits (a SHA-256)")
    return value


def check_arch(value: Any, what: str) -> dict[str, Any]:
    """{"name": a printable architecture name, "kwargs": at most 32 scalar arguments}, or
    {"name": "module", "tensors": 1 to MAX_ARCH_TENSORS names, sorted and distinct}."""
    if isinstance(value, dict) and "tensors" in value:
        return _check_module_arch(value, what)
    ok = isinstance(value, dict) and set(value) == {"name", "kwargs"}
    ok = ok and isinstance(value["name"], str) and 0 < len(value["name"]) <= 64
    ok = ok and value["name"].isprintable() and isinstance(value["kwargs"], dict)
    ok = ok and len(value["kwargs"]) <= 32
    ok = ok and all(
        isinstance(k, str)
        and len(k) <= 64
        and (v is None or type(v) in (bool, int, float, str))
        and (not isinstance(v, str) or len(v) <= 64)
        for k, v in value["kwargs"].items()
    )
    if not ok:
        raise NNMarkError(f"{what} must be {{name, kwargs}} of a zoo architecture")
    check_finite_json(value["kwargs"], what)
    return {"name": value["name"], "kwargs": dict(value["kwargs"])}


def _check_module_arch(value: dict[str, Any], what: str) -> dict[str, Any]:
    names = value["tensors"]
    ok = set(value) == {"name", "tensors"} and value["name"] == MODULE_ARCH
    ok = ok and isinstance(names, list) and 1 <= len(names) <= MAX_ARCH_TENSORS
    ok = ok and all(
        isinstance(n, str) and 0 < len(n) <= MAX_TENSOR_NAME and n.isprintable() for n in names
    )
    # strictly increasing: one spelling per set of names, so one commitment per architecture
    ok = ok and all(a < b for a, b in zip(names, names[1:]))
    if not ok:
        raise NNMarkError(
            f"{what} must be {{name: {MODULE_ARCH!r}, tensors: 1 to {MAX_ARCH_TENSORS:,} "
            f"distinct printable names of at most {MAX_TENSOR_NAME} characters, sorted}}"
        )
    return {"name": MODULE_ARCH, "tensors": list(names)}


def check_public_key(value: Any, what: str) -> str:
    """Canonical base64 of 32 bytes (an Ed25519 public key: whether it is a point on the curve
    is checked where a signature is, nnmark.provenance)."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
        canonical = len(raw) == 32 and base64.b64encode(raw).decode("ascii") == value
    except (AttributeError, UnicodeEncodeError, binascii.Error):
        canonical = False
    if not canonical:
        raise NNMarkError(f"{what} must be canonical base64 of a 32-byte Ed25519 public key")
    return str(value)


def _check_created(created: Any, what: str) -> str:
    try:
        when = _dt.datetime.fromisoformat(str(created))
    except ValueError:
        raise NNMarkError(f"{what} must be an ISO-8601 time") from None
    if not isinstance(created, str) or when.utcoffset() != _dt.timedelta(0):
        raise NNMarkError(f"{what} must be an ISO-8601 time in UTC")
    return created


def check_finite_json(obj: Any, what: str, depth: int = 0) -> None:
    """Every number in a JSON value finite, nesting at most 32 deep."""
    if depth > 32:
        raise NNMarkError(f"{what} is nested too deeply")
    if isinstance(obj, float) and not math.isfinite(obj):
        raise NNMarkError(f"{what} holds a number that is not finite")
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite_json(v, f"{what}.{k}", depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            check_finite_json(v, what, depth + 1)


def _read_mark(
    m: Any, i: int, owner: str, nonce: str, created: str, kdf: dict[str, Any], source: str
) -> Mark:
    at = f"committed.marks[{i}]."
    if not isinstance(m, dict):
        raise NNMarkError(f"{source}: field {at[:-1]} must be an object")
    _fields(m, _MARK_FIELDS, {"scheme", "config", "layer", "bits", "data"}, source, at)
    for name, kind in (("scheme", str), ("config", dict), ("data", dict)):
        if not isinstance(m[name], kind):
            raise NNMarkError(f"{source}: field {at}{name} has the wrong type")
    if not 0 < len(m["scheme"]) <= MAX_SCHEME_NAME:
        raise NNMarkError(
            f"{source}: field {at}scheme must be a name of 1 to {MAX_SCHEME_NAME} characters"
        )
    stored = m.get("stored", {})
    if not isinstance(stored, dict):
        raise NNMarkError(f"{source}: field {at}stored must be an object")
    for name, entries in (("config", m["config"]), ("data", m["data"]), ("stored", stored)):
        # before anything walks them or echoes their names (an unknown option's error once
        # listed 4.5 million of them, a 44 MB line)
        if len(entries) > MAX_MARK_ENTRIES or any(len(k) > MAX_ENTRY_NAME for k in entries):
            raise NNMarkError(
                f"{source}: field {at}{name} must hold at most {MAX_MARK_ENTRIES} entries named "
                f"in at most {MAX_ENTRY_NAME} characters"
            )
    layer = m["layer"]
    if layer is not None and (
        not isinstance(layer, str) or not 0 < len(layer) <= 256 or not layer.isprintable()
    ):
        raise NNMarkError(f"{source}: field {at}layer must be a layer name or null")
    message = m.get("message")
    if message is not None and (not isinstance(message, str) or len(message) > MAX_TEXT):
        raise NNMarkError(f"{source}: field {at}message must be text of at most {MAX_TEXT}")
    for name in ("config", "data", "stored"):
        check_finite_json(m.get(name, {}), f"{source}: field {at}{name}")
    try:
        bits = str_to_bits(m["bits"])
    except NNMarkError as exc:
        raise NNMarkError(f"{source}: field {at}bits: {str(exc).split(': ', 1)[-1]}") from None
    return Mark(
        scheme=m["scheme"],
        config=dict(m["config"]),
        layer=layer,
        bits=bits,
        owner=owner,
        nonce=nonce,
        created=created,
        kdf=kdf,
        index=i,
        message=message,
        data=dict(m["data"]),
        stored=dict(stored),
    )
