"""Fragile integrity mark (Botta, Cavagnino, Esposito, "NeuNAC: a novel fragile watermarking
algorithm for integrity protection of neural networks", Information Sciences 2021; lecture 000).

Threat model: white-box; the question is not "whose model?" but "was it changed since marking?".
The mark lives in the model itself, so verification needs only the key and the suspect.

Written after training (`finalize`), in the least significant mantissa bit (LSB) of key-chosen
entries ("slots") of float32 tensors. *Carriers* are the float32 tensors of >= 32 values,
parameters and buffers (BatchNorm statistics) alike; every other tensor (a 10-value bias,
`num_batches_tracked`) is a *guest*.

1. every slot is cleared;
2. each float32 tensor gets a digest of itself (the first 16 bits of a SHA-256 of its name,
   dtype, shape and bytes, its own slots cleared) in its *own* LSBs: 16 of them, or one per
   value of a smaller tensor;
3. each guest's full 16-bit digest is also written into 16 slots in each of 7 key-chosen
   carriers (its hosts);
4. a SHA-256 of the whole model (names, dtypes, shapes, bytes in key order; only the 256 hash
   slots cleared, so every digest bit is covered) is written into 256 slots over the carriers.

Any change, even one flipped bit anywhere (a slot included), breaks the whole hash: "modified".
Localisation names exactly the changed tensors, because a tensor's evidence never sits only in
tensors that may have changed independently of it: a tensor's own digest bits are spoiled only
by a change to that tensor; a guest is also read from those of its hosts whose own digests
still match, by bitwise majority (an odd number of them), so a flipped slot in one host is
outvoted and names that host. A guest without float32 values (num_batches_tracked) whose hosts
all changed cannot be checked: it is listed in `details["unverified"]`, never guessed. When no
digest disagrees but the whole hash does, only hash slots changed (at most 32 of 256 stored
bits differ: a real content change differs in about 128, so the chance of a wrong call is below
2^-80) and the tensors holding them are named. Missing, added, reshaped or re-typed tensors are
named too. A changed tensor escapes its digest with probability 2^-16 (2^-b for a b-value
tensor whose hosts all changed too).

Cost: each slot's weight changes by at most one unit in the last place (relative 2^-23);
`benchmarks/fragile_output.py` measures the largest output change on the test set.

The tensors alone are not the model: the key also records the zoo architecture (and keyword
arguments) the mark was written on, and a suspect that states another one is not intact. An
ONNX file carries its own graph, which no key describes, so its weights are checked but it is
never certified intact (`details["weights_intact"]` is true when the architecture alone is at
fault). A model outside the zoo (a user's own class) is run by the verifier's own code: the key
records none.

Verdict: "intact" when the stored and recomputed whole hashes agree and the architecture is the
marked one, "modified" otherwise, with `details["changed"]` (key order). Statistic: hash match
(1 or 0). p-value: under H0 "the suspect differs from the marked model", matching the stored
256-bit hash is a SHA-256 collision, chance 2^-256 (reported when intact); a mismatch gives 1.

Example::

    nnmark train --data digits --scheme fragile --out m.safetensors --key-out k.nnkey
    nnmark verify m.safetensors --key k.nnkey      # exit 0 intact, 1 modified
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.config import config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.io import module_identity
from nnmark.keys import Mark, OwnerKey
from nnmark.schemes import register
from nnmark.schemes.base import MAX_HOST_VALUES, Scheme, check_fields, key_error, unwrap
from nnmark.stats import DEFAULT_ALPHA
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

HASH_BITS = 256
DIGEST_BITS = 16
MIN_CARRIER = 32
GUEST_HOSTS = 7
LAYOUT = 3
#: Longest architecture description a key may hold (io.zoo_identity of a zoo model).
MAX_ARCHITECTURE_CHARS = 4096
#: Most tensors a fragile key may list (so most carriers and guests): drawing the guests' hosts
#: costs guests x carriers (a random permutation of the carriers with room, per guest, which
#: the existing marks depend on), so a key is bounded before any is drawn (red team, session
#: 27: 24,500 of each took 112 s and 1 GB before the suspect was read). A zoo model's state
#: dict holds a few hundred tensors, a large resnet about a thousand; at this bound the draw
#: takes well under a second.
MAX_TENSORS = 10_000
#: Hash bits that may differ when only hash slots were flipped: a real mismatch differs in about
#: 128 of 256 bits, so at most 32 differing bits (chance below 2^-80) means "hash slots only".
SLOT_ONLY_HASH_DIFF = 32
NULL = (
    "H0: the suspect differs from the marked model; it then matches the stored 256-bit SHA-256 "
    "only by a collision, probability 2^-256 (the p-value when intact); per-tensor 16-bit "
    "digests localise a change"
)

Slot = tuple[str, int]


@dataclass(frozen=True)
class FragileConfig:
    """No options: the slots and the digest are the key's and the model's."""


def _bits_of(digest: bytes, n: int) -> list[int]:
    return [(digest[i // 8] >> (7 - i % 8)) & 1 for i in range(n)]


def _header(name: str, t: torch.Tensor) -> bytes:
    return f"{name}|{str(t.dtype).replace('torch.', '')}|{list(t.shape)}".encode() + b"\0"


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _majority(copies: list[list[int]]) -> list[int]:
    """Bitwise majority of an odd number of equal-length bit lists."""
    return [int(2 * sum(col) > len(col)) for col in zip(*copies)]


class _Room:
    """The carriers with room for a guest's digest, kept up to date as slots are taken: those
    with room for two digests while any has, else those with room for one. Rebuilding both lists
    per guest cost guests x carriers (red team, session 27: 112 s and 1 GB for a 6 MB key of
    24,500 of each). Free room only shrinks, so a carrier leaves a list once and never comes
    back; the lists stay in carrier order, the order the rebuild gave, so a key's hosts (and so
    every existing mark) are the same bit for bit."""

    def __init__(self, carriers: list[str], free: dict[str, int]) -> None:
        self.free = free
        self.order = {c: i for i, c in enumerate(carriers)}
        self.wide = [c for c in carriers if free[c] >= 2 * DIGEST_BITS]
        self.narrow = [c for c in carriers if free[c] >= DIGEST_BITS]

    def carriers(self) -> list[str]:
        """The carriers a guest's hosts are drawn from, in carrier order."""
        if not (self.wide or self.narrow):
            raise NNMarkError("fragile: no carrier has room left for a guest's digest")
        return self.wide or self.narrow

    def take(self, carrier: str, slots: int) -> None:
        """`slots` more positions of `carrier` are used."""
        before = self.free[carrier]
        self.free[carrier] = after = before - slots
        for room, need in ((self.wide, 2 * DIGEST_BITS), (self.narrow, DIGEST_BITS)):
            if before >= need > after:
                del room[bisect.bisect_left(room, self.order[carrier], key=self.order.__getitem__)]


@register("fragile")
class Fragile(Scheme):
    Config = FragileConfig
    kind = "integrity"
    takes_bits = False
    paper = (
        "Botta et al., NeuNAC: a novel fragile watermarking algorithm for integrity protection "
        "of neural networks, Information Sciences 2021"
    )

    @classmethod
    def check_key(cls, mark: Mark) -> None:
        if mark.data.get("layout") != LAYOUT:
            raise key_error(
                mark,
                "data.layout",
                "is an older layout (layout 2 did not cover the architecture that runs the "
                "weights, layout 1 could not localise every change); mark the model again",
            )
        check_fields(mark, {"layout", "tensors", "carriers", "architecture"})
        arch = mark.data["architecture"]
        if arch is not None and (not isinstance(arch, str) or len(arch) > MAX_ARCHITECTURE_CHARS):
            raise key_error(mark, "data.architecture", "must be null or a short string")
        if mark.bits or mark.layer is not None or mark.stored:
            raise key_error(mark, "bits", "must be empty (and layer null, stored empty)")
        tensors = mark.data["tensors"]
        if not isinstance(tensors, list) or not 1 <= len(tensors) <= MAX_TENSORS:
            raise key_error(mark, "data.tensors", f"must list 1 to {MAX_TENSORS:,} tensors")
        names: set[str] = set()
        for i, t in enumerate(tensors):
            if not isinstance(t, dict) or set(t) != {"name", "numel", "dtype", "shape"}:
                raise key_error(mark, f"data.tensors[{i}]", "must be {name, numel, dtype, shape}")
            if not isinstance(t["name"], str) or not t["name"] or t["name"] in names:
                raise key_error(mark, f"data.tensors[{i}].name", "must be a distinct name")
            names.add(t["name"])
            shape = t["shape"]
            if not isinstance(shape, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in shape
            ):
                raise key_error(mark, f"data.tensors[{i}].shape", "must be non-negative integers")
            if (
                type(t["numel"]) is not int
                or t["numel"] != math.prod(shape)
                or t["numel"] > MAX_HOST_VALUES
            ):
                raise key_error(mark, f"data.tensors[{i}].numel", "must be the shape's size")
            if not isinstance(t["dtype"], str) or len(t["dtype"]) > 32:
                raise key_error(mark, f"data.tensors[{i}].dtype", "must be a dtype name")
        carriers = mark.data["carriers"]
        if (
            not isinstance(carriers, list)
            or not all(isinstance(c, str) and c in names for c in carriers)
            or len(set(carriers)) != len(carriers)
        ):
            raise key_error(mark, "data.carriers", "must name distinct tensors of the list")
        listed = {t["name"]: t for t in tensors}
        if not carriers or any(
            listed[c]["dtype"] != "float32" or listed[c]["numel"] < MIN_CARRIER for c in carriers
        ):
            raise key_error(
                mark,
                "data.carriers",
                f"must be float32 tensors of at least {MIN_CARRIER:,} values (plan's carriers)",
            )

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        super().__init__(mark, data)
        self.tensors: list[dict[str, Any]] = list(mark.data["tensors"])
        self.carriers: list[str] = list(mark.data["carriers"])
        self.architecture: str | None = mark.data["architecture"]
        self.names = [t["name"] for t in self.tensors]
        sizes = {t["name"]: int(t["numel"]) for t in self.tensors}
        floats = [t["name"] for t in self.tensors if t["dtype"] == "float32"]
        # a tensor's own digest bits: 16, or one per value of a smaller float32 tensor
        self.own_bits = {n: min(DIGEST_BITS, sizes[n]) for n in floats}
        self.guests = [n for n in self.names if self.own_bits.get(n, 0) < DIGEST_BITS]
        gen = mark.generator("carriers")
        used: dict[str, set[int]] = {n: set() for n in floats}

        def draw(name: str, k: int) -> list[Slot]:
            """k positions of `name` no other slot uses (rejection sampling, O(k) memory)."""
            out: list[Slot] = []
            while len(out) < k:
                for v in torch.randint(0, sizes[name], (2 * k,), generator=gen).tolist():
                    if v not in used[name] and len(out) < k:
                        used[name].add(v)
                        out.append((name, v))
            return out

        self.own = {n: draw(n, self.own_bits[n]) for n in floats}
        ends: list[int] = []
        acc = 0
        for c in self.carriers:
            acc += sizes[c]
            ends.append(acc)
        if acc - DIGEST_BITS * len(self.carriers) < HASH_BITS + DIGEST_BITS * len(self.guests):
            raise NNMarkError("fragile: the model has too few float32 values for its hashes")
        self.hash_slots: list[Slot] = []
        while len(self.hash_slots) < HASH_BITS:  # spread over the carriers by size
            for g in torch.randint(0, acc, (2 * HASH_BITS,), generator=gen).tolist():
                i = bisect.bisect_right(ends, g)
                name, pos = self.carriers[i], g - (ends[i - 1] if i else 0)
                if pos not in used[name] and len(self.hash_slots) < HASH_BITS:
                    used[name].add(pos)
                    self.hash_slots.append((name, pos))
        self.guest_slots: dict[str, list[list[Slot]]] = {}
        self.hosts: dict[str, list[str]] = {}
        room = _Room(self.carriers, {c: sizes[c] - len(used[c]) for c in self.carriers})
        for g in self.guests:
            carriers = room.carriers()
            pick = torch.randperm(len(carriers), generator=gen)[:GUEST_HOSTS].tolist()
            hosts = [carriers[i] for i in sorted(pick)]
            if len(hosts) % 2 == 0 and len(hosts) > 1:  # an odd number of copies: no tie
                hosts = hosts[:-1]
            self.hosts[g] = hosts
            self.guest_slots[g] = [draw(h, DIGEST_BITS) for h in hosts]
            for h in hosts:
                room.take(h, DIGEST_BITS)
        self.held: dict[str, list[Slot]] = {n: [(n, p) for p in used[n]] for n in floats}

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
        state = unwrap(model).state_dict()
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
            n for n, t in state.items() if t.dtype == torch.float32 and t.numel() >= MIN_CARRIER
        ]
        if not carriers:
            raise NNMarkError(f"fragile needs a float32 tensor of >= {MIN_CARRIER} values")
        mark = key.new_mark(
            cls.name,
            config_to_dict(config),
            None,
            (),
            data={
                "layout": LAYOUT,
                "tensors": tensors,
                "carriers": carriers,
                "architecture": module_identity(unwrap(model)),
            },
        )
        cls(mark)  # fails now, not after training, if the slots do not fit
        return mark

    # ---- hashing ------------------------------------------------------------------------
    @staticmethod
    def _set(tensors: dict[str, torch.Tensor], slots: list[Slot], bits: Any) -> None:
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
    def _read(tensors: dict[str, torch.Tensor], slots: list[Slot]) -> list[int]:
        """The slots' LSBs, in slot order (only the slots are gathered, not whole tensors)."""
        groups: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(slots):
            groups.setdefault(name, []).append(i)
        out = [0] * len(slots)
        for name, where in groups.items():
            idx = torch.tensor([slots[i][1] for i in where], dtype=torch.long)
            bits = (tensors[name].view(torch.int32).view(-1)[idx] & 1).tolist()
            for i, b in zip(where, bits):
                out[i] = b
        return out

    def _digest(self, name: str, t: torch.Tensor) -> list[int]:
        """16-bit digest of one tensor with every slot it holds cleared."""
        mine = self.held.get(name, [])
        if mine:
            t = t.clone()
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
        for slots in self.held.values():
            self._set(state, slots, [0] * len(slots))
        for n, slots in self.own.items():
            self._set(state, slots, self._digest(n, state[n])[: len(slots)])
        for g in self.guests:
            digest = self._digest(g, state[g])
            for slots in self.guest_slots[g]:
                self._set(state, slots, digest)
        self._set(state, self.hash_slots, self._whole(state))
        return model

    # ---- verification -------------------------------------------------------------------
    def unreadable_verdict(self, reason: str, alpha: float = DEFAULT_ALPHA) -> Verdict:
        """Nothing read (e.g. a served model, which exposes no weights): not shown intact, and
        no tensor named as changed."""
        return Verdict(
            self.name,
            "modified",
            "hash_match",
            0.0,
            1.0,
            alpha,
            HASH_BITS,
            NULL,
            reason=reason,
            details={"unread": True},
        )

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
            changed, unverified = self._localise(got, structural)
            return self._verdict(
                False,
                alpha,
                changed,
                unverified,
                reason="tensors missing, added, reshaped or re-typed",
                extra={"structural": structural, "added": added},
            )
        stored = self._read(got, self.hash_slots)
        if stored == self._whole(got):
            unrun = self._architecture_change(s)
            if unrun is None:
                return self._verdict(True, alpha, [], [])
            return self._verdict(
                False,
                alpha,
                [],
                [],
                reason=f"every tensor is intact, but {unrun}",
                extra={"weights_intact": True, "architecture": s.architecture()},
            )
        changed, unverified = self._localise(got, {}, stored)
        return self._verdict(False, alpha, changed, unverified)

    def _architecture_change(self, s: Suspect) -> str | None:
        """Why what runs the suspect's tensors is not what ran the marked model (None: it is):
        the tensors alone are not the model (red team, session 25: an ONNX graph with every
        Relu turned into a Sigmoid, or a constant added to the output, changed 93-100 % of the
        answers and read intact). The key records the zoo architecture it was written on
        (io.zoo_identity; None for a model outside the zoo, whose code is the verifier's)."""
        if s.own_graph is not None:
            return s.own_graph
        arch = s.architecture()
        if arch == self.architecture:
            return None
        was = self.architecture or "a model outside nnmark's zoo"
        return f"the suspect's architecture ({arch or 'none named'}) is not the marked one ({was})"

    def _localise(
        self,
        got: dict[str, torch.Tensor],
        structural: dict[str, str],
        stored_hash: list[int] | None = None,
    ) -> tuple[list[str], list[str]]:
        """(changed tensors, guests that could not be checked), both in key order."""
        changed = set(structural)
        for n, slots in self.own.items():  # a tensor's own bits: only it can spoil them
            if n in got and self._read(got, slots) != self._digest(n, got[n])[: len(slots)]:
                changed.add(n)
        intact = {c for c in self.carriers if c in got and c not in changed}
        unverified = []
        for g in self.guests:
            if g not in got or g in changed:
                continue
            readable = [(h, sl) for h, sl in zip(self.hosts[g], self.guest_slots[g]) if h in intact]
            if not readable:  # its own bits (fewer than 16, maybe none) are all there is
                if not self.own_bits.get(g):
                    unverified.append(g)
                continue
            copies = [self._read(got, sl) for _, sl in readable]
            votes = copies if len(copies) % 2 else copies[:-1]
            stored = _majority(votes)
            if stored != self._digest(g, got[g]):
                changed.add(g)
            else:  # the guest is intact: a host whose copy disagrees had a slot changed
                changed.update(h for (h, _), cp in zip(readable, copies) if cp != stored)
        if stored_hash is not None and not changed:  # only hash slots can differ now
            whole = self._whole(got)
            differ = [slot for slot, a, b in zip(self.hash_slots, stored_hash, whole) if a != b]
            if len(differ) <= SLOT_ONLY_HASH_DIFF:
                changed.update(n for n, _ in differ)
        return [n for n in self.names if n in changed], [n for n in self.names if n in unverified]

    def _verdict(
        self,
        intact: bool,
        alpha: float,
        changed: list[str],
        unverified: list[str],
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Verdict:
        if not intact and not changed and reason is None:
            reason = "the whole hash differs but no tensor could be localised" + (
                f" (unverifiable: {', '.join(unverified)})" if unverified else " (chance 2^-16)"
            )
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
            details={"changed": changed, "unverified": unverified, **(extra or {})},
        )
