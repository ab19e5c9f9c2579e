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
std (stored in the key). The default, 8, is the robustness choice: at 1 std a 50 % magnitude
prune leaves BER 0.5 (measured on digits, 256 bits), at 3 std 0.18, at 8 std 0 (also at 1024 bits),
at the same test accuracy. Training adds lam * sum_j ((p_j - q_j) / delta)^2, q_j the nearest point
of bit j's coset to the current p_j (held fixed within a step): the weights are pulled to the
lattice, a quarter step from the nearest point of the other coset. lam = 0.1 is the fidelity
choice: on digits (benchmarks/results/stdm_capacity.md, 3 seeds) it embeds up to 2048 bits with
BER 0 (at most 0.2 % after a 50 % prune) within -0.65 to +0.37 points of plain accuracy, as
Uchida does at the sizes Uchida can hold (<= 256 bits here; 512 already leaves BER 0.02), while
lam = 1 cost 0.5 to 1.4 points. Extraction: the nearest coset.
Verification: BER and the exact binomial p-value (the dither makes the extracted bits of a model
that never saw the key fair coins).

Example: ``nnmark train --data digits --scheme stdm --bits 1024 --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.config import check, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey, payload_bits
from nnmark.layers import default_host_layer, get_layer
from nnmark.schemes import register
from nnmark.schemes.base import Batch, Evidence, Scheme, unwrap
from nnmark.suspect import Suspect


@dataclass(frozen=True)
class STDMConfig:
    label = "stdm"
    delta: float = 8.0
    lam: float = 0.1
    layer: str | None = None

    def __post_init__(self) -> None:
        check(self.delta > 0, f"delta must be > 0, got {self.delta}")
        check(self.lam > 0, f"lam must be > 0, got {self.lam}")


@register("stdm")
class STDM(Scheme):
    Config = STDMConfig
    config: STDMConfig
    kind = "whitebox"
    paper = "Li et al., Spread-Transform Dither Modulation Watermarking of DNNs, JISA 2021"

    def __init__(self, mark: Mark) -> None:
        super().__init__(mark)
        if mark.layer is None:
            raise NNMarkError("stdm mark without a host layer in the key")
        t, m = len(mark.bits), int(mark.data["numel"])
        seg = m // t
        self.step_size = float(mark.data["delta"])
        self.perm = torch.randperm(m, generator=mark.generator("segments"))[: t * seg].view(t, seg)
        u = torch.randn(t, seg, generator=mark.generator("projection"))
        self.u = u / u.norm(dim=1, keepdim=True)
        self.dither = torch.rand(t, generator=mark.generator("dither")) * self.step_size
        self.bits = torch.tensor(mark.bits, dtype=torch.float32)

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
        std = float(weight.detach().float().std()) or 1e-2
        chosen = payload or payload_bits(key.owner, key.nonce, n, len(key.marks))
        data_ = {
            "shape": list(weight.shape),
            "numel": weight.numel(),
            "delta": round(config.delta * std, 8),
        }
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
            p = self.projections(t.detach().float().cpu())
            r = torch.remainder(p - self.dither, self.step_size) / self.step_size  # in [0, 1)
            bits = ((r > 0.25) & (r <= 0.75)).long()
        return Evidence(bits=tuple(bits.tolist()), details={"layer": self.mark.layer})
