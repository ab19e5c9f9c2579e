"""Fine-pruning (Liu, Dolan-Gavitt, Garg 2018), a backdoor defense WRT uses as a removal attack.

Threat model: weights plus clean thief data. The channels of the last convolution that are least
active on clean data (where backdoor / trigger behaviour tends to hide) are pruned, then the model
is fine-tuned with those channels kept at zero.

Example: ``nnmark attack fineprune marked.safetensors --data digits --set fraction=0.3``
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError


@dataclass(frozen=True)
class FinePruneConfig:
    fraction: float = 0.3
    epochs: int = 3
    lr: float = 1e-3

    def __post_init__(self) -> None:
        check(0 <= self.fraction < 1, f"fraction must be in [0, 1), got {self.fraction}")


def last_conv(model: nn.Module) -> nn.Conv2d:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise NNMarkError("fineprune needs a convolutional model")
    return convs[-1]


@register("fineprune")
class FinePrune(Attack):
    Config = FinePruneConfig
    config: FinePruneConfig
    needs_data = True
    summary = "prune the last conv's channels least active on clean data, then fine-tune"
    ladder = ("fraction", (0.3, 0.6, 0.9))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        conv = last_conv(model)
        x, y = data.tensors("thief")
        acts: list[torch.Tensor] = []
        hook = conv.register_forward_hook(lambda m, i, o: acts.append(o.relu().mean((0, 2, 3))))
        model.eval()
        with torch.no_grad():
            for i in range(0, len(x), 256):
                model(x[i : i + 256])
        hook.remove()
        activity = torch.stack(acts).mean(0)
        pruned = torch.argsort(activity)[: int(round(c.fraction * len(activity)))]
        mask = torch.ones(conv.out_channels)
        mask[pruned] = 0.0
        with torch.no_grad():
            conv.weight.mul_(mask[:, None, None, None])
            if conv.bias is not None:
                conv.bias.mul_(mask)
        hooks = [conv.weight.register_hook(lambda g: g * mask[:, None, None, None])]
        if conv.bias is not None:
            hooks.append(conv.bias.register_hook(lambda g: g * mask))
        train_on(model, x, y, task=data.task, epochs=c.epochs, lr=c.lr, generator=generator)
        for h in hooks:
            h.remove()
        return model
