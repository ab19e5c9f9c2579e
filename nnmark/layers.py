"""Finding host layers by name, and running a model in eval mode: what white-box schemes,
attacks and defenses share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nnmark.errors import NNMarkError

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)


def weighted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv and linear layers by qualified name, in definition order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, WEIGHTED)}


def tensor_names(model: nn.Module) -> list[str]:
    """The names of `model`'s parameters and buffers as a suspect reader sees them: inside a
    DistributedDataParallel (or similar) wrapper, BatchNorm's `num_batches_tracked` counters
    left out (a step count, never a layer: nnmark.suspect.arch_mismatch ignores them too)."""
    inner = getattr(model, "module", model)
    return [n for n in inner.state_dict() if not n.endswith("num_batches_tracked")]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The conv / linear layer `name`, found by its attribute path (a penalty asks every step;
    walking every module of the model is left for the error message)."""
    try:
        found = model.get_submodule(name)
    except AttributeError:
        found = None
    if isinstance(found, WEIGHTED):
        return found
    layers = weighted_layers(model)
    if name not in layers:
        known = ", ".join(layers) or "none"
        raise NNMarkError(f"model has no conv or linear layer {name!r} (layers: {known})")
    return layers[name]


def default_host_layer(model: nn.Module) -> str:
    """The convolution with the most filter-averaged weights (the first one on ties).

    Uchida et al. embed in a middle convolution; the largest one gives the most capacity.
    Models without convolutions fall back to the widest hidden linear layer.
    """
    layers = weighted_layers(model)
    convs = {n: m for n, m in layers.items() if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d)}
    pool = convs or dict(list(layers.items())[:-1]) or layers
    if not pool:
        raise NNMarkError("model has no conv or linear layer to host a mark")
    return max(pool, key=lambda n: pool[n].weight[0].numel())


def host_vector(weight: torch.Tensor) -> torch.Tensor:
    """Uchida's host vector: the weights averaged over the first (output) dimension."""
    return weight.reshape(weight.shape[0], -1).mean(0)


def unit_kernel_vector(weight: torch.Tensor) -> torch.Tensor:
    """The mean over output units of unit-length kernels (each unit's weights on one input
    channel; a linear layer's or a 1x1 convolution's whole row): unchanged when the layer's
    output units, or a convolution's input channels, are rescaled by positive factors, which
    a ReLU network absorbs in the next or previous layer without changing its function."""
    n = weight.shape[0]
    per_channel = weight.dim() > 2 and weight[0, 0].numel() > 1
    kernels = weight.reshape(n, weight.shape[1], -1) if per_channel else weight.reshape(n, 1, -1)
    unit = kernels / kernels.norm(dim=2, keepdim=True).clamp_min(1e-12)
    return unit.mean(0).flatten()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode inside the block (BatchNorm's running statistics untouched, no
    dropout), then every module back in its own mode (a trainer may hold some in eval).

    Modes go back through `train()`, parents before children, not by setting `training`: a
    model that overrides `train()` (transformers' `use_kernels` swaps its kernels there) is
    told it trains again."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes:
            if m.training != mode:
                m.train(mode)
        for m, mode in modes:  # a module shared by two parents: the later parent's train() won
            m.training = mode


def training_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers whose running statistics training sets (in training mode, tracking
    them): the ones `nnmark.train.recalibrate_batchnorm` recomputes at the final weights, and
    the ones activation marks' penalties read the key inputs through (KeyReader)."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
