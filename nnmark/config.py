"""Frozen dataclass configs built from `--set key=value` strings or dicts, validated by type."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from nnmark.errors import NNMarkError, one_line

C = TypeVar("C")

#: Seeds nnmark takes from a user (CLI, bench configs): what every generator seeded from them
#: (torch, numpy) accepts.
MAX_SEED = 2**32 - 1

#: The most epochs a command or a grid accepts: a typo of a few zeros would otherwise train for
#: years (the bench, calibrate and the demo check it before anything trains).
MAX_EPOCHS = 10_000

#: Seconds a whole remote verification may take by default (`verify --time-limit`): each
#: exchange is bounded by its deadline, so a server answering each one just inside it would
#: otherwise stretch a verification to exchanges x deadline.
REMOTE_TIME_LIMIT = 3600.0

#: The largest integer an option may hold (exact in a float; bounds what a key can ask for).
MAX_INT = 1 << 53
#: Unknown option names an error lists (the rest are counted).
UNKNOWN_SHOWN = 5

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_sets(items: Iterable[str]) -> dict[str, str]:
    """Parse `key=value` strings (the CLI's repeated `--set`) into a dict.

    >>> parse_sets(["lam=0.1", "key_type=random"])
    {'lam': '0.1', 'key_type': 'random'}
    """
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise NNMarkError(f"--set expects key=value, got {item!r}")
        if key.strip() in out and out[key.strip()] != value.strip():  # the last won, unsaid
            raise NNMarkError(
                f"--set {key.strip()} given twice ({out[key.strip()]!r}, {value.strip()!r})"
            )
        out[key.strip()] = value.strip()
    return out


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """`value` as the annotation `tp` says, or one NNMarkError line naming option `name`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(name, typing.get_args(tp), value)
    if origin is typing.Literal:
        return _coerce_literal(name, typing.get_args(tp), value)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace(";", ",").split(",") if v.strip()]
        inner = (typing.get_args(tp) or (str,))[0]
        return tuple(_coerce(name, inner, v) for v in value)
    scalar = _SCALARS.get(tp)
    return value if scalar is None else scalar(name, value)


def _coerce_union(name: str, args: tuple[Any, ...], value: Any) -> Any:
    """The first member of an `A | B | None` that takes the value; 'none' / '' is None."""
    if value is None or (isinstance(value, str) and value.lower() in {"none", "null", ""}):
        if type(None) in args:
            return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(name, arg, value)
        except NNMarkError as exc:
            errors.append(str(exc))
    raise NNMarkError(errors[0] if errors else f"option {name}: bad value {value!r}")


def _coerce_literal(name: str, args: tuple[Any, ...], value: Any) -> Any:
    for arg in args:
        if str(arg) == str(value):
            return arg
    raise NNMarkError(f"option {name} must be one of {', '.join(map(str, args))}, got {value!r}")


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in _TRUE:
        return True
    if str(value).lower() in _FALSE:
        return False
    raise NNMarkError(f"option {name} must be true or false, got {value!r}")


def _to_number(name: str, value: Any, what: str) -> float:
    """A finite float from text or a number; a bool is not a number here."""
    if isinstance(value, bool):
        raise NNMarkError(f"option {name} must be {what}, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError, OverflowError):
        raise NNMarkError(f"option {name} must be {what}, got {value!r}") from None
    if not math.isfinite(f):
        raise NNMarkError(f"option {name} must be a finite number, got {value!r}")
    return f


def _to_int(name: str, value: Any) -> int:
    f = _to_number(name, value, "an integer")
    if not f.is_integer() or abs(f) > MAX_INT:
        raise NNMarkError(f"option {name} must be an integer of at most 2^53, got {value!r}")
    return int(f)


def _to_float(name: str, value: Any) -> float:
    return _to_number(name, value, "a number")


def _to_str(name: str, value: Any) -> str:
    if not isinstance(value, str | int | float) or len(str(value)) > 4096:
        raise NNMarkError(f"option {name} must be text of at most 4096 characters")
    return str(value)


#: How each scalar annotation reads a loosely typed value (anything else passes through).
_SCALARS: dict[Any, Callable[[str, Any], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
}


def check_options(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `values` that `build_config(cls, ...)` takes, coerced to their types
    (None dropped): an unknown name or a value of the wrong type is an NNMarkError naming it.
    Unlike build_config it builds nothing, so a partial set of options (a grid's attack options,
    which each cell completes with its strength) is checked as far as it goes.

    >>> from nnmark.train import TrainConfig
    >>> check_options(TrainConfig, {"epochs": "3"})
    {'epochs': 3}
    """
    merged = {k: v for k, v in values.items() if v is not None}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        # a few, each cut short: a key's config is the other side's (4.5 million names once)
        named = ", ".join(one_line(str(k)[:40]) for k in unknown[:UNKNOWN_SHOWN])
        if len(unknown) > UNKNOWN_SHOWN:
            named += f" and {len(unknown) - UNKNOWN_SHOWN:,} more"
        raise NNMarkError(f"unknown option(s) {named} for {_label(cls)} (known: {known})")
    return {k: _coerce(k, hints[k], v) for k, v in merged.items()}


def build_config(cls: type[C], values: Mapping[str, Any] | None = None, /, **extra: Any) -> C:
    """Build the frozen dataclass `cls` from loosely typed values; unknown keys are errors.

    Values set to None are dropped so a CLI default never overrides the config's own.
    """
    kwargs = check_options(cls, {**(values or {}), **extra})
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise NNMarkError(f"{_label(cls)}: {exc}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a dataclass config (tuples become lists)."""
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return out


def describe_config(cls: type) -> list[tuple[str, str, str]]:
    """(name, type, default) rows of a config class, for `--list` style help."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "required"
        tp = hints[f.name]
        tname = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        rows.append((f.name, tname, repr(default)))
    return rows


def _label(cls: type) -> str:
    return getattr(cls, "label", None) or cls.__name__


def check(condition: bool, message: str) -> None:
    """Raise a ValueError (turned into a one-line NNMarkError by build_config) unless true."""
    if not condition:
        raise ValueError(message)
