"""Realignment: undo permutation, rescaling, widening and channel pruning before white-box reading.

Threat model: the owner keeps the original (reference) model; the suspect may have been
permuted, rescaled, widened (Net2WiderNet), channel-pruned and fine-tuned, all of which leave
the function (nearly) intact but move the marked weights. Realignment works on the coupled
channel groups of nnmark/attacks/_graph.py (residual streams and concatenations included):

1. both models see the same random inputs; each group's channels are read at one layer (its
   BatchNorm if it has one, else the producing layer, before the ReLU);
2. suspect channels are matched one to one to the reference's by the correlation of those
   activations (scipy.optimize.linear_sum_assignment); a reference channel left without a
   partner (channel pruning) becomes an empty (zero) channel, and every other suspect channel
   that correlates with a reference channel (a Net2WiderNet duplicate) is merged into it,
   its outgoing weights added;
3. each channel's scale is set back from the ratio of the activations' norms; a conv whose
   scale a BatchNorm absorbs is set back to the reference's norm per channel.

The result has the reference's architecture and shapes and, up to fine-tuning, its weights;
no weight of the reference is copied into it, only the matching, one positive scale per
channel, and the shapes.

    realigned = realign(suspect_model, reference_model)
    verify(realigned, key)
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from nnmark.attacks._graph import (
    CHANNEL_LAYERS,
    Group,
    Plan,
    apply_plans,
    batchnorm_after,
    channel_groups,
    dependency_graph,
    example_input,
    rescale_before_norm,
    sync_shape_attributes,
)
from nnmark.errors import NNMarkError
from nnmark.io import load_model
from nnmark.suspect import ModuleSuspect, Suspect

#: A suspect channel correlating less than this with every reference channel is dropped
#: instead of merged (it is not a copy of anything).
MERGE_THRESHOLD = 0.5
MAX_POSITIONS = 8192


def probe_inputs(reference: nn.Module, seed: int = 0) -> torch.Tensor:
    """Random inputs for both models: enough samples for every group, few enough to be fast."""
    one = example_input(reference)
    positions = int(one[0, 0].numel()) if one.dim() > 2 else 1
    batch = max(2, min(64, 65536 // positions))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return example_input(reference, batch=batch)


@torch.no_grad()
def _activations(model: nn.Module, probes: list[str], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each probe layer's output as (channels, samples)."""
    found: dict[str, torch.Tensor] = {}
    handles = []
    for name in probes:

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            found[name] = out.detach().movedim(1, 0).reshape(out.shape[1], -1).clone()

        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        model.eval()
        model(x)
    finally:
        for h in handles:
            h.remove()
    gen = torch.Generator().manual_seed(0)
    for name, a in found.items():
        if a.shape[1] > MAX_POSITIONS:
            found[name] = a[:, torch.randperm(a.shape[1], generator=gen)[:MAX_POSITIONS]]
    return found


def _correlation(ref: torch.Tensor, sus: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every reference channel with every suspect channel."""

    def unit(a: torch.Tensor) -> torch.Tensor:
        a = a.double() - a.double().mean(1, keepdim=True)
        return a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)

    return unit(ref) @ unit(sus).T


def match_plan(ref_act: torch.Tensor, sus_act: torch.Tensor) -> Plan:
    """The plan that maps the suspect's channels of one group onto the reference's."""
    n_r, n_s = ref_act.shape[0], sus_act.shape[0]
    corr = _correlation(ref_act, sus_act)
    rows, cols = linear_sum_assignment(-corr.numpy())
    select = torch.full((n_r,), -1, dtype=torch.long)
    select[torch.as_tensor(rows)] = torch.as_tensor(cols)
    target = torch.full((n_s,), -1, dtype=torch.long)
    best = corr.max(0)
    extra = best.values > MERGE_THRESHOLD
    target[extra] = best.indices[extra]
    target[torch.as_tensor(cols)] = torch.as_tensor(rows)
    ref_norm = ref_act.double().norm(dim=1)
    sus_norm = sus_act.double().norm(dim=1)
    keep = target >= 0
    scale = torch.ones(n_s, dtype=torch.float64)
    scale[keep] = sus_norm[keep] / ref_norm[target[keep]].clamp_min(1e-12)
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    out_scale = torch.ones(n_r, dtype=torch.float64)
    has = select >= 0
    out_scale[has] = 1.0 / scale[select[has]]
    merge = torch.zeros(n_s, n_r, dtype=torch.float64)
    merge[torch.nonzero(keep).flatten(), target[keep]] = scale[keep]
    return Plan(select, out_scale.float(), merge.float())


def _pair_groups(suspect: list[Group], reference: list[Group]) -> dict[str, tuple[Group, Group]]:
    ref = {g.root: g for g in reference}
    sus = {g.root: g for g in suspect}
    if ref.keys() != sus.keys() or any(
        {(m.name, m.side) for m in sus[k].members} != {(m.name, m.side) for m in ref[k].members}
        for k in ref
    ):
        raise NNMarkError("suspect and reference do not have the same layers and connections")
    return {k: (sus[k], ref[k]) for k in ref}


@torch.no_grad()
def _norm_scales_back(model: nn.Module, reference: nn.Module, pairs: dict[str, str]) -> None:
    """Per-channel scales a BatchNorm absorbs are invisible in activations: use weight norms."""
    for conv, norm in pairs.items():
        w = model.get_submodule(conv).weight
        r = reference.get_submodule(conv).weight
        ws = w.reshape(w.shape[0], -1).norm(dim=1)
        rs = r.reshape(r.shape[0], -1).norm(dim=1)
        factors = torch.where((ws > 1e-12) & (rs > 1e-12), rs / ws.clamp_min(1e-12), 1.0)
        rescale_before_norm(model.get_submodule(conv), model.get_submodule(norm), factors)


def realign(
    suspect: nn.Module, reference: nn.Module, inputs: torch.Tensor | None = None
) -> nn.Module:
    """A copy of `reference`'s architecture holding the suspect's weights, realigned to it.

    `inputs` (optional) are what both models see to match channels; random by default.
    """
    model = copy.deepcopy(suspect).eval()
    reference = copy.deepcopy(reference).eval()
    x = probe_inputs(reference) if inputs is None else inputs
    ref_graph = dependency_graph(reference, x[:1])
    ref_groups = channel_groups(reference, ref_graph)
    sus_groups = channel_groups(model, dependency_graph(model, x[:1]))
    paired = _pair_groups(sus_groups, ref_groups)
    probes = sorted({g.probe for g in ref_groups})
    try:
        ref_act = _activations(reference, probes, x)
        sus_act = _activations(model, probes, x)
    except RuntimeError as exc:
        raise NNMarkError(f"suspect does not run on the reference's inputs ({exc})") from None
    plans = {
        root: match_plan(ref_act[r.probe], sus_act[r.probe]) for root, (_, r) in paired.items()
    }
    apply_plans(model, sus_groups, plans)
    _norm_scales_back(model, reference, batchnorm_after(reference, ref_graph))
    try:
        reference.load_state_dict(model.state_dict())
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise NNMarkError(f"realigned suspect does not fit the reference: {first}") from None
    return reference.eval()


def rebuild_like(reference: nn.Module, suspect: Suspect) -> nn.Module:
    """The reference's architecture with the suspect's layer widths and weights.

    A widened or channel-pruned file no longer fits the zoo's arch kwargs, but its tensors say
    every width; the connections come from the reference.
    """
    model = copy.deepcopy(reference)
    for mname, module in model.named_modules():
        if not isinstance(module, CHANNEL_LAYERS):
            continue
        for pname, _ in list(module.named_parameters(recurse=False)) + list(
            module.named_buffers(recurse=False)
        ):
            full = f"{mname}.{pname}" if mname else pname
            t = suspect.tensor(full)
            if t is None:
                raise NNMarkError(f"{suspect.label}: no tensor {full!r}")
            if pname in module._parameters:
                setattr(module, pname, nn.Parameter(t.detach().clone().float()))
            else:
                setattr(module, pname, t.detach().clone())
        sync_shape_attributes(module)
    state = {k: suspect.tensor(k) for k in model.state_dict()}
    missing = [k for k, v in state.items() if v is None]
    if missing:
        raise NNMarkError(f"{suspect.label}: lacks tensors {', '.join(missing[:3])}")
    try:
        model.load_state_dict(state)  # type: ignore[arg-type]
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise NNMarkError(
            f"{suspect.label}: does not fit the reference's layers ({first})"
        ) from None
    return model.eval()


def realign_suspect(suspect: Suspect, reference_path: str | Path) -> Suspect:
    """`nnmark verify --reference`: realign the suspect against the owner's original model."""
    reference, info = load_model(reference_path)
    try:
        module = suspect.module()
    except NNMarkError:
        module = rebuild_like(reference, suspect)  # reshaped by morph or channel pruning
    label = f"{suspect.label} (realigned to {reference_path})"
    return ModuleSuspect(realign(module, reference), info, label=label)
