"""Key-chosen parameter positions in every layer, frozen at key values: what the loss-landscape
schemes (tartaglione, watermas) share, their base class `PositionScheme` included.

The positions are stored as index tensors into each flattened weight (k entries per tensor, O(k)
memory), never as boolean masks over whole tensors, so writing, freezing and perturbing the
marked entries costs memory proportional to the mark, not to the model.

Values: each marked entry holds ``(2 t - 1) * scale``, where t is a bit of the payload XOR the
key's mask and scale twice the std of the layer's weights when the mark is prepared (inside the
weight distribution, away from zero so that small drifts do not flip a sign). Because the mask
is fair coins drawn from the key, the extracted bits of any model that did not see the key match
with probability 1/2 each, whatever the payload: the binomial null of the verdict is exact, not
an assumption about weight signs.

The key holds only the marked tensors' names and shapes; the count per tensor follows from the
config's fraction, the positions from the key's KDF, the values from the model being marked
(they are never needed to verify: only their signs are read).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey, payload_bits
from nnmark.layers import evaluating, weighted_layers
from nnmark.schemes.base import (
    MAX_HOST_VALUES,
    Batch,
    Evidence,
    LossFn,
    NotRealignable,
    Scheme,
    bit_verdict,
    check_fields,
    check_shape,
    key_error,
    unwrap,
)
from nnmark.stats import DEFAULT_ALPHA
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

POSITION_NULL = (
    "for a model that never saw the key, each extracted bit (the sign of its value at a key "
    "position) matches the payload XOR the key's secret mask with probability 1/2, "
    "independently, whatever the payload (exact binomial upper tail of the matching bits)"
)

Perturbation = dict[str, torch.Tensor]
#: A move made elsewhere: (the entries of each tensor, the values added there).
Placed = tuple[dict[str, torch.Tensor], Perturbation]


def distinct_positions(numel: int, k: int, gen: torch.Generator) -> torch.Tensor:
    """k distinct positions in 0..numel-1 with O(k) memory (a randperm of a 9M-entry tensor
    would cost 72 MB: more than the whole point of in-place replicas)."""
    if 4 * k >= numel:
        return torch.randperm(numel, generator=gen)[:k]
    chosen = torch.empty(0, dtype=torch.long)
    while len(chosen) < k:
        draw = torch.randint(0, numel, (2 * k,), generator=gen)
        merged = torch.cat([chosen, draw])
        _, first = _first_occurrences(merged)
        chosen = merged[first.sort().values][:k]
    return chosen


def _first_occurrences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unique values of x and the index of each one's first occurrence (order-stable)."""
    uniq, inverse = torch.unique(x, return_inverse=True)
    first = torch.full((len(uniq),), len(x), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(x)), reduce="amin")
    return uniq, first


def layer_k(numel: int, fraction: float) -> int:
    """Marked entries of a tensor of `numel` values (at least one)."""
    return max(1, int(round(fraction * numel)))


def plan_layers(model: nn.Module) -> list[dict[str, Any]]:
    """One entry per conv / linear weight (output layer included, as in Tartaglione et al.)."""
    layers = [
        {"name": f"{name}.weight", "shape": list(m.weight.shape)}
        for name, m in weighted_layers(model).items()
    ]
    if not layers:
        raise NNMarkError("model has no conv or linear layer to mark")
    return layers


def check_layers(mark: Mark, fraction: float) -> int:
    """Validate a key's layer list; returns the number of marked positions it implies."""
    layers = mark.data.get("layers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 4096:
        raise key_error(mark, "data.layers", "must be a list of 1 to 4096 tensors")
    total = 0
    names = set()
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict) or set(layer) != {"name", "shape"}:
            raise key_error(mark, f"data.layers[{i}]", "must be {name, shape}")
        name = layer["name"]
        if not isinstance(name, str) or not 0 < len(name) <= 256 or name in names:
            raise key_error(mark, f"data.layers[{i}].name", "must be a distinct tensor name")
        names.add(name)
        shape = check_shape(mark, f"data.layers[{i}].shape", layer["shape"], dims=(1, 5))
        total += layer_k(math.prod(shape), fraction)
    if total > MAX_HOST_VALUES:
        raise key_error(mark, "data.layers", f"mark {total} positions (too many)")
    return total


def magnitude_band(w: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """The sorted weight magnitudes of `w` between its `low` and `high` quantiles (at least one
    value; a tensor of zeros gives a small positive magnitude)."""
    mags = w.abs().sort().values
    n = len(mags)
    lo, hi = min(int(low * n), n - 1), max(int(high * n), int(low * n) + 1)
    band = mags[lo:hi]
    return band if bool((band > 0).any()) else torch.full((1,), 1e-2)


class KeyPositions:
    """The marked entries of one mark: index tensors, key values, and the in-place operations."""

    def __init__(self, mark: Mark, target: torch.Tensor, fraction: float) -> None:
        self.layers: list[dict[str, Any]] = []
        for layer in mark.data["layers"]:
            numel = math.prod(layer["shape"])
            self.layers.append(
                {**layer, "numel": numel, "k": layer_k(numel, fraction), "std": None}
            )
        gen = mark.generator("positions")
        sign = target.float() * 2 - 1
        if len(sign) != sum(layer["k"] for layer in self.layers):
            raise key_error(mark, "bits", "must hold one bit per marked position")
        self.index: dict[str, torch.Tensor] = {}
        self.signs: dict[str, torch.Tensor] = {}
        self.values: dict[str, torch.Tensor] = {}
        start = 0
        for layer in self.layers:
            k, name = layer["k"], layer["name"]
            self.index[name] = distinct_positions(layer["numel"], k, gen)
            self.signs[name] = sign[start : start + k]
            start += k

    @torch.no_grad()
    def bind(
        self,
        model: nn.Module,
        draw: torch.Generator | None = None,
        band: tuple[float, float] = (0.98, 0.999),
    ) -> None:
        """Set the key values from the model being marked. With `draw`, each value's magnitude
        is one of the tensor's own weight magnitudes, drawn between its `band` quantiles
        (tartaglione's magnitude_low / magnitude_high, 0.98 and 0.999): the marked values
        follow the layer's distribution (no outliers beyond its top 0.1 %, nothing near zero
        whose sign a nudge flips), not one magnitude per layer. Why that high: a thief's
        fine-tune moves a wide layer's entries by about the same absolute amount, marked or
        not, a few of them by 0.03-0.05 (MNIST cnn's fc1, whose 95th percentile is 0.030 and
        98th 0.039), so the smallest key values are the ones whose signs flip: from the 75th
        percentile up 4-9 of its 4,014 key values changed sign, from the 90th one; from the
        95th (the band until 2026-12-04) one on the cnn's seed 2 (0.0305 -> -0.0033, SGD
        thief) and one on seed 0 with the anchor (Adam thief) in
        benchmarks/seed003_tartaglione.py, whose rows now give each thief's sign margin (the
        smallest key magnitude minus the largest move of any entry towards zero). The
        output layer was once where a band was not enough: with 4 mark epochs, the SGD thief
        (lr 0.01, momentum 0.9) of the cnn's seed 2 moved one of its 13 key values by 0.197,
        -0.096 to +0.101 (its layer's 95th percentile: 0.10), while no other key value moved
        by more than 0.031. Without `draw`, +-2 std."""
        for layer, (name, p) in zip(self.layers, self.params(model).items()):
            w = p.detach().float().flatten()
            std = float(w.std()) if w.numel() > 1 else float(w.abs().sum())
            layer["std"] = round(std or 1e-2, 6)
            layer["scale"] = 2 * layer["std"]
            if draw is None or w.numel() < 2:
                self.values[name] = self.signs[name] * layer["scale"]
                continue
            mags = magnitude_band(w, *band)
            pick = torch.randint(len(mags), (len(self.signs[name]),), generator=draw)
            self.values[name] = self.signs[name] * mags[pick]

    def _bound(self) -> None:
        if not self.values:
            raise NNMarkError("the key positions have no values yet: call bind(model) first")

    def params(self, model: nn.Module) -> dict[str, torch.Tensor]:
        named = dict(unwrap(model).named_parameters())
        missing = [n for n in self.index if n not in named]
        if missing:
            raise NNMarkError(f"model lacks the key's tensors {', '.join(missing[:3])}")
        return {n: named[n] for n in self.index}

    @torch.no_grad()
    def write(self, model: nn.Module) -> None:
        """Set every marked entry to its key value (in place)."""
        self._bound()
        for name, p in self.params(model).items():
            p.view(-1)[self.index[name]] = self.values[name].to(p.device, p.dtype)

    @torch.no_grad()
    def freeze_grads(self, model: nn.Module) -> None:
        """Zero the gradients at the key positions, in place (no gradient copy: memory ~1x)."""
        for name, p in self.params(model).items():
            if p.grad is not None:
                p.grad.view(-1)[self.index[name]] = 0

    def inward_gradient(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """Mean over the marked entries of relu(dL/dv * sign(v)), differentiable (a double
        backward): the part of the loss gradient at each key value that a thief's descent would
        follow towards zero, i.e. towards flipping the sign that carries the bit."""
        params = self.params(model)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
        total = loss.new_zeros(())
        count = 0
        for (name, p), g in zip(params.items(), grads):
            inward = g.reshape(-1)[self.index[name].to(p.device)] * self.signs[name].to(g)
            total = total + torch.relu(inward).sum()
            count += len(inward)
        return total / max(count, 1)

    def grads(self, model: nn.Module) -> Perturbation:
        """The gradient at the marked entries of each tensor (zeros where none was computed)."""
        out = {}
        for name, p in self.params(model).items():
            idx = self.index[name]
            out[name] = (
                p.grad.detach().view(-1)[idx].clone()
                if p.grad is not None
                else torch.zeros(len(idx), device=p.device)
            )
        return out

    def gaussian(self, sigma: float, gen: torch.Generator) -> Perturbation:
        """Noise of std sigma x (the layer's weight std when bound) on every marked entry."""
        self._bound()
        return {
            layer["name"]: torch.randn(layer["k"], generator=gen) * (sigma * layer["std"])
            for layer in self.layers
        }

    def unmarked_like(self, delta: Perturbation, gen: torch.Generator) -> Placed:
        """As many *unmarked* entries of each tensor as `delta` moves, drawn afresh, and
        Gaussian noise on them of exactly `delta`'s norm per tensor: the same move made
        anywhere but the mark (the reference of benchmarks' landscape ratio)."""
        index, noise = {}, {}
        for layer in self.layers:
            name, numel = layer["name"], math.prod(layer["shape"])
            k = len(delta[name])
            # 2k distinct draws hold at least k unmarked ones, as k <= numel / 2
            draw = distinct_positions(numel, min(2 * k, numel), gen)
            index[name] = draw[~torch.isin(draw, self.index[name])][:k]
            n = torch.randn(len(index[name]), generator=gen)
            noise[name] = n / n.norm().clamp_min(1e-12) * delta[name].norm()
        return index, noise

    @contextmanager
    def perturbed(
        self, model: nn.Module, delta: Perturbation, at: dict[str, torch.Tensor] | None = None
    ) -> Iterator[None]:
        """The model with `delta` added at the marked entries (or at the entries `at`),
        restored bit for bit afterwards."""
        params = self.params(model)
        index = self.index if at is None else at
        saved = {}
        with torch.no_grad():
            for name, d in delta.items():
                p, idx = params[name], index[name]
                saved[name] = p.view(-1)[idx].clone()
                p.view(-1)[idx] += d.to(p.device, p.dtype)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, values in saved.items():
                    params[name].view(-1)[index[name]] = values

    def evidence(self, suspect: Suspect) -> Evidence:
        """Raw bits = the sign of the suspect's value at each key position (what was embedded:
        payload XOR mask)."""
        bits: list[int] = []
        for layer in self.layers:
            name = layer["name"]
            t = suspect.tensor(name)
            if t is None:
                return Evidence(reason=f"suspect has no tensor {name}")
            if list(t.shape) != layer["shape"]:
                return Evidence(
                    reason=f"tensor {name} has shape {list(t.shape)}, the key's {layer['shape']}"
                )
            v = t.detach().float().flatten()[self.index[name]].cpu()
            bits.extend(int(b) for b in (v > 0).tolist())
        return Evidence(bits=tuple(bits), details={"positions": len(bits)})


class GradBuffer:
    """A model's gradients in one contiguous buffer per device and dtype, zeroed and reused by
    every replica step instead of `zero_grad(set_to_none=True)`.

    Why: between the passes of one step the accumulated gradients stay allocated. Allocated one
    tensor at a time by the first backward, they sit scattered over the heap where that pass's
    activations were, so the next forward's activation blocks cannot reuse those holes and the
    allocator grows the heap: on resnet20 (batch 64, 28x28) +35-50 MiB peak RSS from R = 1 on
    (1.10x plain), while plain training, whose gradients are freed before each forward, never
    fragments that way. One buffer, allocated before any activation and kept, leaves the
    activations' space whole (benchmarks/tartaglione_memory.py), at no cost in time. Each pass
    accumulates into it in place (autograd adds into an existing .grad), so the gradients are
    bit for bit those of the per-tensor version. Peak memory is unchanged (all gradients are
    alive at the end of a backward pass anyway); between steps the buffer stays allocated.
    """

    def __init__(self) -> None:
        self._flat: list[torch.Tensor] = []
        self._views: list[tuple[nn.Parameter, int]] = []

    def zero(self, model: nn.Module) -> None:
        params = [p for p in unwrap(model).parameters() if p.requires_grad]
        if not self._attached(params):
            self._attach(params)
        for flat in self._flat:
            flat.zero_()

    def _attached(self, params: list[nn.Parameter]) -> bool:
        return len(params) == len(self._views) and all(
            p is q and p.grad is not None and p.grad.data_ptr() == ptr
            for p, (q, ptr) in zip(params, self._views)
        )

    def _attach(self, params: list[nn.Parameter]) -> None:
        for p in params:  # free the old gradients before the buffer is allocated
            p.grad = None
        self._flat, self._views = [], []
        groups: dict[tuple[torch.device, torch.dtype], list[nn.Parameter]] = {}
        for p in params:
            groups.setdefault((p.device, p.dtype), []).append(p)
        views: dict[int, int] = {}
        for (device, dtype), group in groups.items():
            flat = torch.zeros(sum(p.numel() for p in group), device=device, dtype=dtype)
            offset = 0
            for p in group:
                p.grad = flat[offset : offset + p.numel()].view_as(p)
                views[id(p)] = p.grad.data_ptr()
                offset += p.numel()
            self._flat.append(flat)
        self._views = [(p, views[id(p)]) for p in params]


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in unwrap(model).modules())


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Replica passes normalise with their batch's statistics but leave the model's BatchNorm
    running statistics (and num_batches_tracked) untouched.

    In train mode every forward updates the running statistics; R replica forwards per step
    would average the statistics of perturbed models into the ones the model is evaluated
    with. The reference code (EIDOSLAB) runs its replicas as separate models in train mode,
    whose own buffers are never copied back, so the main model's statistics see only its own
    forward: the same here, in place.
    """
    norms = [
        m
        for m in unwrap(model).modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    for m in norms:
        m.track_running_stats = False  # train mode: batch statistics, no buffer update
    try:
        yield
    finally:
        for m in norms:
            m.track_running_stats = True


def replica_step(
    positions: KeyPositions,
    model: nn.Module,
    batch: Batch,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    replicas: Callable[[], Iterator[Perturbation]],
    lam: float,
    count: int,
    cap: float,
    grads: GradBuffer | None = None,
    anchor: float = 0.0,
    running_norm: bool = False,
    contrast: Callable[[Perturbation], Placed] | None = None,
) -> float:
    """One step on (1 + lam) L(w) - (lam / count) sum_r min(L(w + d_r), L(w) + cap)
    + anchor * mean_i relu(dL/dv_i * sign(v_i)), the marked entries frozen.

    That is L(w) + lam * mean_r (L(w) - L(w + d_r)) while a replica's excess loss is below
    `cap`: it rewards the loss *increase* at the replicas. Maximising L(w + d_r) itself with a
    weight near 1 cancels the task gradient (the two losses share their first-order term) and
    the model collapses; the increase isolates the curvature along the marked entries, and the
    cap keeps the objective bounded below (a replica whose loss already exceeds L(w) + cap gives
    no gradient).

    Each replica is made in place on the marked entries only (by index), one at a time: forward,
    backward (gradients accumulate in .grad), restore; its graph is freed before the next one is
    built, also when its loss is over the cap and no backward runs. Peak memory stays that of
    plain training when the gradients accumulate in one `grads` buffer (GradBuffer; without
    one they are zeroed with set_to_none as usual). Without `running_norm` the replicas use
    batch statistics; either way they leave the BatchNorm running statistics alone. `replicas`
    is called after the first backward pass, so it may read the gradients (watermas). The marked
    entries' gradients are zeroed before the optimiser step and their key values are written
    back after it, so neither momentum nor weight decay can move them.

    `running_norm` (on a model with BatchNorm): the replicas and their reference run in eval
    mode, with the running statistics the model is verified and deployed with: the objective
    becomes L_train(w) + lam * L_eval(w) - (lam / count) sum_r min(L_eval(w + d_r),
    L_eval(w) + cap). `contrast(d_r)` gives (entries, move): the same move made elsewhere
    (u_r); each replica's reference is then L(w + u_r), pushed down, in place of L(w):
    L(w) + (lam / count) sum_r [L(w + u_r) - min(L(w + d_r), L(w + u_r) + cap)].

    `anchor` (KeyPositions.inward_gradient; tartaglione's option, off by default) trains the
    other weights so that the loss no longer pulls any key value towards zero. The replicas make
    the valley steep on average, but a key value whose gradient still points inwards when the
    owner stops is where a thief's fine-tune starts walking, and Adam walks a consistent
    gradient at its full rate however small it is. It costs a double backward (1.45x the
    marking time of the MNIST cnn at R = 4: 121 -> 175 s in one pair of runs).
    """
    if grads is not None:
        grads.zero(model)
    else:
        optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    active = lam > 0 and count > 0
    running = active and running_norm and has_batchnorm(model)
    plain_reference = active and not running and contrast is None
    total = (1 + lam) * loss if plain_reference else loss
    if anchor > 0:
        total = total + anchor * positions.inward_gradient(model, loss)
    total.backward()
    if active:
        with evaluating(model) if running else frozen_running_stats(model):
            base = float(loss.detach())
            if running and contrast is None:  # the landscape's reference: the model in eval mode
                reference = loss_fn(model, batch)
                (lam * reference).backward()
                base = float(reference.detach())
                del reference
            for delta in replicas():
                ceiling = base + cap
                if contrast is not None:  # the reference: the same move made elsewhere
                    at, move = contrast(delta)
                    with positions.perturbed(model, move, at):
                        elsewhere = loss_fn(model, batch)
                        ((lam / count) * elsewhere).backward()
                        ceiling = float(elsewhere.detach()) + cap
                        del elsewhere
                with positions.perturbed(model, delta):
                    replica_loss = loss_fn(model, batch)
                    if float(replica_loss.detach()) < ceiling:
                        (-(lam / count) * replica_loss).backward()
                    del replica_loss  # no graph outlives its replica
    positions.freeze_grads(model)
    optimizer.step()
    positions.write(model)
    return float(loss.detach())


@torch.no_grad()
def perturbation_losses(
    model: nn.Module,
    positions: KeyPositions,
    loss_fn: Callable[[nn.Module], float],
    sigma: float,
    trials: int,
    gen: torch.Generator,
) -> dict[str, float]:
    """Mean loss increase when the marked entries get Gaussian noise (sigma x layer std), and
    when as many *unmarked* entries of each tensor get noise of exactly the same norm.

    The landscape claim of tartaglione / watermas is that the first is much larger. In place,
    restored afterwards. `loss_fn(model)` evaluates the loss on fixed data.
    """
    was_training = model.training
    model.eval()
    base = loss_fn(model)
    params = positions.params(model)
    up_marked = up_unmarked = 0.0
    for _ in range(trials):
        delta = positions.gaussian(sigma, gen)
        with positions.perturbed(model, delta):
            up_marked += loss_fn(model) - base
        saved = {}
        for layer in positions.layers:
            name, k = layer["name"], layer["k"]
            flat = params[name].view(-1)
            marked = torch.zeros(flat.numel(), dtype=torch.bool)
            marked[positions.index[name]] = True
            free = (~marked).nonzero().flatten()
            pick = free[torch.randperm(len(free), generator=gen)[:k]]
            noise = torch.randn(len(pick), generator=gen)
            noise = noise / noise.norm().clamp_min(1e-12) * delta[name].norm()
            saved[name] = (pick, flat[pick].clone())
            flat[pick] += noise.to(flat.dtype)
        up_unmarked += loss_fn(model) - base
        for name, (pick, values) in saved.items():
            params[name].view(-1)[pick] = values
    model.train(was_training)
    return {
        "base_loss": base,
        "marked_increase": up_marked / trials,
        "unmarked_increase": up_unmarked / trials,
        "ratio": (up_marked / trials) / max(up_unmarked / trials, 1e-12),
    }


def plan_positions(
    scheme: type[Scheme],
    model: nn.Module,
    key: OwnerKey,
    config: Any,
    payload: tuple[int, ...] | None,
) -> Mark:
    """The key entry of a position mark (tartaglione, watermas): one bit per marked entry."""
    layers = plan_layers(model)
    n = sum(layer_k(math.prod(layer["shape"]), config.fraction) for layer in layers)
    if payload is not None and len(payload) != n:
        raise NNMarkError(f"{scheme.name} marks {n} positions here; a payload must have {n} bits")
    chosen = payload or payload_bits(key.owner, key.nonce, n, len(key.marks))
    config_dict = scheme.canonical_config(config)
    return key.new_mark(scheme.name, config_dict, None, chosen, data={"layers": layers})


class PositionScheme(Scheme):
    """Shared by the landscape schemes: frozen key values at key positions, verified by sign."""

    config: Any
    fixed_length = True  # one payload bit per marked entry

    @classmethod
    def capacity(cls, model: nn.Module, config: Any, data: DataBundle | None = None) -> int:
        return sum(
            layer_k(math.prod(layer["shape"]), config.fraction) for layer in plan_layers(model)
        )

    @classmethod
    def check_key(cls, mark: Mark) -> None:
        check_fields(mark, {"layers"})
        if mark.layer is not None or mark.stored:
            raise key_error(mark, "layer", "must be null and stored empty")
        fraction = mark.config.get("fraction")
        if not isinstance(fraction, float) or not 0 < fraction <= 0.5:
            raise key_error(mark, "config.fraction", "must be in (0, 0.5]")
        if len(mark.bits) != check_layers(mark, fraction):
            raise key_error(mark, "bits", "must hold one bit per marked position")

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        super().__init__(mark, data)
        self.positions = KeyPositions(mark, self.target, self.config.fraction)
        self.grad_buffer = GradBuffer()  # the replica passes' gradients, in one block
        self.layers = self.positions.layers
        self.index = self.positions.index
        self.values = self.positions.values

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
        return plan_positions(cls, model, key, config, payload)

    #: How the key values are set at bind time: magnitudes drawn from the layer's own weights
    #: (Tartaglione) or +-2 std (WaterMAS, which moves its marked values itself).
    draws_magnitudes: bool = False

    def prepare(self, model: nn.Module) -> nn.Module:
        if self.draws_magnitudes:
            c = self.config
            band = (c.magnitude_low, c.magnitude_high)
            self.positions.bind(model, self.mark.generator("magnitudes"), band)
        else:
            self.positions.bind(model)
        self.positions.write(model)
        return model

    def evidence(self, suspect: Suspect) -> Evidence:
        return self.positions.evidence(suspect)

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        return bit_verdict(self, self.evidence(as_suspect(suspect)), alpha, POSITION_NULL)

    # ---- realignment (verify --reference) ----------------------------------------------
    def blind_reference(self, reference: nn.Module) -> nn.Module:
        """Refused. Each key value is a connection between two units, fixed in every layer
        (output layer included) from the first training step, and the network grows its
        features around it: a unit forced to vote for a class becomes a detector of that class.
        Matching a suspect's units to the reference's by function -- even with every key value
        erased -- therefore picks units whose connections agree with the key (measured on
        unmarked digits models, benchmarks/results/realign_null.md: matched to the marked
        reference, 7 of 240 (key, model) pairs claimed at alpha 1e-6 and 43 % at 0.05; with
        the key values zeroed first, 21 % at 0.05, the read bits agreeing with the key 1.2 %
        more often than unaligned in 13 of 15 keys; v3 keys, where v2 keys gave 2 claims, 16 %
        and 1.3 % in 15 of 15), so no realignment has a valid null."""
        raise NotRealignable(
            f"{self.name}: realignment to the marked reference refused: its key values are "
            "connections fixed in every layer during training, so the reference's units grow "
            "around them and matching a suspect to them (even erased) pulls an unmarked model "
            "towards the key; realign to a model that never saw the key instead "
            "(--reference-unmarked)"
        )
