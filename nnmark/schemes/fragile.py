"""Fragile integrity mark (Botta, Cavagnino, Esposito, "NeuNAC: a novel fragile watermarking
algorithm for integrity protection of neural networks", Information Sciences 2021; lecture 000).

Threat model: white-box; the question is not "whose model?" but "was it changed since marking?".
The mark lives in the model itself, so verification needs only the key and the suspect.

Written after training (`finalize`), in the least significant mantissa bit (LSB) of key-chosen
float32 weights ("slots", drawn from the key over every float32 parameter of >= 16 values):

1. every slot is cleared;
2. each tensor (every parameter and buffer: BatchNorm statistics included) gets a 16-bit digest
   (SHA-256 of its dtype, shape and bytes, slots cleared), written into its 16 digest slots;
3. a SHA-256 of the whole model (names, dtypes, shapes, bytes in key order; only the 256 hash
   slots cleared, so the digest bits are covered) is written into the 256 hash slots.

Any change, even one flipped bit anywhere (a slot included), breaks the whole hash: "modified".
Localisation: a tensor whose recomputed digest differs from its stored one changed. When the
mismatches could be slot bits alone (a flipped LSB that carries a digest or hash bit), that
hypothesis is checked against the whole hash: undo the flips; if the hash then agrees (up to the
flipped hash bits), exactly the tensors holding those slots are named. Missing, added, reshaped
or re-typed tensors are named too. A changed tensor escapes localisation with probability 2^-16.

Cost: each slot's weight changes by at most one unit in the last place (relative 2^-23); the
test suite measures the largest output change on the digits test set.

Verdict: "intact" when the stored and recomputed whole hashes agree, "modified" otherwise, with
`details["changed"]` (key order). Statistic: hash match (1 or 0). p-value: under H0 "the suspect
differs from the marked model", matching the stored 256-bit hash is a SHA-256 collision, chance
2^-256 (reported when intact); a mismatch gives 1.

Example::

    nnmark train --data digits --scheme fragile --out m.safetensors --key-out k.nnkey
    nnmark verify m.safetensors --key k.nnkey      # exit 0 intact, 1 modified
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.config import config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey
from nnmark.schemes import register
from nnmark.schemes.base import Scheme, unwrap
from nnmark.stats import DEFAULT_ALPHA
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

HASH_BITS = 256
DIGEST_BITS = 16
MIN_CARRIER = 16
#: Hash bits that may differ when only slot LSBs were flipped: a real mismatch differs in about
#: 128 of 256 bits, so at most 32 differing bits (chance below 2^-80) means "slots only".
SLOT_ONLY_HASH_DIFF = 32
NULL = (
    "H0: the suspect differs from the marked model; it then matches the stored 256-bit SHA-256 "
    "only by a collision, probability 2^-256 (the p-value when intact); per-tensor 16-bit "
    "digests localise a change"
)


@dataclass(frozen=True)
class FragileConfig:
    label = "fragile"


def _bits_of(digest: bytes, n: int) -> list[int]:
    return [(digest[i // 8] >> (7 - i % 8)) & 1 for i in range(n)]


def _header(name: str, t: torch.Tensor) -> bytes:
    return f"{name}|{str(t.dtype).replace('torch.', '')}|{list(t.shape)}".encode() + b"\0"


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


@register("fragile")
class Fragile(Scheme):
    Config = FragileConfig
    kind = "integrity"
    paper = (
        "Botta et al., NeuNAC: a novel fragile watermarking algorithm for integrity protection "
        "of neural networks, Information Sciences 2021"
    )

    def __init__(self, mark: Mark) -> None:
        super().__init__(mark)
        try:
            self.tensors: list[dict[str, Any]] = list(mark.data["tensors"])
            self.carriers: list[str] = list(mark.data["carriers"])
        except KeyError:
            raise NNMarkError("fragile mark without its tensor list in the key") from None
        self.names = [t["name"] for t in self.tensors]
        sizes = {t["name"]: int(t["numel"]) for t in self.tensors}
        total = HASH_BITS + DIGEST_BITS * len(self.tensors)
        ends: list[int] = []
        acc = 0
        for name in self.carriers:
            acc += sizes[name]
            ends.append(acc)
        if acc < total:
            raise NNMarkError(f"fragile needs {total} float32 weights to carry its hashes")
        # Distinct global positions drawn from the key (no O(parameters) permutation).
        gen = mark.generator("carriers")
        seen: set[int] = set()
        order: list[int] = []
        while len(order) < total:
            for v in torch.randint(0, acc, (2 * total,), generator=gen).tolist():
                if v not in seen and len(order) < total:
                    seen.add(v)
                    order.append(v)
        self.slots: list[tuple[str, int]] = []
        for g in order:
            i = bisect.bisect_right(ends, g)
            self.slots.append((self.carriers[i], g - (ends[i - 1] if i else 0)))
        self.hash_slots = self.slots[:HASH_BITS]
        self.digest_slots = {
            name: self.slots[HASH_BITS + DIGEST_BITS * k : HASH_BITS + DIGEST_BITS * (k + 1)]
            for k, name in enumerate(self.names)
        }
        self.held: dict[str, list[tuple[str, int]]] = {}
        for slot in self.slots:
            self.held.setdefault(slot[0], []).append(slot)

    @classmethod
    def plan(
        cls,
        model: nn.Module,
        key: OwnerKey,
        config: Any,
        *,
        bits: int | None = None,
        payload: tuple[int, ...] | None = None,
        data: DataBundle | None = None,
    ) -> Mark:
        inner = unwrap(model)
        state = inner.state_dict()
        params = dict(inner.named_parameters())
        tensors = [
            {
                "name": n,
                "numel": t.numel(),
                "dtype": str(t.dtype).replace("torch.", ""),
                "shape": list(t.shape),
            }
            for n, t in state.items()
        ]
        carriers = [
            n
            for n, t in state.items()
            if n in params and t.dtype == torch.float32 and t.numel() >= MIN_CARRIER
        ]
        needed = HASH_BITS + DIGEST_BITS * len(tensors)
        if sum(state[n].numel() for n in carriers) < needed:
            raise NNMarkError(f"fragile needs {needed} float32 weights to carry its hashes")
        return key.new_mark(
            cls.name,
            config_to_dict(config),
            None,
            (),
            data={"tensors": tensors, "carriers": carriers},
        )

    # ---- hashing ------------------------------------------------------------------------
    @staticmethod
    def _set(tensors: dict[str, torch.Tensor], slots: list[tuple[str, int]], bits: Any) -> None:
        """Write bits (a sequence of 0/1) into the slots' LSBs, in place."""
        groups: dict[str, tuple[list[int], list[int]]] = {}
        for (name, pos), bit in zip(slots, bits):
            g = groups.setdefault(name, ([], []))
            g[0].append(pos)
            g[1].append(int(bit))
        for name, (positions, vals) in groups.items():
            ints = tensors[name].view(torch.int32).view(-1)
            idx = torch.tensor(positions, dtype=torch.long)
            ints[idx] = (ints[idx] & ~1) | torch.tensor(vals, dtype=torch.int32)

    @staticmethod
    def _read(tensors: dict[str, torch.Tensor], slots: list[tuple[str, int]]) -> list[int]:
        """The slots' LSBs, in slot order."""
        cache: dict[str, list[int]] = {}
        out = []
        for name, pos in slots:
            if name not in cache:
                cache[name] = (tensors[name].view(torch.int32).view(-1) & 1).tolist()
            out.append(cache[name][pos])
        return out

    def _digest(self, name: str, t: torch.Tensor) -> list[int]:
        """16-bit digest of one tensor with every slot it holds cleared."""
        t = t.clone()
        mine = self.held.get(name, [])
        if mine:
            self._set({name: t}, mine, [0] * len(mine))
        return _bits_of(hashlib.sha256(_header(name, t) + _raw(t)).digest(), DIGEST_BITS)

    def _whole(self, tensors: dict[str, torch.Tensor]) -> list[int]:
        """SHA-256 of the whole model with only the hash slots cleared (digest slots covered)."""
        work = {n: tensors[n].clone() for n in {n for n, _ in self.hash_slots}}
        self._set(work, self.hash_slots, [0] * HASH_BITS)
        h = hashlib.sha256()
        for name in self.names:
            t = work.get(name, tensors[name])
            h.update(_header(name, t))
            h.update(_raw(t))
        return _bits_of(h.digest(), HASH_BITS)

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        state = unwrap(model).state_dict()  # shares storage with the model: writes are in place
        for t in self.tensors:
            if t["name"] not in state:
                raise NNMarkError(f"fragile: the model lost tensor {t['name']} during training")
        self._set(state, self.slots, [0] * len(self.slots))
        for name in self.names:
            self._set(state, self.digest_slots[name], self._digest(name, state[name]))
        self._set(state, self.hash_slots, self._whole(state))
        return model

    # ---- verification -------------------------------------------------------------------
    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        s = as_suspect(suspect)
        got: dict[str, torch.Tensor] = {}
        structural: dict[str, str] = {}
        for t in self.tensors:
            v = s.tensor(t["name"])
            if v is None:
                structural[t["name"]] = "missing"
                continue
            dtype = str(v.dtype).replace("torch.", "")
            if dtype != t.get("dtype", dtype) or list(v.shape) != t.get("shape", list(v.shape)):
                structural[t["name"]] = f"now {dtype} {list(v.shape)}"
                continue
            if v.numel() != t["numel"]:
                structural[t["name"]] = f"now {v.numel()} values"
                continue
            got[t["name"]] = v.detach().cpu().contiguous().clone()
        added = sorted(set(s.tensor_names()) - set(self.names))
        if structural or added:
            content = [
                n
                for n in self.names
                if n in got
                and all(c in got for c, _ in self.digest_slots[n])
                and self._read(got, self.digest_slots[n]) != self._digest(n, got[n])
            ]
            changed = [n for n in self.names if n in structural or n in content]
            return self._verdict(
                False,
                alpha,
                changed,
                reason="tensors missing, added, reshaped or re-typed",
                extra={"structural": structural, "added": added},
            )
        stored = self._read(got, self.hash_slots)
        if stored == self._whole(got):
            return self._verdict(True, alpha, [])
        return self._verdict(False, alpha, self._localise(got, stored))

    def _localise(self, got: dict[str, torch.Tensor], stored: list[int]) -> list[str]:
        digests = {n: self._digest(n, got[n]) for n in self.names}
        flipped: list[tuple[str, int]] = []  # digest slots whose bit disagrees with the content
        for n in self.names:
            read = self._read(got, self.digest_slots[n])
            flipped += [s for s, a, b in zip(self.digest_slots[n], read, digests[n]) if a != b]
        restored = {n: got[n].clone() for n in {n for n, _ in flipped}}
        restored = {**got, **restored}
        for slot in flipped:  # hypothesis: only these LSBs were flipped; undo them
            self._set(restored, [slot], [1 - self._read(restored, [slot])[0]])
        whole = self._whole(restored)
        differ = [slot for slot, a, b in zip(self.hash_slots, stored, whole) if a != b]
        if len(differ) <= SLOT_ONLY_HASH_DIFF:  # confirmed: slot bits alone changed
            touched = {n for n, _ in flipped + differ}
        else:  # the content changed: the tensors whose digest disagrees
            touched = {n for n in self.names if self._read(got, self.digest_slots[n]) != digests[n]}
        return [n for n in self.names if n in touched]

    def _verdict(
        self,
        intact: bool,
        alpha: float,
        changed: list[str],
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Verdict:
        if not intact and not changed and reason is None:
            reason = "the whole hash differs but no tensor could be localised (chance 2^-16)"
        return Verdict(
            self.name,
            "intact" if intact else "modified",
            "hash_match",
            float(intact),
            2.0**-HASH_BITS if intact else 1.0,
            alpha,
            HASH_BITS,
            NULL,
            reason=reason,
            details={"changed": changed, **(extra or {})},
        )
