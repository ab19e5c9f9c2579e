"""A small CNN for 8x8 (digits) and 28x28 (MNIST) inputs: three convs, two pools, two linears."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.models import MODELS, passes_kwargs


class _MaxPool2(torch.autograd.Function):
    """2 x 2 max pooling found channels-last, its gradient taken as max_pool2d takes it."""

    @staticmethod
    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = x.contiguous(memory_format=torch.channels_last)
        out, where = F.max_pool2d(last, 2, return_indices=True)
        return out.contiguous(), where.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[torch.Tensor], output: Any) -> None:
        ctx.save_for_backward(inputs[0], output[1])
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _where: Any) -> torch.Tensor:
        x, where = ctx.saved_tensors
        # max_pool2d's own backward (itself differentiable: double backward works as before)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, where
        )


def _plain(x: torch.Tensor) -> bool:
    """Whether max_pool2d itself must run: off the CPU, on a torch.fx Proxy (no branching on
    it), under a tracer, compiler or exporter (the graph must be the zoo's), or under torch.func
    (vmap cannot ask a tensor for a channels-last layout). The torch.compiler checks where this
    torch has them: the package admits torch 2.1."""
    if isinstance(x, torch.fx.Proxy) or x.device.type != "cpu" or x.dim() != 4:
        return True
    checks = (getattr(torch.compiler, n, None) for n in ("is_compiling", "is_exporting"))
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return (
        torch.jit.is_tracing()
        or any(check() for check in checks if check is not None)
        or (wrapped is not None and bool(wrapped(x)))
    )


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """`F.max_pool2d(x, 2)`: the same values and gradients bit for bit, faster on a CPU.

    PyTorch's CPU max-pool kernel for contiguous (NCHW) inputs is several times slower than its
    channels-last one. So the maxima are found channels-last, and their gradient is
    max_pool2d's own backward at the same indices: one autograd node, which torch_pruning's
    channel tracing reads as channel-wise, as it reads max_pool2d (tests/test_cnn_pool.py; the
    time saved per step, per inference and per training: benchmarks/results/cnn_pool.md).
    Traced (torch.jit, torch.fx), compiled, exported or under torch.func, and off the CPU, it is
    plain max_pool2d, so an exported or traced graph is the zoo's as before.
    """
    if _plain(x):
        return F.max_pool2d(x, 2)
    if x.requires_grad and torch.is_grad_enabled():
        return _MaxPool2.apply(x)[0]
    return F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2).contiguous()


def _pool2(x: torch.Tensor) -> torch.Tensor:
    """max_pool2, or under torch.jit.script (which compiles no autograd.Function) max_pool2d."""
    if torch.jit.is_scripting():
        return F.max_pool2d(x, 2)
    return max_pool2(x)


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
        x = _pool2(F.relu(self.conv2(x)))
        x = _pool2(F.relu(self.conv3(x)))
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


@MODELS.register("cnn")
@passes_kwargs(SmallCNN)
def cnn(**kw: int) -> nn.Module:
    return SmallCNN(**kw)
