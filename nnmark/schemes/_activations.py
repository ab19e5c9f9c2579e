"""Reading a layer's activations with a forward hook: what activation-based schemes share.

`deepsigns` and `actsign` read the output of a named module (for a conv or linear layer: its
pre-activation, since the zoo models apply ReLU functionally) on key inputs. During training the
read keeps the graph (the penalty back-propagates through it); at verification it needs the
suspect's module, i.e. white-box access to the activations.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from nnmark.device import device_of
from nnmark.errors import NNMarkError
from nnmark.layers import evaluating, training_norms, weighted_layers
from nnmark.schemes.base import unwrap
from nnmark.suspect import Suspect


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name` (any module, not only conv/linear), or a clear error."""
    modules = dict(unwrap(model).named_modules())
    if not name or name not in modules:
        known = ", ".join(weighted_layers(unwrap(model))) or "none"
        raise NNMarkError(f"model has no layer {name!r} (conv/linear layers: {known})")
    return modules[name]


def default_activation_layer(model: nn.Module) -> str:
    """The last conv/linear layer before the head: the widest late features of the zoo models."""
    layers = list(weighted_layers(unwrap(model)))
    if not layers:
        raise NNMarkError("model has no conv or linear layer whose activations can carry a mark")
    return layers[-2] if len(layers) > 1 else layers[0]


def layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The output of `layer` on inputs x, flattened per input to (N, features).

    Runs the whole model (under the caller's grad mode) and keeps the hooked output; the hook is
    removed even if the forward pass fails.
    """
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        captured.append(output if isinstance(output, torch.Tensor) else output[0])

    handle = find_module(model, layer).register_forward_hook(hook)
    try:
        model(x.to(device_of(model)))
    finally:
        handle.remove()
    if not captured:
        raise NNMarkError(f"layer {layer!r} was not called in the forward pass")
    return captured[0].flatten(1).float().cpu()  # fp32 on the CPU, as the key tensors are


def suspect_output(suspect: Suspect, layer: str, x: torch.Tensor) -> torch.Tensor | str:
    """The layer's activations in a suspect (white-box), or the reason they cannot be read."""
    try:
        module = suspect.module()
    except NNMarkError as exc:
        return str(exc)
    try:
        with torch.no_grad():
            return layer_output(module, layer, x)
    except NNMarkError as exc:
        return str(exc)
    except RuntimeError as exc:  # e.g. the suspect expects another input shape
        return f"cannot run the suspect on the key inputs ({str(exc).splitlines()[0]})"


#: Training inputs (the first rows of a step's batch) whose BatchNorm statistics normalise the key
#: inputs in `KeyReader`, and the fewest a batch must give (an epoch's short last batch reuses
#: the rows of the last batch that gave enough). Each runs forward and backward with the key
#: inputs: 64 made a marked resnet20 step on MNIST 2.66 plain steps for actsign, 16 make it
#: 1.62, and the marks held as well (the paired figures in nnmark.schemes.deepsigns).
REFERENCE_INPUTS = 16
MIN_REFERENCE_INPUTS = 8


def _normalised(
    m: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, by: torch.Tensor
) -> torch.Tensor:
    """x normalised by the batch statistics of `by` (as training mode computes them), then m's
    affine map."""
    dims = [0, *range(2, x.dim())]
    mean = by.mean(dims, keepdim=True)
    var = by.var(dims, unbiased=False, keepdim=True)
    y = (x - mean) / torch.sqrt(var + m.eps)
    if m.affine:
        shape = [1, -1] + [1] * (x.dim() - 2)
        y = y * m.weight.view(shape) + m.bias.view(shape)
    return y


@contextmanager
def normalised_by_first(
    model: nn.Module, norms: list[nn.modules.batchnorm._BatchNorm], n: int
) -> Iterator[None]:
    """Inside the block each of `norms` normalises its whole input by the batch statistics of its
    first `n` rows (differentiable, as in training mode), whatever its mode: the other rows are
    read as a model whose running statistics are those rows' is read, without entering them.
    BatchNorms of `model` that track no running statistics normalise every input by its own
    batch's statistics in any mode: the first `n` rows and the rest by their own, as apart."""

    def hook(m: nn.modules.batchnorm._BatchNorm, inputs: Any, _output: Any) -> torch.Tensor:
        return _normalised(m, inputs[0], inputs[0][:n])

    def apart(m: nn.modules.batchnorm._BatchNorm, inputs: Any, _output: Any) -> torch.Tensor:
        x = inputs[0]
        return torch.cat([_normalised(m, x[:n], x[:n]), _normalised(m, x[n:], x[n:])])

    untracked = [
        m
        for m in unwrap(model).modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
    ]
    handles = [m.register_forward_hook(hook) for m in norms]
    handles += [m.register_forward_hook(apart) for m in untracked]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class KeyReader:
    """Reads a host layer's activations on key inputs during training as the final model will
    answer them: BatchNorm layers that training sets normalise the key inputs by the statistics
    of the step's training inputs at the current weights (what the recalibration after training
    computes, `nnmark.train.recalibrate_batchnorm`), never by the key inputs' own; everything
    else in eval mode (no dropout, no running statistics touched).

    Why not the running statistics (eval mode): they lag the weights, and a penalty read through
    them can be met by weights that move the key inputs' answers only as seen through the lagging
    statistics. On the digits resnet20 one deepsigns key in 24 read BER 0 with the running
    statistics at the end of training (least margin 6.2) and 0.125 with those recomputed at the
    same weights (least margin -3.2), and was saved marked short; read this way, every key of
    the 24 was marked at BER 0 and kept it through the thief's fine-tune (paired figures:
    nnmark.schemes.deepsigns). The cost: the penalty's forward pass runs REFERENCE_INPUTS more
    rows on models with BatchNorm."""

    def __init__(self, scheme: str) -> None:
        self.scheme = scheme
        self._ref: torch.Tensor | None = None

    def __call__(self, model: nn.Module, layer: str, x: torch.Tensor, batch: Any) -> torch.Tensor:
        norms = training_norms(unwrap(model))
        with evaluating(model):
            if not norms:  # no statistics to recompute (no BatchNorm, or all frozen)
                return layer_output(model, layer, x)
            ref = self.reference(batch)
            with normalised_by_first(model, norms, len(ref)):
                return layer_output(model, layer, torch.cat([ref.to(x.device), x]))[len(ref) :]

    def reference(self, batch: Any) -> torch.Tensor:
        """The step's first REFERENCE_INPUTS training inputs (kept for a short batch)."""
        x = batch[0] if isinstance(batch, tuple | list) else batch
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise NNMarkError(
                f"{self.scheme}: on a model with BatchNorm the key inputs are normalised by the "
                "training inputs' statistics, and the batch gives no float tensor of inputs "
                f"(got {type(x).__name__}); pass (inputs, labels) batches"
            )
        if len(x) >= MIN_REFERENCE_INPUTS:
            self._ref = x[:REFERENCE_INPUTS].detach().clone()  # not a view of the batch
        elif self._ref is None:
            raise NNMarkError(
                f"{self.scheme}: a training batch of {len(x)} inputs gives no BatchNorm "
                f"statistics to read the key inputs with (at least {MIN_REFERENCE_INPUTS} needed)"
            )
        return self._ref
