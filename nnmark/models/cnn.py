"""A small CNN for 8x8 (digits) and 28x28 (MNIST) inputs: three convs, two pools, two linears."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.models import MODELS, passes_kwargs


class SmallCNN(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        input_size: int = 8,
        width: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        side = input_size // 4
        self.fc1 = nn.Linear(2 * width * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


@MODELS.register("cnn")
@passes_kwargs(SmallCNN)
def cnn(**kw: int) -> nn.Module:
    return SmallCNN(**kw)
