"""A plain multi-layer perceptron (also the parameter-heavy model of the memory benchmarks)."""

from __future__ import annotations

import torch
from torch import nn

from nnmark.models import MODELS, passes_kwargs


class MLP(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 8,
        hidden: int = 256,
        depth: int = 2,
    ) -> None:
        super().__init__()
        dims = [in_channels * input_size * input_size] + [hidden] * depth
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


@MODELS.register("mlp")
@passes_kwargs(MLP)
def mlp(**kw: int) -> nn.Module:
    return MLP(**kw)
