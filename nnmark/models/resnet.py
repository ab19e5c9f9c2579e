"""CIFAR-style ResNets (He et al. 2016) and WideResNets (Zagoruyko & Komodakis 2016).

Any input size (global average pooling) and any number of input channels.

- ResNet-20 / -32 (He et al., "Deep Residual Learning", CVPR 2016, section 4.2): a 3x3 conv
  with 16 filters, three stages of n basic blocks (16, 32, 64 filters; stride 2 at each new
  stage), global average pooling and a linear layer: 6n + 2 layers (n = 3: 20, n = 5: 32).
  Where a stage widens, the paper's CIFAR shortcut is option A: the input subsampled by 2 and
  its channels zero-padded (no parameters; PadShortcut); `resnet32` is that, 464,154 parameters on CIFAR-10
  (the paper's Table 6: 0.46M), the net seed 003 marks. `resnet20` keeps a 1x1 convolution with
  BatchNorm there (option B, `shortcut="B"`; 272,474 parameters, 2,752 more than option A's
  269,722): every resnet20 the tests and benchmarks trained has it, and either is a kwarg.
- WRN-d-k (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016, and their code,
  github.com/szagoruyko/wide-residual-networks): a 16-filter 3x3 conv, three stages of
  pre-activation blocks (BatchNorm, ReLU, conv; dropout between the two convs) of 16k, 32k, 64k
  filters, a final BatchNorm and ReLU, pooling, linear: 6n + 4 layers. Where a block changes
  the shape, its shortcut is a 1x1 convolution of the pre-activated input. WRN-28-10 (seed 002,
  Uchida et al.) has 36,479,194 parameters on CIFAR-10 (the paper's Table: 36.5M).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.models import MODELS, passes_kwargs


class PadShortcut(nn.Module):
    """He et al.'s option A: the input subsampled by `stride`, zero channels appended.

    Held as a fixed 0/1 matrix [I; 0] (a buffer, never trained, no parameter), applied as a
    strided 1x1 convolution: the same function as slicing and padding, but one that channel
    surgery (nnmark/attacks/_graph.py) can permute, rescale and widen like any layer, so a
    thief's function-preserving rewrite of the network keeps the shortcut exact."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.register_buffer("weight", torch.eye(cout, cin).reshape(cout, cin, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, stride=self.stride)


class BasicBlock(nn.Module):
    def __init__(
        self, cin: int, cout: int, stride: int, dropout: float = 0.0, shortcut: str = "B"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = dropout
        self.shortcut: nn.Module = nn.Identity()
        if (stride != 1 or cin != cout) and shortcut == "A":
            self.shortcut = PadShortcut(cin, cout, stride)
        elif stride != 1 or cin != cout:
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
        shortcut: str = "B",
    ) -> None:
        super().__init__()
        if shortcut not in ("A", "B"):
            raise TypeError(f"shortcut must be 'A' or 'B', got {shortcut!r}")
        n = blocks
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        widths = [width * widen, 2 * width * widen, 4 * width * widen]
        stack: list[nn.Module] = []
        cin = width
        for stage, cout in enumerate(widths):
            for i in range(n):
                stride = 2 if (i == 0 and stage > 0) else 1
                stack.append(BasicBlock(cin, cout, stride, dropout, shortcut))
                cin = cout
        self.layers = nn.Sequential(*stack)
        self.fc = nn.Linear(cin, num_classes)

    @property
    def class_centre_layer(self) -> str:
        """Where deepsigns reads a class centre by default: the last conv of the next-to-last
        block. The last block's conv2 is the last conv before the head (through its BatchNorm,
        the residual sum and pooling), and a thief's fine-tune took deepsigns' projections
        there back towards zero (nnmark.schemes.deepsigns says how far)."""
        return f"layers.{len(self.layers) - 2}.conv2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class PreActBlock(nn.Module):
    """Zagoruyko & Komodakis's block: BN-ReLU-conv, dropout, BN-ReLU-conv, plus the input (or a
    1x1 conv of the pre-activated input where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = F.relu(self.bn2(self.conv1(o)))
        if self.dropout:
            y = F.dropout(y, self.dropout, self.training)
        return self.conv2(y) + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    def __init__(
        self,
        blocks: int,
        widen: int,
        in_channels: int = 3,
        num_classes: int = 10,
        dropout: float = 0.0,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        stack: list[nn.Module] = []
        cin = 16
        for stage, cout in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for i in range(blocks):
                stack.append(PreActBlock(cin, cout, 2 if (i == 0 and stage > 0) else 1, dropout))
                cin = cout
        self.layers = nn.Sequential(*stack)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@MODELS.register("resnet20")
@passes_kwargs(ResNet, "blocks")
def resnet20(shortcut: str = "B", **kw: int) -> nn.Module:
    return ResNet(blocks=3, shortcut=shortcut, **kw)


@MODELS.register("resnet32")
@passes_kwargs(ResNet, "blocks")
def resnet32(shortcut: str = "A", **kw: int) -> nn.Module:
    return ResNet(blocks=5, shortcut=shortcut, **kw)


@MODELS.register("wrn")
@passes_kwargs(WideResNet, "blocks", "widen")
def wrn(depth: int = 16, widen: int = 4, **kw: int) -> nn.Module:
    """WideResNet-depth-widen (WRN-16-4 by default; Uchida et al.'s code trains N = 1, k = 4 on
    CIFAR-10, i.e. WRN-10-4: yu4u/dnn-watermark, config/train_random.json).

    Depth counts 6n + 4 layers (n blocks of two convs per stage, as Zagoruyko & Komodakis).
    """
    if depth < 10 or (depth - 4) % 6:
        raise TypeError(f"wrn depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    return WideResNet(blocks=(depth - 4) // 6, widen=widen, **kw)
