"""Unit-level surgery on chain models, shared by permute / scale / morph and by realignment.

A *link* is a producer layer whose output units feed a consumer layer's inputs (a conv feeding a
conv, or a conv feeding a linear layer through a flatten: then each channel owns `group`
consecutive input columns). Chain models are those whose conv / linear layers run one after the
other in definition order with only ReLU, pooling and flatten between them: the zoo's `mlp` and
`cnn`. Models with BatchNorm, residual additions or skip concatenations (resnet, wrn, unet)
couple channels across layers and are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Link:
    producer: str
    consumer: str
    group: int  # consumer input columns per producer unit


def chain_links(model: nn.Module) -> list[Link]:
    """The links of a chain model, in forward order (every hidden layer is a producer)."""
    arch = getattr(model, "nnmark_arch", type(model).__name__)
    if any(isinstance(m, NORMS) for m in model.modules()):
        raise NNMarkError(
            f"unit-level attacks and realignment support chain models without normalisation "
            f"layers (mlp, cnn); {arch} has BatchNorm or similar"
        )
    if any(isinstance(m, nn.ConvTranspose2d) for m in model.modules()):
        raise NNMarkError(f"{arch}: transposed convolutions (U-Net) are not a chain model")
    layers = list(weighted_layers(model).items())
    links = []
    for (pname, p), (cname, c) in zip(layers[:-1], layers[1:]):
        out_units, in_cols = p.weight.shape[0], c.weight.shape[1]
        if in_cols % out_units:
            raise NNMarkError(f"{arch}: {pname} -> {cname} is not a chain link")
        links.append(Link(pname, cname, in_cols // out_units))
    return links


def _columns(units: torch.Tensor, group: int) -> torch.Tensor:
    return (units[:, None] * group + torch.arange(group)).flatten()


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@torch.no_grad()
def reorder_units(model: nn.Module, link: Link, order: torch.Tensor) -> None:
    """Producer unit order[i] becomes unit i (also drops or repeats units if order says so);
    the consumer's input columns follow, so with a permutation the function is unchanged."""
    layers = weighted_layers(model)
    p, c = layers[link.producer], layers[link.consumer]
    new_p = _resized(p, out_units=len(order))
    new_p.weight.copy_(p.weight[order])
    if p.bias is not None:
        new_p.bias.copy_(p.bias[order])
    new_c = _resized(c, in_units=len(order) * link.group)
    new_c.weight.copy_(c.weight[:, _columns(order, link.group)])
    if c.bias is not None:
        new_c.bias.copy_(c.bias)
    _set(model, link.producer, new_p)
    _set(model, link.consumer, new_c)


@torch.no_grad()
def scale_units(model: nn.Module, link: Link, factors: torch.Tensor) -> None:
    """Producer unit i times factors[i] > 0, consumer inputs times 1 / factors[i] (ReLU and max
    pooling are positively homogeneous, so the function is unchanged)."""
    layers = weighted_layers(model)
    p, c = layers[link.producer], layers[link.consumer]
    shape = (-1,) + (1,) * (p.weight.dim() - 1)
    p.weight.mul_(factors.reshape(shape))
    if p.bias is not None:
        p.bias.mul_(factors)
    inv = (1.0 / factors).repeat_interleave(link.group)
    c.weight.mul_(inv.reshape((1, -1) + (1,) * (c.weight.dim() - 2)))


@torch.no_grad()
def merge_into(model: nn.Module, link: Link, keep: torch.Tensor, ratios: torch.Tensor) -> None:
    """Add each consumer column block of unit j (weighted by ratios[j]) into that of unit
    keep[j]: the inverse of Net2WiderNet's split, used before dropping the duplicates."""
    c = weighted_layers(model)[link.consumer]
    cols = c.weight.clone()
    for j in range(len(keep)):
        k = int(keep[j])
        if k == j:
            continue
        src = _columns(torch.tensor([j]), link.group)
        dst = _columns(torch.tensor([k]), link.group)
        c.weight[:, dst] += cols[:, src] * ratios[j]


def _resized(
    layer: nn.Module, out_units: int | None = None, in_units: int | None = None
) -> nn.Module:
    w = layer.weight
    out_n = out_units if out_units is not None else w.shape[0]
    in_n = in_units if in_units is not None else w.shape[1]
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        new: nn.Module = nn.Linear(in_n, out_n, bias=bias)
    elif isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(
            in_n,
            out_n,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            bias=bias,
        )
    else:
        raise NNMarkError(f"cannot resize a {type(layer).__name__}")
    return new.to(w.dtype)
