"""Neural network laundering (Aiken, Kim, Woo 2021): reversed triggers, partial reset, fine-tune.

Threat model: the weights plus some clean labelled thief data, no key. Trigger-set watermarks
are backdoors, so the thief (1) reverse-engineers a candidate trigger per class with Neural
Cleanse and keeps those of the `classes` most anomalous (smallest-mask) classes, (2) resets the
hidden units (channels of each conv, neurons of each hidden linear layer) whose mean activation
rises most when clean thief inputs carry those triggers: a `reset` fraction per layer, their
incoming weights redrawn at the layer's scale and their biases zeroed, and (3) fine-tunes on
thief data, a fraction of it stamped with the triggers and kept at its true labels. The classes
laundered and Neural Cleanse's flagged class are noted on the result (`findings`).

Example: ``nnmark attack launder marked.safetensors --data digits --set reset=0.1``
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import predict, stamp, train_on
from nnmark.attacks.base import Attack, note
from nnmark.attacks.neuralcleanse import detect, stamped_loss
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers


@dataclass(frozen=True)
class LaunderConfig:
    steps: int = 100
    classes: int = 3
    reset: float = 0.1
    stamped: float = 0.2
    epochs: int = 5
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.classes >= 1, f"classes must be >= 1, got {self.classes}")
        check(0 <= self.reset <= 1, f"reset must be in [0, 1], got {self.reset}")
        check(0 <= self.stamped <= 1, f"stamped must be in [0, 1], got {self.stamped}")


def unit_activity(
    model: nn.Module, layers: dict[str, nn.Module], x: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Mean positive activation per unit (channel or neuron) of each layer on `x`."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def fn(_m: nn.Module, _i: object, out: torch.Tensor) -> None:
            a = out.detach().relu()
            a = a.mean(tuple(range(2, a.dim()))) if a.dim() > 2 else a
            sums[name] = sums.get(name, 0) + a.sum(0)

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        predict(model, x)
    finally:
        for h in handles:
            h.remove()
    return {n: v / len(x) for n, v in sums.items()}


@torch.no_grad()
def reset_units(layer: nn.Module, units: torch.Tensor, generator: torch.Generator) -> None:
    """Redraw the incoming weights of `units` at the layer's own scale; zero their biases."""
    w = layer.weight
    std = float(w.std())
    w[units] = torch.randn((len(units), *w.shape[1:]), generator=generator) * std
    bias = getattr(layer, "bias", None)
    if bias is not None:
        bias[units] = 0.0


@register("launder")
class Launder(Attack):
    Config = LaunderConfig
    config: LaunderConfig
    needs_data = True
    summary = "Neural Cleanse triggers, reset the units they excite, fine-tune (laundering)"

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        if data.task != "classification":
            raise NNMarkError("launder needs a classification model")
        c = self.config
        x, y = data.tensors("thief")
        report = detect(model, x, num_classes=data.num_classes, steps=c.steps, generator=generator)
        chosen = torch.argsort(torch.tensor(report.anomaly), descending=True)[: c.classes]
        masks, patterns = report.masks[chosen], report.patterns[chosen]
        layers = dict(list(weighted_layers(model).items())[:-1])  # every hidden layer
        which = torch.randint(0, len(chosen), (len(x),), generator=generator)
        clean = unit_activity(model, layers, x)
        triggered = unit_activity(model, layers, stamp(x, masks[which], patterns[which]))
        for name, layer in layers.items():
            rise = triggered[name] - clean[name]
            k = int(round(c.reset * len(rise)))
            if k:
                reset_units(layer, torch.argsort(rise, descending=True)[:k], generator)
        loss = stamped_loss(masks, patterns, c.stamped, generator)
        train_on(
            model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator, loss=loss
        )
        note(model, laundered_classes=chosen.tolist(), flagged_class=report.flagged)
        return model
