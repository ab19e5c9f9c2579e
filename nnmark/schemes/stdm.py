"""Spread-transform dither modulation (ST-DM) of a layer's weights, after Li et al. 2021
("Spread-Transform Dither Modulation Watermarking of Deep Neural Network", J. Inf. Sec. Appl.).

Threat model: white-box. The owner reads the suspect's weights of one layer.

Host: the layer's *raw* weights (all M entries, not Uchida's filter average), so capacity is up to
M bits instead of M / out_channels. A key-derived permutation splits them into T disjoint segments
of L = M // T entries, one per bit; bit j is carried by the projection p_j = u_j . w_seg(j) on a
key-derived unit vector u_j (the spread transform: disjoint supports make the projections
independent). Dither modulation quantises p_j on the coset of its bit::

    bit b  <->  p in delta * Z + d_j + b * delta / 2

with a key-derived dither d_j ~ U[0, delta) and step delta = `delta` x the layer's initial weight
std, 1 / sqrt(3 fan_in) for PyTorch's default initialisation: computed from the host's shape,
never read from the key (a key whose step could be chosen freely was forged: a step of 0 made
every bit match, and a search over the step fitted a plain model's bits). The default, 8, is the robustness choice: at 1 std a 50 % magnitude
prune leaves BER 0.5 (measured on digits, 256 bits), at 3 std 0.18, at 8 std 0 (also at 1024 bits),
at the same test accuracy. Training adds lam * sum_j ((p_j - q_j) / delta)^2, q_j the nearest point
of bit j's coset to the current p_j (held fixed within a step): the weights are pulled to the
lattice, a quarter step from the nearest point of the other coset. lam = 0.1 is the fidelity
choice: on digits (benchmarks/results/stdm_capacity.md, 3 seeds) it embeds up to 2048 bits with
BER 0 (at most 0.2 % after a 50 % prune) within -0.65 to +0.37 points of plain accuracy, as
Uchida does at the sizes Uchida can hold (<= 256 bits here; 512 already leaves BER 0.02), while
lam = 1 cost 0.5 to 1.4 points. Extraction: the nearest coset.
Verification: BER and the exact binomial p-value (the dither makes the extracted bits of a model
that never saw the key fair coins, and the payload is masked as for every bit-carrying mark),
and the bits' scores (`_scores`: how close each projection sits to its bit's lattice point,
exactly standard normal under the same null; nnmark.schemes.base.SCORE_NULL).

Example: ``nnmark train --data digits --scheme stdm --bits 1024 --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.config import check, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey, check_sha256, payload_bits
from nnmark.layers import default_host_layer, get_layer
from nnmark.schemes import register
from nnmark.schemes.base import (
    Batch,
    Evidence,
    Scheme,
    check_fields,
    check_host_layer,
    check_shape,
    key_error,
    unwrap,
)
from nnmark.stats import normal_isf
from nnmark.suspect import Suspect


@dataclass(frozen=True)
class STDMConfig:
    delta: float = 8.0
    lam: float = 0.1
    layer: str | None = None

    def __post_init__(self) -> None:
        check(0.1 <= self.delta <= 64, f"delta must be in [0.1, 64], got {self.delta}")
        check(0 < self.lam <= 1e3, f"lam must be in (0, 1000], got {self.lam}")


def init_std(shape: Sequence[int]) -> float:
    """The std of PyTorch's default (Kaiming-uniform, a = sqrt(5)) initialisation of a weight
    of this shape: 1 / sqrt(3 fan_in). A function of the shape alone, so a verifier re-derives
    the step size from the suspect's own tensor."""
    return 1.0 / math.sqrt(3 * math.prod(shape[1:]))


#: The least 2 d (and 1 - 2 d) a score is read at: the float32 dither's resolution, 2^-24 of a
#: cell, with room (each score is then at most Phi^-1(1 - 2^-20) = 4.9).
DITHER_FLOOR = 2.0**-20


@register("stdm")
class STDM(Scheme):
    Config = STDMConfig
    config: STDMConfig
    kind = "whitebox"
    realigns_to_marked = True
    paper = "Li et al., Spread-Transform Dither Modulation Watermarking of DNNs, JISA 2021"

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        super().__init__(mark, data)
        self.step_size = self.config.delta * init_std(mark.data["shape"])
        self.dither = (
            torch.rand(len(mark.bits), generator=mark.generator("dither")) * self.step_size
        )
        self.bits = self.target.float()

    # The segments and projections are as large as the host layer: derived on first use, after
    # the suspect's tensor was found with the key's shape (a key alone allocates nothing big).
    @functools.cached_property
    def perm(self) -> torch.Tensor:
        t, m = len(self.mark.bits), math.prod(self.mark.data["shape"])
        seg = m // t
        return torch.randperm(m, generator=self.mark.generator("segments"))[: t * seg].view(t, seg)

    @functools.cached_property
    def u(self) -> torch.Tensor:
        t, seg = self.perm.shape
        u = torch.randn(t, seg, generator=self.mark.generator("projection"))
        return u / u.norm(dim=1, keepdim=True)

    @classmethod
    def check_key(cls, mark: Mark) -> None:
        check_fields(mark, {"shape"})
        shape = check_shape(mark, "data.shape", mark.data["shape"], dims=(2, 5))
        check_host_layer(mark)
        if not 1 <= len(mark.bits) <= math.prod(shape):
            raise key_error(mark, "bits", f"must hold 1 to {math.prod(shape)} bits here")
        if set(mark.stored) - {"marked_sha256"}:
            raise key_error(mark, "stored", "may hold only marked_sha256")
        if mark.stored:
            check_sha256(mark.stored["marked_sha256"], f"{mark.scheme}: stored.marked_sha256")

    @classmethod
    def capacity(cls, model: nn.Module, config: Any, data: DataBundle | None = None) -> int:
        """One bit per raw weight of the host layer (segments of one entry at the limit)."""
        return get_layer(model, config.layer or default_host_layer(model)).weight.numel()

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
        layer = config.layer or default_host_layer(model)
        weight = get_layer(model, layer).weight
        n = len(payload) if payload is not None else (bits or 64)
        if n < 1:
            raise NNMarkError("a mark needs at least 1 bit")
        if n > weight.numel():
            raise NNMarkError(
                f"layer {layer} holds at most {weight.numel()} bits (one weight each); asked for {n}"
            )
        if weight.dim() < 2:
            raise NNMarkError(f"layer {layer} has no weight matrix to host a mark")
        chosen = payload or payload_bits(key.owner, key.nonce, n, len(key.marks))
        data_ = {"shape": list(weight.shape)}
        return key.new_mark(cls.name, config_to_dict(config), layer, chosen, data=data_)

    def projections(self, weight: torch.Tensor) -> torch.Tensor:
        """p_j = u_j . w[segment j], one per bit."""
        w = weight.reshape(-1)
        return (w[self.perm.to(w.device)] * self.u.to(w.device, w.dtype)).sum(1)

    def _offset(self, device: torch.device) -> torch.Tensor:
        return self.dither.to(device) + self.bits.to(device) * (self.step_size / 2)

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        weight = get_layer(unwrap(model), self.mark.layer or "").weight
        p = self.projections(weight)
        off = self._offset(p.device)
        with torch.no_grad():
            q = torch.round((p - off) / self.step_size) * self.step_size + off
        return self.config.lam * (((p - q) / self.step_size) ** 2).sum()

    def evidence(self, suspect: Suspect) -> Evidence:
        name = f"{self.mark.layer}.weight"
        t = suspect.tensor(name)
        if t is None:
            return Evidence(reason=f"suspect has no tensor {name}")
        if list(t.shape) != self.mark.data["shape"]:
            return Evidence(
                reason=f"tensor {name} has shape {list(t.shape)}, the key's {self.mark.data['shape']}"
            )
        with torch.no_grad():
            p = self.projections(t.detach().double().cpu())
            r = torch.remainder(p - self.dither.double(), self.step_size) / self.step_size
            bits = ((r > 0.25) & (r <= 0.75)).long()
        return Evidence(
            bits=tuple(bits.tolist()), scores=self._scores(p, r), details={"layer": self.mark.layer}
        )

    def _scores(self, p: torch.Tensor, r: torch.Tensor) -> tuple[float, ...] | None:
        """Per bit, Phi^-1(1 - 2 d), d the distance of r (the projection's place in its lattice
        cell, in [0, 1)) from the target bit's point, signed +1 for a 1: for a model that never
        saw the key the key's uniform dither makes r uniform, so d is uniform on [0, 1/2] and
        the score a standard normal, positive exactly where the bit reads right.

        The dither is float32 (multiples of 2^-24 of a cell; torch.rand does draw 0), so 2 d is
        kept within [DITHER_FLOOR, 1 - DITHER_FLOOR]: below that the distribution is the
        dither's grid, not uniform (a host of zeros, one dither of 0: a 4-bit key read at p
        1.5e-70 with BER 0.5, review session 30). None where the projections are not finite or
        so large that subtracting the dither rounds it away (a host scaled by 1e30)."""
        if not bool(torch.isfinite(p).all()):
            return None
        if float(p.abs().max()) * 2.0**-52 > self.step_size * DITHER_FLOOR:
            return None
        t = self.target.double()
        d = torch.remainder(r - t / 2 + 0.5, 1.0).sub(0.5).abs()
        two_d = torch.clamp(2 * d, DITHER_FLOOR, 1 - DITHER_FLOOR)
        return tuple(float(v) for v in (2 * t - 1).numpy() * normal_isf(two_d.numpy()))

    # ---- realignment (verify --reference) ----------------------------------------------
    def blind_reference(self, reference: nn.Module) -> nn.Module:
        """Erase the key's projections: each segment loses its component along u_j, so every
        p_j is 0 in the copy (the penalty only ever moved the weights along the u_j)."""
        weight = get_layer(unwrap(reference), self.mark.layer or "").weight
        if list(weight.shape) != self.mark.data["shape"]:
            raise NNMarkError(f"reference layer {self.mark.layer} is not the key's shape")
        with torch.no_grad():
            p = self.projections(weight.detach().float().cpu())
            flat = weight.view(-1)
            flat[self.perm.flatten().to(flat.device)] -= (
                (p[:, None] * self.u).flatten().to(flat.device, flat.dtype)
            )
        return reference
