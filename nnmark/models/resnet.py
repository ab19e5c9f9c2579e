"""CIFAR-style ResNets (He et al. 2016) and WideResNets (Zagoruyko & Komodakis 2016).

Any input size (global average pooling) and any number of input channels.

Where they follow the papers, and where not (yet):
- ResNet-20 / -32 (He et al., "Deep Residual Learning", CVPR 2016, section 4.2): a 3x3 conv
  with 16 filters, three stages of n basic blocks (16, 32, 64 filters; stride 2 at each new
  stage), global average pooling and a linear layer: 6n + 2 layers (n = 3: 20, n = 5: 32), as
  the paper. Not as the paper: its CIFAR shortcut where the shape changes is option A (identity
  with zero-padded channels, no parameters); here it is a 1x1 convolution with BatchNorm
  (option B): 2,752 of ResNet-20's 272,474 parameters on CIFAR-10 (1.0 %).
- WRN-d-k (Zagoruyko & Komodakis, BMVC 2016): the same stages widened k times, dropout between
  the two convolutions of a block, 6n + 4 layers. Not as the paper: its blocks are
  pre-activation (BatchNorm, ReLU, conv) and its first stage starts from a 16-filter conv into
  16k; here the blocks are post-activation like ResNet's.
Changing either would change every model the tests and benchmarks have trained on them; it is
left for the CIFAR work (issue 15).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.models import MODELS


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = dropout
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.dropout:
            out = F.dropout(out, self.dropout, self.training)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        blocks: int = 3,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 16,
        widen: int = 1,
        dropout: float = 0.0,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        n = blocks
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        widths = [width * widen, 2 * width * widen, 4 * width * widen]
        stack: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate(widths):
            for i in range(n):
                stack.append(BasicBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1, dropout))
                cin = cout
        self.layers = nn.Sequential(*stack)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


@MODELS.register("resnet20")
def resnet20(**kw: int) -> nn.Module:
    return ResNet(blocks=3, **kw)


@MODELS.register("resnet32")
def resnet32(**kw: int) -> nn.Module:
    return ResNet(blocks=5, **kw)


@MODELS.register("wrn")
def wrn(depth: int = 16, widen: int = 4, **kw: int) -> nn.Module:
    """WideResNet-depth-widen (WRN-16-4 by default; Uchida et al. used WRN-28-10 on CIFAR).

    Depth counts 6n + 4 layers (n blocks of two convs per stage, as Zagoruyko & Komodakis).
    """
    if depth < 10 or (depth - 4) % 6:
        raise TypeError(f"wrn depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    return ResNet(blocks=(depth - 4) // 6, widen=widen, **kw)
