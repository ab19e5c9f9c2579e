"""Tartaglione, Grangetto, Cavagnino, Botta: "Delving in the loss landscape to embed robust
watermarks into neural networks" (ICPR 2020), without the (R+1)x memory.

Threat model: white-box. Key-chosen entries of every conv / linear weight (a `fraction` of each)
are set to key values +-scale (the sign carries a payload bit; scale is twice the layer's initial
weight std) and stay frozen: their gradients are zeroed in place before every optimiser step and
the key values are written back after it, so neither momentum nor weight decay moves them. The other parameters are
trained so that the loss is low at the model and high at R replicas whose marked entries are
perturbed by Gaussian noise (sigma x scale): the mark sits in a narrow valley, and moving the
marked values away costs accuracy.

Memory: the reference code keeps R full model replicas ((R+1) x parameters). Here each replica
is made *in place* on the marked entries only (addressed by stored index tensors), one replica
at a time: forward, backward (gradients accumulate), restore. Peak memory stays about that of
plain training; time grows with R (`one_replica=true` samples one random replica per step: an
unbiased estimate of the R-replica average at about 2x plain time).

Objective per step: L(w) - (lam / R) * sum_r min(L(w + d_r), cap): the replica term rewards a
high loss at the perturbed points, clipped at `cap` so it cannot diverge.

Verification: the signs of the suspect's values at the key positions against the payload bits;
an unmarked model's signs there are fair coins (binomial null, as for Uchida).

Example: ``nnmark train --data digits --scheme tartaglione --set R=4 --out m.safetensors --key-out k.nnkey``
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
from nnmark.layers import weighted_layers
from nnmark.schemes import register
from nnmark.schemes.base import Batch, Evidence, LossFn, Scheme, unwrap
from nnmark.suspect import Suspect


@dataclass(frozen=True)
class TartaglioneConfig:
    label = "tartaglione"
    fraction: float = 0.01
    R: int = 4
    sigma: float = 1.0
    lam: float = 0.1
    cap: float = 5.0
    one_replica: bool = False

    def __post_init__(self) -> None:
        check(0 < self.fraction <= 0.5, f"fraction must be in (0, 0.5], got {self.fraction}")
        check(self.R >= 0, f"R must be >= 0, got {self.R}")
        check(self.sigma >= 0 and self.lam >= 0, "sigma and lam must be >= 0")


def distinct_positions(numel: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k distinct positions in 0..numel-1 with O(k) memory (a randperm of a 9M-entry tensor
    would cost 72 MB: more than the whole point of in-place replicas)."""
    if 4 * k >= numel:
        return torch.randperm(numel, generator=gen)[:k]
    chosen = torch.empty(0, dtype=torch.long)
    while len(chosen) < k:
        draw = torch.randint(0, numel, (2 * k,), generator=gen)
        merged = torch.cat([chosen, draw])
        uniq, first = _first_occurrences(merged)
        chosen = merged[first.sort().values][:k]
    return chosen


def _first_occurrences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unique values of x and the index of each one's first occurrence (order-stable)."""
    uniq, inverse = torch.unique(x, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(x)), reduce="amin")
    return uniq, first


@register("tartaglione")
class Tartaglione(Scheme):
    Config = TartaglioneConfig
    config: TartaglioneConfig
    kind = "whitebox"
    paper = (
        "Tartaglione et al., Delving in the loss landscape to embed robust watermarks, ICPR 2020"
    )

    def __init__(self, mark: Mark) -> None:
        super().__init__(mark)
        self.layers: list[dict[str, Any]] = mark.data["layers"]
        gen = mark.generator("positions")
        bits = torch.tensor(mark.bits, dtype=torch.float32) * 2 - 1
        self.index: dict[str, torch.Tensor] = {}
        self.values: dict[str, torch.Tensor] = {}
        start = 0
        for layer in self.layers:
            idx = distinct_positions(layer["numel"], layer["k"], gen)
            self.index[layer["name"]] = idx
            self.values[layer["name"]] = bits[start : start + layer["k"]] * layer["scale"]
            start += layer["k"]
        self._noise = mark.generator("replicas")

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
        layers = []
        for name, m in weighted_layers(model).items():
            w = m.weight
            k = max(1, int(round(config.fraction * w.numel())))
            layers.append(
                {
                    "name": f"{name}.weight",
                    "numel": w.numel(),
                    "k": k,
                    "shape": list(w.shape),
                    "scale": round(2 * float(w.detach().std()), 6),
                }
            )
        n = sum(layer["k"] for layer in layers)
        if payload is not None and len(payload) != n:
            raise NNMarkError(f"tartaglione marks {n} positions here; a payload must have {n} bits")
        chosen = payload or payload_bits(key.owner, key.nonce, n, len(key.marks))
        return key.new_mark(cls.name, config_to_dict(config), None, chosen, data={"layers": layers})

    def _params(self, model: nn.Module) -> dict[str, torch.Tensor]:
        named = dict(unwrap(model).named_parameters())
        missing = [n for n in self.index if n not in named]
        if missing:
            raise NNMarkError(f"model lacks the key's tensors {', '.join(missing[:3])}")
        return {n: named[n] for n in self.index}

    @torch.no_grad()
    def _write(self, model: nn.Module) -> None:
        for name, p in self._params(model).items():
            p.view(-1)[self.index[name]] = self.values[name].to(p.dtype)

    def prepare(self, model: nn.Module) -> nn.Module:
        self._write(model)
        return model

    @torch.no_grad()
    def _freeze_grads(self, model: nn.Module) -> None:
        """Zero the gradients at the key positions, in place (no gradient copy: memory ~1x)."""
        for name, p in self._params(model).items():
            if p.grad is not None:
                p.grad.view(-1)[self.index[name]] = 0

    def step(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
    ) -> float:
        c = self.config
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model, batch)
        loss.backward()
        replicas = 1 if c.one_replica else c.R
        if c.R > 0 and c.lam > 0:
            params = self._params(model)
            for _ in range(replicas):
                saved = {}
                with torch.no_grad():
                    for layer in self.layers:
                        p, idx = params[layer["name"]], self.index[layer["name"]]
                        saved[layer["name"]] = p.view(-1)[idx].clone()
                        noise = (
                            torch.randn(len(idx), generator=self._noise) * c.sigma * layer["scale"]
                        )
                        p.view(-1)[idx] += noise.to(p.dtype)
                replica_loss = loss_fn(model, batch)
                (-(c.lam / replicas) * replica_loss.clamp(max=c.cap)).backward()
                with torch.no_grad():
                    for name, values in saved.items():
                        params[name].view(-1)[self.index[name]] = values
        self._freeze_grads(model)
        optimizer.step()
        self._write(model)  # momentum and weight decay never move the key values
        return float(loss.detach())

    def evidence(self, suspect: Suspect) -> Evidence:
        signs: list[int] = []
        for layer in self.layers:
            t = suspect.tensor(layer["name"])
            if t is None:
                return Evidence(reason=f"suspect has no tensor {layer['name']}")
            if list(t.shape) != layer["shape"]:
                return Evidence(
                    reason=f"tensor {layer['name']} has shape {list(t.shape)}, the key's {layer['shape']}"
                )
            signs.extend(int(v) for v in (t.flatten()[self.index[layer["name"]]] > 0).tolist())
        return Evidence(bits=tuple(signs), details={"positions": len(signs)})
