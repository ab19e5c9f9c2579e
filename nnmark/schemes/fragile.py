"""Fragile integrity mark (Botta, Cavagnino, Esposito, ICPR workshops 2021; lecture 000).

Threat model: white-box; the question is not "whose model?" but "was it changed?". After
training (`finalize`), the least significant mantissa bit of key-chosen float32 weights is
cleared, a SHA-256 of the whole model (every parameter and buffer, in name order) is computed,
and its 256 bits are written into those LSBs; 16 more LSBs per tensor hold a digest of that
tensor, so verification names exactly which tensors (buffers included) changed. Any change, even
one flipped bit anywhere, breaks the hash: "modified". Writing LSBs changes each carrier weight
by at most one unit in the last place (relative 2^-23).

Verdict: "intact" when the stored and recomputed hashes agree (the chance that a modified model
still matches is 2^-256, the p-value reported), "modified" otherwise, with `details["changed"]`.
Example: ``nnmark train --data digits --scheme fragile --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class FragileConfig:
    label = "fragile"


def _bits_of(digest: bytes, n: int) -> list[int]:
    return [(digest[i // 8] >> (7 - i % 8)) & 1 for i in range(n)]


@register("fragile")
class Fragile(Scheme):
    Config = FragileConfig
    kind = "integrity"
    paper = "Botta et al., NeuNAC: A novel fragile watermarking algorithm for integrity protection of neural networks, 2021"

    def __init__(self, mark: Mark) -> None:
        super().__init__(mark)
        self.tensors: list[dict[str, Any]] = mark.data["tensors"]
        self.carriers: list[str] = mark.data["carriers"]
        gen = mark.generator("carriers")
        sizes = {t["name"]: t["numel"] for t in self.tensors}
        total = HASH_BITS + DIGEST_BITS * len(self.tensors)
        flat = torch.cat([torch.full((sizes[n],), i) for i, n in enumerate(self.carriers)])
        offsets = torch.cat([torch.arange(sizes[n]) for n in self.carriers])
        chosen = torch.randperm(len(flat), generator=gen)[:total]
        self.slots = [(self.carriers[int(flat[j])], int(offsets[j])) for j in chosen]

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
        tensors = [{"name": n, "numel": t.numel()} for n, t in state.items()]
        carriers = [
            n
            for n, t in state.items()
            if t.dtype == torch.float32
            and t.numel() >= 16
            and n in dict(unwrap(model).named_parameters())
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

    def _cleared(self, get: Any) -> dict[str, torch.Tensor]:
        """Every tensor, carriers with their LSB slots cleared (float32 viewed as int32)."""
        out: dict[str, torch.Tensor] = {}
        for t in self.tensors:
            v = get(t["name"])
            if v is None:
                raise KeyError(t["name"])
            out[t["name"]] = v.detach().cpu().contiguous().clone()
        for name, pos in self.slots:
            ints = out[name].view(torch.int32).view(-1)
            ints[pos] = ints[pos] & ~1
        return out

    def _hashes(self, tensors: dict[str, torch.Tensor]) -> tuple[list[int], dict[str, list[int]]]:
        whole = hashlib.sha256()
        per: dict[str, list[int]] = {}
        for t in self.tensors:
            raw = tensors[t["name"]].numpy().tobytes()
            whole.update(t["name"].encode() + b"\0" + raw)
            per[t["name"]] = _bits_of(hashlib.sha256(raw).digest(), DIGEST_BITS)
        return _bits_of(whole.digest(), HASH_BITS), per

    def _payload(self, tensors: dict[str, torch.Tensor]) -> list[int]:
        whole, per = self._hashes(tensors)
        return whole + [b for t in self.tensors for b in per[t["name"]]]

    @torch.no_grad()
    def finalize(self, model: nn.Module) -> nn.Module:
        state = unwrap(model).state_dict()
        cleared = self._cleared(state.get)
        for (name, pos), bit in zip(self.slots, self._payload(cleared)):
            ints = state[name].view(torch.int32).view(-1)
            ints[pos] = (ints[pos] & ~1) | bit
        return model

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        s = as_suspect(suspect)
        null = (
            "a model changed after marking matches the stored SHA-256 with probability "
            "2^-256; per-tensor 16-bit digests localise the change"
        )
        try:
            cleared = self._cleared(s.tensor)
        except KeyError as exc:
            return Verdict(
                self.name,
                "modified",
                "hash_match",
                0.0,
                1.0,
                alpha,
                HASH_BITS,
                null,
                reason=f"suspect has no tensor {exc.args[0]}",
            )
        if any(list(cleared[t["name"]].shape) == [] and t["numel"] != 1 for t in self.tensors):
            return Verdict(self.name, "modified", "hash_match", 0.0, 1.0, alpha, HASH_BITS, null)
        shapes_ok = all(cleared[t["name"]].numel() == t["numel"] for t in self.tensors)
        read = []
        for name, pos in self.slots:
            tensor = s.tensor(name)
            assert tensor is not None
            read.append(
                int(tensor.detach().cpu().contiguous().view(torch.int32).view(-1)[pos]) & 1
                if tensor.dtype == torch.float32 and pos < tensor.numel()
                else 0
            )
        if not shapes_ok:
            changed = [t["name"] for t in self.tensors if cleared[t["name"]].numel() != t["numel"]]
            return Verdict(
                self.name,
                "modified",
                "hash_match",
                0.0,
                1.0,
                alpha,
                HASH_BITS,
                null,
                reason="tensor sizes changed",
                details={"changed": changed},
            )
        whole, per = self._hashes(cleared)
        intact = read[:HASH_BITS] == whole
        changed = []
        start = HASH_BITS
        for t in self.tensors:
            if read[start : start + DIGEST_BITS] != per[t["name"]]:
                changed.append(t["name"])
            start += DIGEST_BITS
        return Verdict(
            self.name,
            "intact" if intact else "modified",
            "hash_match",
            float(intact),
            2.0**-HASH_BITS if intact else 1.0,
            alpha,
            HASH_BITS,
            null,
            details={"changed": [] if intact else changed},
        )
