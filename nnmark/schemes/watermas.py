"""WaterMAS (De Sousa Trias et al., "WaterMAS: Sharpness-Aware Maximization for Neural Network
Watermarking", ICPR 2024): SAM's step inverted on the marked subspace.

Threat model: white-box. As in Tartaglione et al. (see nnmark.schemes.tartaglione), key-chosen
entries of every conv / linear weight (a `fraction` of each) hold frozen key values; verification
is the same (signs at the key positions, exact binomial null). What differs is how the landscape
around the mark is made sharp: not R random replicas, but one adversarial point per step, found
from the gradient as SAM does (Foret et al.), so about 2 backward passes per step.

There is no public code; this follows the lecture's four steps (seed 000), with these choices:

1. Gradient of the task loss at w (one forward / backward pass; it also serves step 4's task
   term). Its restriction to the marked entries, g_M, is read by index (O(k) memory).
2. The adversarial point w_adv = w + eps, with eps non-zero only on the marked entries. The
   lecture says "find the minimum at distance rho": eps = -rho * g_M / |g_M| (`direction=descent`,
   the default): the *lowest* first-order loss on the sphere of radius rho. Maximising the loss
   there (step 3) raises the minimum of the loss over the sphere, i.e. makes the whole
   neighbourhood high (sharp) -- SAM's min-max turned into max-min. `direction=ascent` takes
   +g_M instead (SAM's own point), which only raises the loss along the already worst direction.
   The norm is taken per tensor: eps_l = rho * std_l * sqrt(k_l) * g_l / |g_l| (std_l the
   tensor's initial weight std, k_l its marked entries), so every layer is moved by rho standard
   deviations per entry (RMS); a global norm would put nearly all the distance into the layer
   with the largest gradient.
3. The loss at w_adv, to be *maximised*: as in nnmark's Tartaglione, the increase
   L(w_adv) - L(w) is rewarded, clipped at `cap`; one forward / backward pass in place on the
   marked entries, accumulating into the same gradients, then the marked entries are restored.
4. One update of the unmarked parameters with both terms, i.e. the gradient of
   (1 + lam) L(w) - lam * min(L(w_adv), L(w) + cap). The marked entries' gradients are zeroed before the optimiser step and their key values
   written back after it (frozen as in Tartaglione: neither momentum nor weight decay moves them).

Unlike SAM, the gradient of step 3 is not "applied at w_t instead of the task gradient": the
unmarked parameters need the task gradient at w itself (step 4 adds both), or the model would be
trained at a point it is never evaluated at.

Example: ``nnmark train --data digits --scheme watermas --set rho=1.0 --out m.safetensors --key-out k.nnkey``
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from nnmark.config import check
from nnmark.schemes import register
from nnmark.schemes._positions import Perturbation, replica_step
from nnmark.schemes.base import Batch, LossFn
from nnmark.schemes.tartaglione import PositionScheme


@dataclass(frozen=True)
class WaterMASConfig:
    label = "watermas"
    fraction: float = 0.01
    rho: float = 1.0
    lam: float = 0.3
    cap: float = 5.0
    direction: Literal["descent", "ascent"] = "descent"

    def __post_init__(self) -> None:
        check(0 < self.fraction <= 0.5, f"fraction must be in (0, 0.5], got {self.fraction}")
        check(self.rho >= 0 and self.lam >= 0, "rho and lam must be >= 0")
        check(self.cap > 0, f"cap must be > 0, got {self.cap}")


@register("watermas")
class WaterMAS(PositionScheme):
    Config = WaterMASConfig
    config: WaterMASConfig
    kind = "whitebox"
    paper = "De Sousa Trias et al., WaterMAS: Sharpness-Aware Maximization for NN Watermarking"

    def _adversarial(self, model: nn.Module) -> Iterator[Perturbation]:
        """Step 2: the point at distance rho along -g_M (or +g_M), per tensor."""
        c = self.config
        sign = -1.0 if c.direction == "descent" else 1.0
        grads = self.positions.grads(model)
        eps = {}
        for layer in self.layers:
            g = grads[layer["name"]]
            radius = c.rho * layer["std"] * layer["k"] ** 0.5
            eps[layer["name"]] = sign * radius * g / g.norm().clamp_min(1e-12)
        yield eps

    def step(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
    ) -> float:
        c = self.config
        return replica_step(
            self.positions,
            model,
            batch,
            loss_fn,
            optimizer,
            lambda: self._adversarial(model),
            c.lam if c.rho > 0 else 0.0,
            1,
            c.cap,
        )
