"""Where a model runs: `--device auto|cpu|cuda|cuda:N|mps`, checked before any work.

A run's device is not part of its recipe: keys, verdicts and model files are the same whatever
device made them (files are written from CPU copies; `nnmark.io`). The training engine runs where
the model's parameters are (`nnmark.train.fit`), so moving a model moves its training, its
attacks and its verification with it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import ContextDecorator, contextmanager
from typing import Any

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


#: torch's per-backend fp32 settings (torch >= 2.9's `fp32_precision`): a matmul or convolution
#: on float32 may run in TF32 on a GPU, or in bfloat16 on a CPU that has it once the user called
#: torch.set_float32_matmul_precision("medium") (x @ w then differs by about 0.24 %: measured on
#: this project's Xeon, benchmarks/fp32_precision.py)
_FP32_KNOBS = (
    ("cuda", "matmul"),
    ("cudnn", "conv"),
    ("cudnn", "rnn"),
    ("mkldnn", "matmul"),
    ("mkldnn", "conv"),
    ("mkldnn", "rnn"),
)
#: the same before torch 2.9: the legacy flags, and the matmul precision ("medium" ran CPU
#: matmuls in bfloat16 on some of those versions too)
_LEGACY_FLAGS = (("cuda", "matmul"), ("cudnn", None))


def _knob(backend: str, op: str | None) -> Any:
    root = getattr(torch.backends, backend, None)
    return root if op is None or root is None else getattr(root, op, None)


class exact_fp32(ContextDecorator):
    """Float32 arithmetic at full precision for the block (a context or a decorator), torch's
    own settings given back after: a verdict reads the same numbers on a CPU and a GPU, whatever
    precision the caller chose for its training (the CLI's help says verdicts do not depend on
    the device).

    torch's settings are the process's, so concurrent blocks share one reference count: the
    first sets them, the last gives them back (another thread's float32 work runs exact
    meanwhile, slower but not wrong). With torch >= 2.9 only the new API (`fp32_precision`) is
    read and written: reading a legacy flag after a caller set the new one raises, and the new
    API keeps a caller's legacy settings (set_float32_matmul_precision, allow_tf32) readable
    after the restore.

    An operation's knob reads what it inherits from its backend's (`mkldnn.fp32_precision =
    "bf16"` makes `mkldnn.matmul` read "bf16"); one whose value "none" reads the same is given
    back as "none", so it follows the backend again. torch does not show whether a value was
    set or is a default: cuDNN's convolutions read "tf32" untouched, and come back set to
    "tf32", which a later change of `cudnn.fp32_precision` no longer reaches (diff review,
    session 41; set the operation's own knob then)."""

    _lock = threading.Lock()
    _depth = 0
    _saved: list[tuple[Any, str, Any]] = []

    def __enter__(self) -> exact_fp32:
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._saved = _set_exact()
            cls._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                _restore(cls._saved)
                cls._saved = []


def _set_exact() -> list[tuple[Any, str, Any]]:
    """Every float32 precision knob of this torch set to exact; what they were, to restore
    (all of them given back if one cannot be set)."""
    saved: list[tuple[Any, str, Any]] = []
    try:
        new_api = [k for k in (_knob(b, op) for b, op in _FP32_KNOBS) if k is not None]
        new_api = [k for k in new_api if hasattr(k, "fp32_precision")]
        if new_api:
            for knob in new_api:
                saved.append((knob, "fp32_precision", knob.fp32_precision))
                knob.fp32_precision = "ieee"
            return saved
        saved.append((torch, "float32_matmul_precision", torch.get_float32_matmul_precision()))
        torch.set_float32_matmul_precision("highest")
        for backend, op in _LEGACY_FLAGS:
            knob = _knob(backend, op)
            if knob is not None and hasattr(knob, "allow_tf32"):
                saved.append((knob, "allow_tf32", knob.allow_tf32))
                knob.allow_tf32 = False
        return saved
    except BaseException:
        _restore(saved)
        raise


def _restore(saved: list[tuple[Any, str, Any]]) -> None:
    """Give back what `_set_exact` changed, last first; an operation's fp32_precision that it
    would inherit anyway goes back to "none" (exact_fp32's docstring)."""
    for obj, attr, value in reversed(saved):
        if obj is torch:
            torch.set_float32_matmul_precision(value)
        elif attr == "fp32_precision":
            obj.fp32_precision = "none"
            if obj.fp32_precision != value:
                obj.fp32_precision = value
        else:
            setattr(obj, attr, value)
