"""WaterMAS (De Sousa Trias et al., "WaterMAS: Sharpness-Aware Maximization for Neural Network
Watermarking", ICPR 2024): SAM's step inverted on the marked subspace.

Threat model: white-box. As in Tartaglione et al. (see nnmark.schemes.tartaglione), key-chosen
entries of every conv / linear weight hold frozen key values; verification is the same (signs at
the key positions, exact binomial null). What differs is how the landscape around the mark is
made sharp: not R random replicas, but one adversarial point per step, found from the gradient
as SAM does (Foret et al.), so 2 forward / backward passes per step (time <= 2.1x plain,
benchmarks/tartaglione_memory.py).

There is no public code; this follows the lecture's four steps (seed 000). Each choice below was
compared on digits, 20 epochs, 5 seeds (benchmarks/results/watermas_ablation.md: accuracy minus
that of plain training with the same init and seed, and the landscape ratio of
benchmarks/landscape_robustness.py, which must stay >= 2). The defaults: -0.06 points, ratio
2.5 to 10.8 over the seeds.

Which parameters are marked: a `fraction` (1 %) of the entries of every conv / linear weight,
output layer included, at key values +-2 initial weight std (nnmark.schemes._positions), frozen:
their gradients are zeroed before each optimiser step and their values written back after it,
so neither momentum nor weight decay moves them. Freezing alone costs no accuracy (tartaglione
R = 0 in landscape_robustness); half the fraction (0.5 %) gives a valley on only some seeds
(ratio 0.6 to 3.3).

1. "Calculate the gradient for w_t in W_x": one forward / backward pass of the task loss at w.
   It also serves step 4's task term. Its restriction to the marked entries, g_M, is read by
   index (O(k) memory).
2. "Find the minimum at distance rho, W_adv": w_adv = w + eps, eps non-zero only on the marked
   entries, eps = -rho * g_M / |g_M| (`direction=descent`): the lowest first-order loss on the
   sphere of radius rho. Maximising the loss there raises the minimum of the loss over the
   sphere, i.e. the whole neighbourhood -- SAM's min-max turned into max-min.
   `direction=ascent` (SAM's own point, +g_M) raises the loss only along the already worst
   direction: no valley (mean ratio 1.4). The norm is per tensor: eps_l = rho * std_l *
   sqrt(k_l) * g_l / |g_l| (std_l the tensor's initial weight std, k_l its marked entries), so
   every layer moves by `rho` (1) initial standard deviations per entry (RMS), the scale at
   which the landscape test probes it; a global norm would put nearly all the distance into the
   layer with the largest gradient. rho = 0.5 leaves too little sharpness (mean ratio 1.9).
3. "Calculate the gradient in W_adv and maximise the loss": one forward / backward pass in
   place on the marked entries, accumulating into the same gradients, then the marked entries
   are restored. What is maximised is the *increase* L(w_adv) - L(w), up to `cap`: maximising
   L(w_adv) itself would cancel the task gradient (the two share their first-order term, see
   nnmark.schemes._positions.replica_step). `cap` (0.2 nats) is a target, a hinge: once the loss
   at distance rho is 0.2 above the model's, the term gives no gradient and the unmarked
   parameters follow the task alone, which is what keeps the accuracy of plain training. An
   unreachable cap (5, the first version) kept pushing the sharpness up for the whole training
   and cost 1.7 points; 0.5 cost 0.3.
4. "Update using both": one optimiser step of the unmarked parameters on the gradient of
   (1 + lam) L(w) - lam * min(L(w_adv), L(w) + cap), lam = 0.3; lam = 0.1 leaves a seed below
   ratio 2 (1.4). Unlike SAM, step 3's gradient is not applied at w *instead* of the task
   gradient: the unmarked parameters need the task gradient at w itself ("they follow regular
   gradient descent"), or the model would be trained at a point it is never evaluated at.

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
from nnmark.schemes._positions import Perturbation, PositionScheme, replica_step
from nnmark.schemes.base import Batch, LossFn


@dataclass(frozen=True)
class WaterMASConfig:
    fraction: float = 0.01
    rho: float = 1.0
    lam: float = 0.3
    cap: float = 0.2
    direction: Literal["descent", "ascent"] = "descent"

    def __post_init__(self) -> None:
        check(0 < self.fraction <= 0.5, f"fraction must be in (0, 0.5], got {self.fraction}")
        check(0 <= self.rho <= 100 and 0 <= self.lam <= 100, "rho and lam must be in [0, 100]")
        check(0 < self.cap <= 1e3, f"cap must be in (0, 1000], got {self.cap}")


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
            self.grad_buffer,
        )
