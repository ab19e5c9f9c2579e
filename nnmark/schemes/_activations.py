"""Reading a layer's activations with a forward hook: what activation-based schemes share.

`deepsigns` and `actsign` read the output of a named module (for a conv or linear layer: its
pre-activation, since the zoo models apply ReLU functionally) on key inputs. During training the
read keeps the graph (the penalty back-propagates through it); at verification it needs the
suspect's module, i.e. white-box access to the activations.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nnmark.device import device_of
from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers
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
