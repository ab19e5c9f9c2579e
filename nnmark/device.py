"""Where a model runs: `--device auto|cpu|cuda|cuda:N|mps`, checked before any work.

A run's device is not part of its recipe: keys, verdicts and model files are the same whatever
device made them (files are written from CPU copies; `nnmark.io`). The training engine runs where
the model's parameters are (`nnmark.train.fit`), so moving a model moves its training, its
attacks and its verification with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from nnmark.errors import NNMarkError

DEVICE_HELP = "Where models run: auto (a GPU when present), cpu, cuda, cuda:N or mps"
_SPEC = re.compile(r"^(auto|cpu|mps|cuda)(?::(\d{1,3}))?$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The torch device `spec` names, refused in one line when it is not on this machine."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = "auto" if spec is None else spec.strip().lower()
    match = _SPEC.match(text)
    if match is None:
        raise NNMarkError(f"unknown device {spec!r}: use auto, cpu, cuda, cuda:N or mps")
    kind, index = match.group(1), match.group(2)
    if kind == "auto":
        if index is not None:
            raise NNMarkError(f"unknown device {spec!r}: 'auto' takes no index")
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cpu":
        if index not in (None, "0"):
            raise NNMarkError(f"unknown device {spec!r}: the CPU is 'cpu'")
        return torch.device("cpu")
    if kind == "mps":
        if not _mps_available():
            raise NNMarkError("device 'mps' is not available on this machine")
        return torch.device("mps")
    if not torch.cuda.is_available():
        raise NNMarkError(f"device {text!r} is not available: no CUDA GPU on this machine")
    count = torch.cuda.device_count()
    if index is not None and int(index) >= count:
        raise NNMarkError(f"device {text!r} is not available: this machine has {count} GPU(s)")
    return torch.device(text)


def device_of(model: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer); the CPU for an empty module."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Torch's global RNG seeded with `seed` for the block, the caller's state given back after:
    a run is reproducible from its seed, and the caller's own random stream is not reset by it.

    On a CUDA `device` its generator is forked and seeded too, that device's only (a DDP rank
    touches no other GPU); torch.manual_seed would seed every GPU's and give none back (diff
    review, session 38)."""
    cuda = []
    if device is not None and device.type == "cuda":
        cuda = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield


def on_cpu(model: nn.Module) -> nn.Module:
    """`model` itself when it is on the CPU, else a CPU copy (the caller's model stays put)."""
    if device_of(model).type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).cpu()


class OnDevice(nn.Module):
    """A model on an accelerator behind a CPU interface: inputs go to its device, outputs come
    back to the CPU (for callers that hold CPU tensors, as the OIP server does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(device_of(self.model))).cpu()
