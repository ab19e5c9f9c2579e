"""Uchida, Nagai, Sakazawa, Satoh: "Embedding Watermarks into Deep Neural Networks" (ICMR 2017).

Threat model: white-box. The owner reads the suspect's weights.

The host vector w (M values) is a layer's weights averaged over its filters; a secret matrix X
(T x M) projects it to T bits, b_j = step(sum_i X_ji w_i). Training adds lam * E_R to the task
loss. The paper's E_R (`loss=bce`, the default) is the binary cross-entropy of sigmoid(Xw)
against the bits, summed over bits; `loss=hinge` stops pushing a bit once it is `margin` past
zero in units of its natural spread: the histogram stays the plain model's, at a cost in
robustness (UchidaConfig says which); `vector=unit_kernels` reads the bits from unit-length
kernels instead of the filter mean, so no rescaling of channels reaches them.
Key types (the paper's three): `direct` (each row picks one weight), `diff` (+1/-1 on two
weights), `random` (N(0, 1) entries; the paper's choice: lowest loss and an unchanged weight
histogram). X is re-derived from the owner key, never stored. What is embedded is the payload
XOR the key's secret mask: raw weight signs (what a `direct` key reads) are not fair coins, but
matches against masked bits are, whatever the payload (nnmark.schemes.base.BIT_NULL).
A random key also scores each bit, x_j.w / |w|: for a model that never saw the key an
independent standard normal whatever w (x_j ~ N(0, I) from the KDF), so a weak mark read
right by small margins (a fingerprint pooled with others) is tested on the margins too
(SCORE_NULL; the smaller p, doubled).

Example::

    nnmark train --data digits --model cnn --scheme uchida --bits 64 --set key_type=random \\
        --out marked.safetensors --key-out acme.nnkey
    nnmark verify marked.safetensors --key acme.nnkey
    # a mark the host layer's histogram does not show: add
    #   --set loss=hinge --set vector=unit_kernels
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey, payload_bits
from nnmark.layers import default_host_layer, get_layer, host_vector, unit_kernel_vector
from nnmark.schemes import register
from nnmark.schemes.base import (
    MAX_DERIVED_VALUES,
    Batch,
    Evidence,
    NotRealignable,
    Scheme,
    check_fields,
    check_host_layer,
    check_shape,
    key_error,
    unwrap,
)
from nnmark.suspect import Suspect

#: What the bits are read from (`vector`): the paper's filter mean, or the mean of unit-length
#: kernels, which no positive rescaling of channels changes.
HOST_VECTORS = {"mean": host_vector, "unit_kernels": unit_kernel_vector}
#: lam when the config leaves it unset, per loss.
DEFAULT_LAM = {"bce": 0.05, "hinge": 0.002}


@dataclass(frozen=True)
class UchidaConfig:
    """`loss=bce` (default) is the paper's. It reaches 0 only at infinite logits, so it pushes
    the host weights outwards for as long as training lasts, and the host layer's histogram
    shows it (MNIST at the paper's lam 0.01 with SGD: host std 1.8x its plain twin's on the
    cnn, 3.5x on resnet20, as much as the logits it reaches need; KS distance 30x / 38x the
    plain-vs-plain one; benchmarks/results/uchida_paper_settings*.md), which is what the
    `detect` attack finds. `loss=hinge` reads each bit's logit in units of its spread
    on the current weights, z_j = x_j.v / (|x_j| rms(v)) (a standard normal for a random v),
    and pushes only while z_j is short of `margin`: the weights move as far as the bits need
    and no further. `vector=unit_kernels` reads the bits from the mean of unit-length kernels
    instead of the filter mean (nnmark.layers.unit_kernel_vector), which no positive rescaling
    of channels changes. `lam` (default 0.05 for bce, 0.002 for hinge) sets how fast: a large
    lam overshoots the margin and inflates the weights again.

    Measured on digits, 3 seeds (benchmarks/results/uchida_loss_tradeoff.md): hinge leaves the
    host's histogram as its plain twin's (host std 0.96x, against bce's 1.66x) and `detect`
    neither flags its layer nor removes it; on the filter mean, `scale` (free for the thief)
    flips its small-margin bits, which `unit_kernels` prevents. What bce's inflated weights buy:
    they survive 90 % magnitude pruning with recovery fine-tuning, which removes the hinge mark
    within the fidelity budget. bce stays the default until a hinge survives that too."""

    key_type: Literal["direct", "diff", "random"] = "random"
    lam: float | None = None
    layer: str | None = None
    loss: Literal["bce", "hinge"] = "bce"
    margin: float = 0.5
    vector: Literal["mean", "unit_kernels"] = "mean"

    def __post_init__(self) -> None:
        if self.lam is not None:
            check(0 < self.lam <= 1e3, f"lam must be in (0, 1000], got {self.lam}")
        check(0 < self.margin <= 10, f"margin must be in (0, 10], got {self.margin}")

    @property
    def penalty_weight(self) -> float:
        return self.lam if self.lam is not None else DEFAULT_LAM[self.loss]


#: The largest projection X (bits x filter-averaged values) a key may make a verifier build:
#: 2^26 floats, 256 MiB (the paper's: 256 x 576).
MAX_PROJECTION = MAX_DERIVED_VALUES


def projection(mark: Mark, m: int, key_type: str) -> torch.Tensor:
    """The secret T x M matrix X, re-derived from the key (same key -> same X, bit for bit)."""
    t = len(mark.bits)
    g = mark.generator("projection")
    if t > m:
        raise NNMarkError(f"key: {t} bits on a host of {m} values (at most one bit per value)")
    if key_type == "random":
        return torch.randn(t, m, generator=g)
    x = torch.zeros(t, m)
    rows = torch.arange(t)
    if key_type == "direct":
        x[rows, torch.randperm(m, generator=g)[:t]] = 1.0
        return x
    # diff: +1 and -1 on two distinct weights per row
    if 2 * t <= m:
        perm = torch.randperm(m, generator=g)
        x[rows, perm[:t]] = 1.0
        x[rows, perm[t : 2 * t]] = -1.0
    else:
        for j in range(t):
            a, b = torch.randperm(m, generator=g)[:2].tolist()
            x[j, a], x[j, b] = 1.0, -1.0
    return x


@register("uchida")
class Uchida(Scheme):
    Config = UchidaConfig
    kind = "whitebox"
    #: added after key format v2 (a default mark's key and bits stay what they were)
    later_options = ("loss", "margin", "vector")
    paper = "Uchida et al., Embedding Watermarks into Deep Neural Networks, ICMR 2017"

    config: UchidaConfig

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        super().__init__(mark, data)
        self._x: torch.Tensor | None = None
        self._target = self.target.float()

    @classmethod
    def check_key(cls, mark: Mark) -> None:
        check_fields(mark, {"shape"})
        shape = check_shape(mark, "data.shape", mark.data["shape"], dims=(2, 5))
        check_host_layer(mark)
        if not 1 <= len(mark.bits) <= math.prod(shape[1:]):
            raise key_error(mark, "bits", f"must hold 1 to {math.prod(shape[1:])} bits here")
        if len(mark.bits) * math.prod(shape[1:]) > MAX_PROJECTION:
            raise key_error(
                mark, "bits", "x host values must be at most 2^26 (the projection X, re-derived)"
            )
        if mark.stored:
            raise key_error(mark, "stored", "must be empty")

    @classmethod
    def capacity(cls, model: nn.Module, config: Any, data: DataBundle | None = None) -> int:
        """M, the host layer's filter-averaged weights: X w must be able to take any sign
        pattern, so at most M bits (Uchida et al. embed far fewer, T << M)."""
        return get_layer(model, config.layer or default_host_layer(model)).weight[0].numel()

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
        capacity = cls.capacity(model, config)
        n = len(payload) if payload is not None else (bits or 64)
        if n < 1:
            raise NNMarkError("a mark needs at least 1 bit")
        if n > capacity:
            raise NNMarkError(
                f"layer {layer} holds at most {capacity} bits (its filter-averaged weights); "
                f"asked for {n}"
            )
        chosen = payload or payload_bits(key.owner, key.nonce, n, len(key.marks))
        return key.new_mark(
            cls.name,
            cls.canonical_config(config),
            layer,
            chosen,
            data={"shape": list(weight.shape)},
        )

    @classmethod
    def canonical_config(cls, config: Any) -> dict[str, Any]:
        """lam resolved (its default depends on the loss); later options only where set."""
        return super().canonical_config(config) | {"lam": config.penalty_weight}

    def matrix(self, m: int, device: torch.device | None = None) -> torch.Tensor:
        if self._x is None or self._x.shape[1] != m:
            self._x = projection(self.mark, m, self.config.key_type)
        return self._x.to(device) if device is not None else self._x

    def host_weight(self, model: nn.Module) -> torch.Tensor:
        return get_layer(unwrap(model), self.mark.layer or "").weight

    def host(self, weight: torch.Tensor) -> torch.Tensor:
        """The M values the bits are read from (HOST_VECTORS[vector])."""
        return HOST_VECTORS[self.config.vector](weight)

    def logits(self, weight: torch.Tensor) -> torch.Tensor:
        w = self.host(weight)
        return self.matrix(w.numel(), w.device) @ w

    def margins(self, weight: torch.Tensor) -> torch.Tensor:
        """Each bit's signed logit in units of its spread, s_j x_j.w / (|x_j| rms(w)): positive
        when the bit reads right; the spread is taken as a constant (detached), so the loss
        moves the weights along the key's directions rather than only rotating them."""
        w = self.host(weight)
        x = self.matrix(w.numel(), w.device)
        rms = (w.detach().norm() / math.sqrt(w.numel())).clamp_min(1e-12)
        sign = 2 * self._target.to(w.device) - 1
        return sign * (x @ w) / (x.norm(dim=1) * rms)

    def embed_loss(self, weight: torch.Tensor) -> torch.Tensor:
        """E_R summed over bits: the paper's cross-entropy (default) or the hinge on `margins`."""
        if self.config.loss == "hinge":
            return F.relu(self.config.margin - self.margins(weight)).sum()
        y = self.logits(weight)
        return F.binary_cross_entropy_with_logits(y, self._target.to(y.device), reduction="sum")

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return self.config.penalty_weight * self.embed_loss(self.host_weight(model))

    def evidence(self, suspect: Suspect) -> Evidence:
        name = f"{self.mark.layer}.weight"
        t = suspect.tensor(name)
        if t is None:
            return Evidence(reason=f"suspect has no tensor {name}")
        expected = tuple(self.mark.data["shape"])
        if tuple(t.shape) != expected:
            return Evidence(
                reason=f"tensor {name} has shape {tuple(t.shape)}, the key's layer {expected}"
            )
        with torch.no_grad():
            w = self.host(t.float())
            x = self.matrix(w.numel(), w.device)
            y = x @ w
            scores = self._scores(x, w) if self.config.key_type == "random" else None
        return Evidence(
            bits=tuple(int(v) for v in (y > 0).tolist()),
            scores=scores,
            details={"layer": self.mark.layer},
        )

    @staticmethod
    def _scores(x: torch.Tensor, w: torch.Tensor) -> tuple[float, ...] | None:
        """x_j.w / |w| per bit: with x_j ~ N(0, I) from the key and w fixed by the model, an
        independent standard normal. In float64 on w over its largest entry, so that no scale a
        thief gives the host (a ReLU network absorbs one in the next layer) underflows |w| and
        inflates them (a host scaled by 3e-21 gave z a spread of 4.1 in float32: review,
        session 30); None where w is 0 or not finite."""
        w64 = w.double()
        top = float(w64.abs().max()) if w64.numel() else 0.0
        if not math.isfinite(top) or top == 0:
            return None
        w64 = w64 / top
        return tuple(((x.double() @ w64) / w64.norm()).tolist())

    # ---- realignment (verify --reference) ----------------------------------------------
    def blind_reference(self, reference: nn.Module) -> nn.Module:
        """Refused for the marked reference. The host vector is indexed by the host's input
        channels, so reading it after realignment needs the reference's channel order, and
        training places features in the channels that favour the mark (the channels are
        interchangeable at initialisation, and the penalty pulls the filters' mean towards the
        key's signs). Measured on unmarked digits models (benchmarks/results/realign_null.md,
        30 keys on cnn, mlp and resnet20): matched to the marked reference, 1.5 % more bits
        agree with the key than unaligned (+-0.9 %, 22 of 30 keys positive; 3.2 % on the
        cnn), and 1.2 % with the key's projections erased from the host first (v3 keys; v2
        keys: 2.1 % and 1.8 %, 3.4 % on the mlp): at 64 bits a
        pull of 2.6 % multiplies false claims at alpha 1e-6 about tenfold. A reference that
        never saw the key (`verify --reference-unmarked`) realigns uchida with an exact null
        and loses nothing (benchmarks/results/realign_null.md)."""
        raise NotRealignable(
            "uchida: realignment to the marked reference refused: training places its features "
            "in the channels that favour the mark, so matching a suspect to that channel order "
            "pulls an unmarked model towards the key; realign to a model that never saw the "
            "key instead (--reference-unmarked)"
        )


def embed_without_training(
    model: nn.Module, scheme: Uchida, lam: float, steps: int = 300, lr: float = 1e-2
) -> nn.Module:
    """Uchida's Eq. (6): write the bits by editing the host weights alone, no task loss.

    Minimises lam * E_R(w) + ||w - w0||^2 over the host layer; the paper's Table 7 shows this
    either leaves bit errors (small lam) or costs accuracy (large lam). In place; returns model.
    """
    weight = scheme.host_weight(model)
    w0 = weight.detach().clone()
    w = w0.clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = lam * scheme.embed_loss(w) + ((w - w0) ** 2).sum()
        loss.backward()
        opt.step()
    with torch.no_grad():
        weight.copy_(w)
    return model
