"""Realignment: undo permutation, scaling and Net2WiderNet widening before white-box reading.

Threat model: the owner keeps the original (reference) model; the suspect may have been
permuted, rescaled, widened and fine-tuned, all of which leave the function (nearly) intact
but move the marked weights. Layer by layer, in forward order, each suspect unit's incoming
weights (its inputs already aligned to the reference's) are matched to the reference's units by
cosine similarity (scipy.optimize.linear_sum_assignment, so the matching is one to one);
unmatched suspect units (duplicates from widening) are merged into the matched unit they copy,
their outgoing weights added in; each unit's scale is set back to the reference's norm, the
next layer's inputs divided to match. The result has the reference's shapes and (up to
fine-tuning) its weights. Chain models (mlp, cnn); see nnmark/attacks/_units.py.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from nnmark.attacks._units import (
    _resized,
    _set,
    chain_links,
    merge_into,
    reorder_units,
    scale_units,
)
from nnmark.errors import NNMarkError
from nnmark.io import load_model
from nnmark.layers import weighted_layers
from nnmark.suspect import ModuleSuspect, Suspect


def _rows(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    if layer.bias is not None:
        w = torch.cat([w, layer.bias.detach()[:, None]], 1)
    return w


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
    b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return a @ b.T


@torch.no_grad()
def realign(suspect: nn.Module, reference: nn.Module) -> nn.Module:
    """A copy of `suspect` whose hidden units are matched, merged and rescaled to `reference`."""
    model = copy.deepcopy(suspect)
    links, ref_links = chain_links(model), chain_links(reference)
    if [(lk.producer, lk.consumer) for lk in links] != [
        (lk.producer, lk.consumer) for lk in ref_links
    ]:
        raise NNMarkError("suspect and reference do not have the same layers")
    ref_layers = weighted_layers(reference)
    for link in links:
        s_rows = _rows(weighted_layers(model)[link.producer])
        r_rows = _rows(ref_layers[link.producer])
        if s_rows.shape[1] != r_rows.shape[1]:
            raise NNMarkError(f"{link.producer}: inputs could not be aligned to the reference")
        sim = _cosine(r_rows, s_rows)  # (ref units, suspect units)
        if s_rows.shape[0] < r_rows.shape[0]:
            raise NNMarkError(
                f"{link.producer}: suspect has fewer units ({s_rows.shape[0]}) than the reference "
                f"({r_rows.shape[0]})"
            )
        ref_idx, sus_idx = linear_sum_assignment(-sim.numpy())
        chosen = torch.empty(r_rows.shape[0], dtype=torch.long)
        chosen[torch.as_tensor(ref_idx)] = torch.as_tensor(sus_idx)
        # Duplicates (widening): every suspect unit folds into the chosen unit it resembles most.
        norms = s_rows.norm(dim=1).clamp_min(1e-12)
        keep_of = chosen[_cosine(s_rows, s_rows[chosen]).argmax(1)]
        keep_of[chosen] = chosen
        merge_into(model, link, keep_of, norms / norms[keep_of])
        reorder_units(model, link, chosen)
        # Scale back to the reference's norms.
        aligned = _rows(weighted_layers(model)[link.producer])
        factors = r_rows.norm(dim=1) / aligned.norm(dim=1).clamp_min(1e-12)
        scale_units(model, link, factors.clamp_min(1e-6))
    try:
        out = copy.deepcopy(reference)
        out.load_state_dict(model.state_dict())
    except RuntimeError as exc:
        raise NNMarkError(f"realigned suspect does not fit the reference: {exc}") from None
    return out.eval()


def rebuild_like(reference: nn.Module, suspect: Suspect) -> nn.Module:
    """The reference's architecture with the suspect's layer widths and weights: a widened
    suspect file no longer fits the zoo's kwargs, but its tensors say every width."""
    model = copy.deepcopy(reference)
    for name, layer in weighted_layers(model).items():
        w = suspect.tensor(f"{name}.weight")
        if w is None:
            raise NNMarkError(f"suspect has no tensor {name}.weight")
        _set(model, name, _resized(layer, out_units=w.shape[0], in_units=w.shape[1]))
    state = {k: suspect.tensor(k) for k in model.state_dict()}
    missing = [k for k, v in state.items() if v is None]
    if missing:
        raise NNMarkError(f"suspect lacks tensors {', '.join(missing[:3])}")
    model.load_state_dict(state)  # type: ignore[arg-type]
    return model.eval()


def realign_suspect(suspect: Suspect, reference_path: str | Path) -> Suspect:
    """`nnmark verify --reference`: realign the suspect against the owner's original model."""
    reference, info = load_model(reference_path)
    try:
        module = suspect.module()
    except NNMarkError:
        module = rebuild_like(reference, suspect)
    label = f"{suspect.label} (realigned)"
    return ModuleSuspect(realign(module, reference), info, label=label)
