"""The model zoo: one file per family, registered by name; no torchvision.

>>> m = create_model("cnn", in_channels=1, num_classes=10, input_size=8)
>>> m.nnmark_arch, sorted(m.nnmark_kwargs)
('cnn', ['in_channels', 'input_size', 'num_classes'])
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from nnmark.errors import NNMarkError, one_line
from nnmark.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


#: Parameters and buffers a model may have unless the caller allows more (1 GiB of float32):
#: model files and their metadata are the other side's, so the size is checked before any
#: memory is allocated (`--max-params` raises it).
MAX_PARAMS = 1 << 28
#: The most layers or blocks a zoo model's `depth` / `blocks` may ask for, checked before the
#: count: building on the meta device allocates nothing but costs time and memory per module
#: (an mlp of depth 3,000,000 with one hidden unit has few parameters and took minutes, then
#: gigabytes, to count).
MAX_DEPTH = 1_000
STRUCTURAL = ("depth", "blocks")


def count_values(name: str, max_params: int | None = MAX_PARAMS, **kwargs: Any) -> int:
    """Parameters and buffers of `name` built with kwargs, counted on the meta device (nothing
    is allocated); above `max_params`, a one-line error."""
    probe = _on_meta(name, kwargs)
    count = sum(t.numel() for t in probe.state_dict().values())
    if max_params is not None and count > max_params:
        raise NNMarkError(
            f"model {name!r} with {kwargs} has {count:,} parameters, above the limit of "
            f"{max_params:,} (raise it with --max-params)"
        )
    return count


def zoo_names(name: str, kwargs: dict[str, Any]) -> frozenset[str]:
    """The state-dict names of `name` built with kwargs (on the meta device; the same bounds as
    count_values), BatchNorm's num_batches_tracked aside (an eval-mode export drops it)."""
    names = _on_meta(name, kwargs).state_dict()
    return frozenset(n for n in names if not n.endswith("num_batches_tracked"))


F = TypeVar("F", bound=Callable[..., nn.Module])


def passes_kwargs(to: type[nn.Module] | str, *fixed: str) -> Callable[[F], F]:
    """Marks a zoo factory whose **kwargs go on to `to`: a class, or the name of the factory's
    own argument naming the zoo model they go to (ensemble's `arch`); `fixed` are the class's
    arguments the factory sets itself. What check_kwargs follows to the arguments it takes."""

    def deco(factory: F) -> F:
        setattr(factory, "nnmark_passes", (to, fixed))  # noqa: B010 - not a declared attribute
        return factory

    return deco


#: What a zoo argument annotated with each type must hold: JSON's true is not an integer, and
#: 8.5 or "10" reached torch (its own error text, or a model of 1 channel for `true`).
_KINDS: dict[Any, tuple[str, Callable[[Any], bool]]] = {
    int: ("an integer", lambda v: type(v) is int),
    float: ("a number", lambda v: type(v) in (int, float) and math.isfinite(v)),
    str: ("a string", lambda v: type(v) is str),
}


#: Arguments of a number type with a narrower range than the type's: a dropout rate of 1 or more
#: zeroed every activation (or failed at the first forward).
_RANGES: dict[str, tuple[float, float]] = {"dropout": (0.0, 1.0)}


def _check_value(
    name: str, arg: str, v: Any, annotation: Any, kind: tuple[str, Callable[[Any], bool]]
) -> None:
    """Raise ValueError where zoo model `name`'s argument `arg` (annotated `annotation`) cannot
    take `v`: not of its type; an integer (a size) below 1 (a 0 built empty layers, -1 a model
    read from nothing); a rate out of its range."""
    if not kind[1](v):
        raise ValueError(f"model {name!r}: {arg} must be {kind[0]}, got {repr(v)[:40]}")
    if annotation is int and v < 1:
        raise ValueError(f"model {name!r}: {arg} must be at least 1, got {v}")
    lo, hi = _RANGES.get(arg, (-math.inf, math.inf))
    if annotation is float and not lo <= v < hi:
        raise ValueError(f"model {name!r}: {arg} must be in [{lo:g}, {hi:g}), got {v}")


def check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ValueError, naming the argument, where `kwargs` (a model file's arch_kwargs are
    the other side's) hold one zoo model `name` does not take, or a value not of its type; a
    size below 1; a rate out of range; or a depth or blocks out of [1, MAX_DEPTH] (bounded
    before any is built).
    None means the model's default."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    for k in STRUCTURAL:
        v = kwargs.get(k, 1)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_DEPTH:
            raise ValueError(
                f"model {name!r}: {k} must be an integer in [1, {MAX_DEPTH}], got {v!r}"
            )
    left, taken, fixed_here, seen = dict(kwargs), set(), set(), set()
    target: Any = MODELS.get(name)
    while target is not None and target not in seen:  # the factory, then where it passes on
        seen.add(target)
        params = inspect.signature(target, eval_str=True).parameters
        passes = None
        for p in params.values():
            if p.kind is p.VAR_KEYWORD:
                passes = getattr(target, "nnmark_passes", None)
            elif p.name not in taken and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                taken.add(p.name)
                kind = _KINDS.get(p.annotation)
                if p.name in left and kind:
                    _check_value(name, p.name, left[p.name], p.annotation, kind)
                left.pop(p.name, None)
        target = None
        if passes is not None:
            to, fixed = passes
            taken.update(fixed)
            fixed_here.update(fixed)
            if isinstance(to, str):  # the model another argument names
                member = kwargs.get(to, params[to].default)
                if type(member) is not str or member not in MODELS:
                    raise ValueError(f"model {name!r}: unknown {to} {repr(member)[:40]}")
                target = MODELS.get(member)
            else:
                target = to
    if target is not None:  # a model naming itself (an ensemble of ensembles): its own error
        return
    if left:
        raise ValueError(
            f"model {name!r} takes no argument {one_line(next(iter(left)))[:40]!r} "
            f"(it takes {', '.join(sorted(taken - fixed_here))})"
        )


def _on_meta(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """`name` built with kwargs on the meta device, its arguments checked first (check_kwargs:
    names, types, depth and blocks bounded)."""
    import torch

    factory = MODELS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    try:
        check_kwargs(name, kwargs)
    except ValueError as exc:
        raise NNMarkError(str(exc)) from None
    try:
        # torch warns on initialising a zero-size layer: refused below, in one line
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = factory(**kwargs)
    except TypeError as exc:
        raise NNMarkError(f"model {name!r}: {exc}") from None
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise NNMarkError(f"model {name!r}: cannot be built with {kwargs} ({exc})") from None
    empty = next((n for n, t in probe.state_dict().items() if t.numel() == 0), None)
    if empty is not None:  # e.g. an input too small for the pooling: no features left
        raise NNMarkError(f"model {name!r} with {kwargs} has no values in {empty} (too small)")
    return probe


def create_model(name: str, max_params: int | None = MAX_PARAMS, **kwargs: Any) -> nn.Module:
    """Build a registered architecture; kwargs set to None are dropped (the model's defaults win).
    Its size is checked first (count_values): nothing is allocated above `max_params`.

    The returned module remembers its name and kwargs (`nnmark_arch`, `nnmark_kwargs`) so a model
    file can record how to rebuild it.
    """
    factory = MODELS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    count_values(name, max_params, **kwargs)
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise NNMarkError(f"model {name!r}: {exc}") from None
    model.nnmark_arch = name
    model.nnmark_kwargs = dict(kwargs)
    return model


def activation_values(
    model: nn.Module, shape: tuple[int, ...], on_meta: bool = False
) -> tuple[int, int] | None:
    """The values every module of `model` (built on meta tensors) outputs for an input of
    `shape`, and the multiply-adds of its convolutions and linear layers, computed without
    allocating; None where the model does not run on it. The kernels' sizes are the file's:
    a 1,448-wide kernel on a 1,448-pixel input passed the values' bound and ran for minutes in
    this process (red team, session 27). `on_meta`: `model` holds real tensors, and runs here
    on meta stand-ins of them, put in place of each module's own and put back after (a tied
    weight gets one stand-in; torch.func.functional_call left a module used twice on meta)."""
    saved: list[tuple[dict[str, Any], str, Any]] = []
    if on_meta:
        stand_ins: dict[int, torch.Tensor] = {}
        for m in model.modules():
            for store in (m._parameters, m._buffers):
                for k, v in store.items():
                    if v is None:
                        continue
                    if id(v) not in stand_ins:
                        meta = torch.empty_like(v, device="meta")
                        stand_ins[id(v)] = (
                            nn.Parameter(meta, v.requires_grad)
                            if isinstance(v, nn.Parameter)
                            else meta
                        )
                    saved.append((store, k, v))
                    store[k] = stand_ins[id(v)]
    total, macs = 0, 0

    def count(module: nn.Module, inputs: Any, output: Any) -> None:
        nonlocal total, macs
        if isinstance(output, torch.Tensor):
            total += output.numel()
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
                per = weight.numel() // max(weight.shape[0], 1)
                transposed = isinstance(module, nn.modules.conv._ConvTransposeNd)
                macs += (inputs[0].numel() if transposed else output.numel()) * per

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.empty(shape, device="meta"))
    except (RuntimeError, ValueError, IndexError, NotImplementedError):
        return None
    finally:
        for hook in hooks:
            hook.remove()
        for store, k, v in saved:
            store[k] = v
    return total, macs


#: The most values a zoo model's layers may output on one input where nnmark runs it unasked at
#: the file's declared input shape (`serve`'s probe, `export`'s trace): 2 GiB of float32. A
#: cnn declared for 4096 x 4096 inputs took 10.8 GB to serve (red team, session 31).
MAX_RUN_VALUES = 1 << 29


def check_run_cost(name: str, kwargs: dict[str, Any], shape: Sequence[int]) -> None:
    """Refuse, in one line, to run zoo model `name` on one input of `shape` (the file's
    declared input) when its layers would output more than MAX_RUN_VALUES values: counted on
    the meta device first, nothing allocated."""
    values = activation_values(_on_meta(name, kwargs), (1, *shape))
    if values is None:
        raise NNMarkError(f"model {name!r} does not run on inputs of shape {list(shape)}")
    if values[0] > MAX_RUN_VALUES:
        raise NNMarkError(
            f"model {name!r} would output {values[0]:,} values on one input of shape "
            f"{list(shape)} (at most {MAX_RUN_VALUES:,}): too large to run here"
        )


def list_models() -> list[str]:
    return MODELS.names()


# Importing the family files registers them.
from nnmark.models import cnn, mlp, resnet, unet  # noqa: E402, F401
