"""The library functions behind the CLI verbs: `train`, `embed`, `attack`, `verify`."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from nnmark.attacks import build_attack
from nnmark.config import build_config
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.io import ModelInfo
from nnmark.keys import OwnerKey
from nnmark.models import create_model
from nnmark.schemes import SCHEMES, Scheme, scheme_for
from nnmark.stats import DEFAULT_ALPHA, decide, fisher_combine
from nnmark.suspect import Suspect, as_suspect
from nnmark.train import ProgressFn, TrainConfig, fit
from nnmark.verdict import Verdict


def new_model(arch: str, data: DataBundle, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """A fresh zoo model sized for `data` (channels, classes, input size).

    With `seed`, the initial weights depend on that seed alone (not on the global RNG state).
    """
    kwargs = {**data.model_kwargs(), **kwargs}
    if seed is None:
        return create_model(arch, **kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model(arch, **kwargs)


def model_info(model: nn.Module, data: DataBundle) -> ModelInfo:
    """The metadata a model file needs to rebuild `model` (a zoo model) with no pickle."""
    arch = getattr(model, "nnmark_arch", None)
    if arch is None:
        raise ValueError("model was not built by nnmark.models.create_model")
    return ModelInfo(
        arch=arch,
        arch_kwargs=dict(model.nnmark_kwargs),  # type: ignore[arg-type]
        task=data.task,
        input_shape=data.input_shape,
        num_classes=int(model.nnmark_kwargs.get("num_classes", data.num_classes)),  # type: ignore[union-attr]
    )


def train(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig | None = None,
    *,
    progress: ProgressFn | None = None,
) -> nn.Module:
    """Train without a mark (the plain reference model). Returns a trained copy."""
    return fit(copy.deepcopy(model), data, (), config, progress=progress)


def embed(
    model: nn.Module,
    data: DataBundle,
    scheme: str,
    *,
    options: dict[str, Any] | None = None,
    key: OwnerKey | None = None,
    owner: str = "owner",
    bits: int | None = None,
    payload: Sequence[int] | None = None,
    config: TrainConfig | None = None,
    teacher: nn.Module | None = None,
    progress: ProgressFn | None = None,
    message: str | None = None,
) -> tuple[nn.Module, OwnerKey]:
    """Embed a mark while training `model` (a copy): train-, fine-tune- or distill-to-embed.

    A fresh model is train-to-embed; a trained one is fine-tune-to-embed; with `teacher` no label
    is read (distill-to-embed). The mark is added to `key` (a new key for `owner` if None).
    `scheme` may name several schemes, "uchida+content": all are embedded in one training (a
    composite mark, verified together). With `message`, the payload is that text as a BCH
    codeword repeated to fill the mark's bits (`bits`, default 255; tartaglione / watermas: one
    per marked entry; Scheme.encode_payload, nnmark.ecc); `verify` reports the decoded text.

    >>> from nnmark.data import load_data
    >>> data = load_data("digits")
    >>> marked, key = embed(new_model("cnn", data), data, "uchida", bits=32,
    ...                     config=TrainConfig(epochs=2))
    >>> verify(marked, key).verdict
    'found'
    """
    names = [n.strip() for n in scheme.split("+") if n.strip()]
    if len(names) > 1 and (options and not all(isinstance(v, dict) for v in options.values())):
        raise NNMarkError("with several schemes ('a+b'), options are {scheme: {option: value}}")
    key = key or OwnerKey.new(owner)
    model = copy.deepcopy(model)
    bound = []
    for name in names:
        cls = SCHEMES.get(name)
        opts = (options or {}).get(name, {}) if len(names) > 1 else options or {}
        cfg: Any = build_config(cls.Config, opts)
        ecc = None
        chosen = tuple(payload) if payload else None
        if message is not None and cls.kind == "whitebox":
            chosen, ecc = cls.encode_payload(message, model, cfg, bits=bits, data=data)
        mark = cls.plan(model, key, cfg, bits=bits, payload=chosen, data=data)
        if ecc is not None:
            mark = dataclasses.replace(mark, message=message, data={**mark.data, "ecc": ecc})
        key = key.with_mark(mark)
        bound.append(cls(mark))
    model = fit(model, data, bound, config, teacher=teacher, progress=progress)
    return model, key


def attack(
    model: nn.Module,
    spec: str,
    data: DataBundle | None = None,
    *,
    options: dict[str, Any] | None = None,
    seed: int = 0,
) -> nn.Module:
    """Run an attack or a chain spec (`prune:fraction=0.5,finetune:epochs=3`) on a copy."""
    return build_attack(spec, options)(model, data, seed=seed)


def bound_scheme(key: OwnerKey, index: int) -> Scheme:
    """The scheme of mark `index`, with its calibration (derived data) attached if any."""
    scheme = scheme_for(key.marks[index])
    scheme.calibration = key.derived.get("calibration", {}).get(str(index))
    return scheme


COMBINED_NULL = (
    "Fisher's method over the marks' p-values, each under its own null "
    "(the marks' tests are taken as independent)"
)


def verify(
    suspect: Suspect | nn.Module | str,
    key: OwnerKey,
    alpha: float = DEFAULT_ALPHA,
) -> Verdict:
    """Verify every mark of `key` in `suspect`; several marks give one combined verdict.

    `suspect` may be a path, an `nn.Module` (your own class works: only the named tensors are
    read by white-box schemes) or a `Suspect`.
    """
    s = as_suspect(suspect)
    verdicts = [bound_scheme(key, m.index).verify(s, alpha) for m in key.marks]
    if len(verdicts) == 1:
        return verdicts[0]
    p = fisher_combine([v.p_value for v in verdicts])
    integrity = all(v.verdict in ("intact", "modified") for v in verdicts)
    found = decide(p, alpha)
    word = ("intact" if found else "modified") if integrity else ("found" if found else "not_found")
    return Verdict(
        scheme="+".join(v.scheme for v in verdicts),
        verdict=word,  # type: ignore[arg-type]
        statistic_name="fisher_chi2_p",
        statistic=p,
        p_value=p,
        alpha=alpha,
        n=sum(v.n for v in verdicts),
        null=COMBINED_NULL,
        queries=sum(v.queries or 0 for v in verdicts) or None,
        parts=tuple(verdicts),
    )


def replace_alpha(verdict: Verdict, alpha: float) -> Verdict:
    return dataclasses.replace(verdict, alpha=alpha)
