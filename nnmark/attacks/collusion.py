"""Fingerprint collusion: k recipients combine their copies of one model into one they leak.

Threat model: k holders of fingerprinted copies (`nnmark.fingerprint`: the same base, each
fine-tuned with its own recipient's mark) pool them. Averaging the weights (`how="mean"`) scales
each colluder's own mark by 1/k against the others' independent marks; the element-wise median
(`how="median"`) keeps, per weight, a value one of them holds. Both keep the architecture, and
since the copies share a base and differ by a fine-tune, the pooled model still works (the
copies sit in one basin). Outputs can be pooled too, but a white-box verifier then reads every
colluder's weights; the weight pools are the ones that hide them.

Not a registered `Attack`: those take one model, this takes k. `benchmarks/collusion.py`
measures what `nnmark identify` names after it, for k = 2, 4, 8.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from nnmark.errors import NNMarkError

__all__ = ["collude"]


@torch.no_grad()
def collude(models: Sequence[nn.Module], how: Literal["mean", "median"] = "mean") -> nn.Module:
    """One model whose every tensor (parameters and buffers) is the mean or the element-wise
    median of the copies' (integer buffers: the first copy's); the copies are left as they were."""
    if len(models) < 2:
        raise NNMarkError(f"collusion needs at least 2 copies, got {len(models)}")
    if how not in ("mean", "median"):
        raise NNMarkError(f"how must be mean or median, got {how!r}")
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states):
        raise NNMarkError("the copies do not share one architecture (their tensors differ)")
    out = copy.deepcopy(models[0])
    pooled = {}
    for name, first in states[0].items():
        if any(s[name].shape != first.shape for s in states):
            raise NNMarkError(f"tensor {name} has different shapes across the copies")
        if not first.is_floating_point():
            pooled[name] = first.clone()
            continue
        stack = torch.stack([s[name].float() for s in states])
        value = stack.mean(0) if how == "mean" else stack.median(0).values
        pooled[name] = value.to(first.dtype)
    out.load_state_dict(pooled)
    return out.eval()
