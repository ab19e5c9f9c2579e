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
3. each channel's scale is set back from the ratio of the activations' norms (to a reference
   that never saw the key: of the weights that carry it, `_scale_norms`); a conv whose scale a
   BatchNorm absorbs is set back to the reference's norm per channel.

The result has the reference's architecture and shapes and, up to fine-tuning, its weights;
no weight of the reference is copied into it, only the matching, one positive scale per
channel, and the shapes.

    realigned = realign(suspect_model, reference_model)
    verify(realigned, key)

Realignment must not manufacture evidence. The matching makes the suspect resemble the
reference; if the reference carries the mark, matching to it can pull any model towards the
mark: matched to the owner's marked model as it is, digits models that never saw the key were
claimed (85 of 240 actsign and 110 of 240 deepsigns (key, model) pairs at alpha 1e-6 with
v3 keys, 81 and 130 with v2 keys; before / after in benchmarks/results/realign_null.md). So
`verify` (realign_suspect) realigns in one of two ways:

- `--reference-unmarked MODEL`: a model that never saw the key (the owner's model before the
  mark was embedded, or the same initialisation and recipe trained without it), and the one
  the key commits to (OwnerKey.reference: its SHA-256 enters every secret's derivation, so it
  was fixed before any secret was known; `unbound`). Nothing in it depends on the key's
  secrets, so the matching is independent of every mark's statistic and the binomial null
  stays exact; every white-box mark reads the realigned suspect. A reference the key does not
  commit to is refused: built from the suspect after the key was seen, its channel order can
  be chosen so that the suspect reads the key's bits (a plain digits cnn was found at p 5e-20
  that way). (A reference that showed the key's mark was refused here before; the committed
  one cannot carry it: the key's secrets did not exist when it was committed.)
- `--reference MARKED`: the owner's marked model. Each mark first erases, in a copy of it, what
  its statistic reads (`Scheme.blind_reference`; stdm removes the key's projections from the
  host weights) and the suspect is matched to that blinded copy; a scheme for which erasing is
  not enough refuses (`NotRealignable`: uchida, tartaglione, watermas, actsign, deepsigns, whose
  marks also shape the channel order or the very units a matching has to identify) and its
  verdict is not_found with that reason. The marked model exists only after the key's
  secrets, so the key's holder could have made it for a suspect: the key commits to it after
  embedding (`stored.marked_sha256`, committed but outside the secrets) and any other is
  refused, but that commitment does not bind its channel order. What a mark reads this way is
  shown (details.p_as_read) and counts as p 1, never claimed, timestamp or not
  (MARKED_REFERENCE; nnmark.api.inadmissible): a never-marked cnn, its channels reordered
  into a "marked reference" by a 30-second search after an stdm key's secrets were known, read
  at p 1e-14 (review, session 34), and a reference fixed before a stamp can be fitted to
  models of the task as keys can. Only the unmarked route claims.

What realignment recovers: uchida, stdm, tartaglione and watermas copies (permuted, scaled,
morphed, channel-pruned, obfuscated, permuted and fine-tuned) are found again. Against the
owner's unmarked reference, channels are paired by their producing weights
(`_plans_by_weights`): a marked model and its twin share their initialisation, and the
weights tell the twin's channels apart where activations on random inputs did not (15-21 of 64
conv channels paired wrongly, up to 7 of 64 Uchida bits lost after channel pruning). Over
`python benchmarks/realign_null.py`'s attacked copies (permute, scale, morph, permute and
fine-tune; cnn, mlp, resnet20) the twin route finds, with v3 keys, uchida 120 of 120, stdm 95
of 120, tartaglione 60 of 60, watermas 60 of 60, actsign 43 of 60 and deepsigns 25 of 60 (v2
keys: stdm 94, actsign 44, deepsigns 40; paired by activations then: stdm 85, tartaglione 55,
actsign 16, deepsigns 14), and claims none of 1,920 (key, never-marked model) pairs; those
figures predate the view with the scales kept (below). As verify reads it now (three views,
p tripled; `python benchmarks/realign_null_views.py`, the same models), with each channel's
scale set back from its weights (`_plans_by_weights`): uchida 120, stdm 120, tartaglione 60,
watermas 60, actsign 45, deepsigns 57, and none of the 1,920 pairs claimed by any view or by
the verdict (with the scales set from the activations' norms: stdm 113, 23 of 30 after
`scale`, and deepsigns 50). Since actsign's and deepsigns' penalties read the host in eval
mode, as verify does, those two are 58 and 53 of 60 (`--schemes actsign,deepsigns --name
realign_null_views_activation`, none of their 480 pairs claimed); what they miss is not
realignment's: 3 epochs of fine-tuning alone (no permutation) leave 1 of 5 resnet20 keys of
each, and one deepsigns resnet20 key is not found untouched at the benchmark's 10 epochs
(`python benchmarks/realign_twin_misses.py`). With actsign's margin in units of spread
(session 43), actsign is 60 of 60, after `permute,finetune:epochs=3` too, and none of its 240
pairs is claimed (`--schemes actsign --name realign_null_views_actsign`; the verdict's false
positive rate at 0.05 is 0.058, interval 0.032 to 0.096, over correlated pairs; realign_null.py,
reading the realigned view alone, `--schemes actsign --name realign_null_actsign`: 15 of 15
keys after each attack, none of the 240 pairs claimed). Against
a blinded marked reference (which both activation marks refuse) channels are paired by
activations only. The channel scales set to the twin's (what undoes `scale`) move every mark
that reads magnitudes, of weights (ST-DM) or of activations (deepsigns), by however much the
estimate is off: from the activations' norms on random inputs, an unmoved deepsigns copy
read at BER 0.3 realigned, 0 as given, and a permuted one at 0.27; ST-DM trained from scratch
was found for 6 of 12 keys after `permute` (realign_keys_stdm.md before session 42), 12 of 12
from the weights (benchmarks/results/realign_keys_stdm.md). What is left is the twin's own
scales, which the marked model's differ from (unmoved copies realigned:
realign_twin_misses.md). So with
`--reference-unmarked` every white-box mark is read realigned, realigned with the suspect's
scales kept (`keep_scales`: the permuted deepsigns copy at BER 0, ST-DM 12 of 12), and as
given, and claimed on the smallest p, tripled (`RealignedSuspect.readings`;
tests/schemes/test_scheme_realign.py, tests/schemes/test_realign_scales.py).

A suspect that cannot be matched at all (another architecture, other layer names) is not_found
with the reason, not an error. Black-box and integrity marks read the suspect as given:
realignment only changes how weights and hidden units are read. `realign` itself matches to
whatever reference it is given: never verify a mark on a suspect realigned to a model that
carries that mark unblinded.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from nnmark.attacks._graph import (
    BATCHNORMS,
    CHANNEL_LAYERS,
    Group,
    Plan,
    apply_plans,
    batchnorm_after,
    channel_groups,
    dependency_graph,
    example_input,
    out_dim,
    rescale_before_norm,
    sync_shape_attributes,
)
from nnmark.device import exact_fp32, on_cpu, seeded
from nnmark.errors import NNMarkError
from nnmark.io import load_model, model_sha256
from nnmark.keys import Mark
from nnmark.schemes.base import NotRealignable, Scheme
from nnmark.suspect import ModuleSuspect, Suspect, UnreadableSuspect

#: A suspect channel correlating less than this with every reference channel is dropped
#: instead of merged (it is not a copy of anything).
MERGE_THRESHOLD = 0.5
MAX_POSITIONS = 8192
#: Passes of pairing by weights: each sets the inputs by the pairs and scales of the last. At
#: least WEIGHT_PASSES, then until the plans stop changing (a channel's scale read from its
#: weights is right once its inputs' are: one pass per layer of a chain without BatchNorms).
WEIGHT_PASSES = 2
#: Relative change of a channel's scale below which a pass changed nothing.
SCALE_SETTLED = 1e-5
#: Bounds on what realignment takes on, checked before it allocates (the reference is the key
#: holder's file, the suspect the other side's; red team, session 46): the values both models
#: output on the probe batch (as `serve` and `export` bound one input: a resnet20 declared for
#: 1,024-pixel inputs took 4.9 GB here, 2,048 failed to allocate), the channel groups (each
#: pass of `_plans_by_weights` matches every group, and a plan that never settles takes one
#: pass per group: a 400-layer mlp took 240 s), and the channels of one group (matched through
#: float64 matrices of reference x suspect channels: a 12,000-wide mlp took 6.6 GB). The zoo's
#: largest need a few hundred million values, 21 groups (wrn-40) and 640 channels (wrn-28-10).
MAX_GROUPS = 64
MAX_GROUP_CHANNELS = 4096


class ReferenceRefused(NNMarkError):
    """The reference itself is beyond realignment's bounds: an error of the verifier's input
    (exit 2), where a suspect beyond them reads not_found with the reason."""


def _refused(what: str, text: str) -> NNMarkError:
    return ReferenceRefused(text) if what == "reference" else NNMarkError(text)


def check_cost(model: nn.Module, x: torch.Tensor, what: str) -> None:
    """Refuse, in one line and before anything is allocated, a realignment whose probe run
    outputs more than MAX_RUN_VALUES values in `model` (counted on meta stand-ins)."""
    from nnmark.models import MAX_RUN_VALUES, activation_values

    counted = activation_values(model, tuple(x.shape), on_meta=True)
    if counted is not None and counted[0] > MAX_RUN_VALUES:
        raise _refused(
            what,
            f"realignment: the {what} would output {counted[0]:,} values on the {len(x)} "
            f"probe inputs of shape {list(x.shape[1:])} (at most {MAX_RUN_VALUES:,}): too "
            "large to realign here",
        )


def check_groups(groups: list[Group], what: str) -> None:
    """Refuse more than MAX_GROUPS channel groups, or one of more than MAX_GROUP_CHANNELS."""
    if len(groups) > MAX_GROUPS:
        raise _refused(
            what,
            f"realignment: the {what} has {len(groups)} channel groups (at most {MAX_GROUPS}): "
            "too deep to realign here",
        )
    widest = max(groups, key=lambda g: g.size, default=None)
    if widest is not None and widest.size > MAX_GROUP_CHANNELS:
        raise _refused(
            what,
            f"realignment: the {what}'s {widest.root} has {widest.size} channels (at most "
            f"{MAX_GROUP_CHANNELS}): too wide to realign here",
        )


def probe_inputs(reference: nn.Module, seed: int = 0) -> torch.Tensor:
    """Random inputs for both models: enough samples for every group, few enough to be fast."""
    one = example_input(reference)
    positions = int(one[0, 0].numel()) if one.dim() > 2 else 1
    batch = max(2, min(64, 65536 // positions))
    with seeded(seed):
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


def match_plan(
    ref_act: torch.Tensor,
    sus_act: torch.Tensor,
    weights: torch.Tensor | None = None,
    norms: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Plan:
    """The plan that maps the suspect's channels of one group onto the reference's: paired one
    to one by the activations' correlation, or by `weights` (reference x suspect channels,
    `_weight_correlation`) when given; merged by the activations; rescaled by the ratio of
    `norms` (the reference's and the suspect's per channel, `_scale_norms`) where given and
    positive, else of the activations' norms."""
    n_r, n_s = ref_act.shape[0], sus_act.shape[0]
    corr = _correlation(ref_act, sus_act)
    # weights pair a channel with no unit whose answers run against it: the same unit up to a
    # positive scale answers with it (an obfuscating dummy copies a unit's weights times -c)
    pairing = corr if weights is None else torch.where(corr < -MERGE_THRESHOLD, -weights, weights)
    rows, cols = linear_sum_assignment(-pairing.numpy())
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
    if norms is not None:  # a paired channel's scale from its weights (`_scale_norms`)
        ref_w, sus_w = norms[0].double()[target.clamp_min(0)], norms[1].double()
        paired = torch.zeros(n_s, dtype=torch.bool)
        paired[torch.as_tensor(cols)] = True
        ok = paired & (ref_w > 1e-12) & (sus_w > 1e-12)
        scale[ok] = sus_w[ok] / ref_w[ok]
        # a unit merged into a paired one (a Net2WiderNet copy): that one's scale times the
        # ratio of their answers, so copies of one unit keep one scale
        partner = select[target.clamp_min(0)]
        merged = keep & ~paired & (partner >= 0)
        ratio = sus_norm[merged] / sus_norm[partner[merged]].clamp_min(1e-12)
        scale[merged] = scale[partner[merged]] * ratio
    scale = torch.where(scale > 1e-12, scale, torch.ones_like(scale))
    out_scale = torch.ones(n_r, dtype=torch.float64)
    has = select >= 0
    out_scale[has] = 1.0 / scale[select[has]]
    merge = torch.zeros(n_s, n_r, dtype=torch.float64)
    merge[torch.nonzero(keep).flatten(), target[keep]] = scale[keep]
    return Plan(select, out_scale.float(), merge.float())


def _weight_correlation(
    model: nn.Module, reference: nn.Module, group: Group, ref_group: Group
) -> torch.Tensor:
    """|Pearson| of every reference channel's producing weights (its rows of the group's
    conv and linear out members, BatchNorms aside) with every suspect channel's, in `model`
    whose inputs are already set in the reference's order. Absolute: a channel a BatchNorm
    negates answers the same. Zero (no information) where the rows do not line up."""

    def rows(net: nn.Module, g: Group) -> torch.Tensor:
        parts = []
        for m in g.members:
            layer = net.get_submodule(m.name)
            if m.side == "out" and not isinstance(layer, BATCHNORMS):
                w = layer.weight.detach().movedim(out_dim(layer), 0)
                parts.append(w.reshape(w.shape[0], -1)[m.index.flatten()].reshape(g.size, -1))
        return torch.cat(parts, 1) if parts else torch.zeros(g.size, 0)

    ref, sus = rows(reference, ref_group), rows(model, group)
    if ref.shape[1] == 0 or ref.shape[1] != sus.shape[1]:
        return torch.zeros(ref.shape[0], sus.shape[0], dtype=torch.float64)
    return _correlation(ref, sus).abs()


def _scale_norms(net: nn.Module, g: Group) -> torch.Tensor:
    """Each channel's norm over the parameters that carry its scale (`Group.scaled`: its
    BatchNorms' weight and bias if it has any, else its producing layers' weight rows and
    bias), in `net` whose inputs are already set in the reference's order and scale."""
    parts = []
    for m in g.members:
        if m.side != "out" or m.name not in g.scaled:
            continue
        layer = net.get_submodule(m.name)
        for t, dim in ((getattr(layer, "weight", None), None), (getattr(layer, "bias", None), 0)):
            if not isinstance(t, torch.Tensor):
                continue
            t = t.detach().double()
            t = t.movedim(out_dim(layer) if dim is None else 0, 0) if t.dim() > 1 else t
            flat = t.reshape(t.shape[0], -1)[m.index.flatten()].reshape(g.size, -1)
            parts.append(flat)
    if not parts:
        return torch.zeros(g.size, dtype=torch.float64)
    return torch.cat(parts, 1).norm(dim=1)


def _plans_by_weights(
    model: nn.Module,
    reference: nn.Module,
    paired: dict[str, tuple[Group, Group]],
    plans: dict[str, Plan],
    act: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
) -> dict[str, Plan]:
    """Plans re-paired by the producing weights, `WEIGHT_PASSES` times: each pass sets the
    suspect's inputs in the reference's order with the last plans (the consumers' side only)
    and pairs each group's channels by their weights. Against the owner's unmarked twin (same
    initialisation, trained apart) the activations on random inputs paired 15-21 of 64 conv
    channels wrongly, enough to flip 7 of 64 Uchida bits after channel pruning; the weights
    paired every channel (session 29; tests/attacks/test_attacks_weights.py::test_attack_cli
    reads such copies). Each pass also sets every paired channel's scale from the weights that
    carry it (`_scale_norms`, against the reference's): the activations' norms on random inputs
    drift layer after layer between two models trained apart (ST-DM cnn copies rescaled by
    `scale` read at BER up to 0.36, 7 of 10 keys lost, realign_null_views.json before session
    42; from the weights, 10 of 10 and tests/schemes/test_realign_scales.py). A channel's
    scale read from its weights is right once its inputs' are, so the passes go on until the
    plans settle (at most one per group more). Only for a reference that never saw the key:
    the weights of a marked one would pull the suspect towards the mark."""
    ref_act, sus_act = act
    consumers = [
        dataclasses.replace(s, members=[m for m in s.members if m.side == "in"])
        for s, _ in paired.values()
    ]
    passes = WEIGHT_PASSES + len(paired) if WEIGHT_PASSES else 0  # 0: by the activations alone
    for i in range(passes):
        inputs_only = copy.deepcopy(model)
        apply_plans(inputs_only, consumers, plans)
        last = plans
        plans = {
            root: match_plan(
                ref_act[r.probe],
                sus_act[r.probe],
                _weight_correlation(inputs_only, reference, s, r),
                (_scale_norms(reference, r), _scale_norms(inputs_only, s)),
            )
            for root, (s, r) in paired.items()
        }
        if i + 1 >= WEIGHT_PASSES and all(_same_plan(last[k], plans[k]) for k in plans):
            break
    return plans


def _same_plan(a: Plan, b: Plan) -> bool:
    """The same pairs and, within SCALE_SETTLED, the same scales."""
    return bool(
        torch.equal(a.select, b.select)
        and torch.allclose(a.out_scale, b.out_scale, rtol=SCALE_SETTLED, atol=0)
        and torch.allclose(a.merge, b.merge, rtol=SCALE_SETTLED, atol=0)
    )


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
def _norm_scales_back(
    model: nn.Module, reference: nn.Module, pairs: dict[str, str], signs: bool, norms: bool = True
) -> None:
    """Per-channel scales a BatchNorm absorbs are invisible in activations: use weight norms
    (unless `norms` is off: `keep_scales`' view), and (`signs`) the sign of each channel's
    weights against the reference's: a negated channel with a negated norm weight answers the
    same (the scale attack's `flip`). Signs are read only from a reference that never saw the
    key: against a marked one they would pull the suspect towards the mark."""
    for conv, norm in pairs.items():
        w = model.get_submodule(conv).weight
        r = reference.get_submodule(conv).weight
        ws = w.reshape(w.shape[0], -1).norm(dim=1)
        rs = r.reshape(r.shape[0], -1).norm(dim=1)
        factors = torch.where((ws > 1e-12) & (rs > 1e-12), rs / ws.clamp_min(1e-12), 1.0)
        factors = factors if norms else torch.ones_like(factors)
        if signs:
            agree = (w.reshape(w.shape[0], -1) * r.reshape(r.shape[0], -1)).sum(1)
            factors = torch.where(agree < 0, -factors, factors)
        rescale_before_norm(model.get_submodule(conv), model.get_submodule(norm), factors)


def realign(
    suspect: nn.Module,
    reference: nn.Module,
    inputs: torch.Tensor | None = None,
    unmarked: bool = False,
) -> nn.Module:
    """A copy of `reference`'s architecture holding the suspect's weights, realigned to it.

    `inputs` (optional) are what both models see to match channels; random by default.
    `unmarked`: the reference never saw the key, so channels are also paired by their weights
    (`_plans_by_weights`) and the signs of channels a BatchNorm absorbs are set back.
    """
    return realign_views(suspect, reference, inputs, unmarked)[0]


def keep_scales(plan: Plan) -> Plan:
    """`plan` with each reference channel keeping its paired suspect channel's scale (a unit
    merged into it is scaled relative to that one): the view for marks that read weight
    magnitudes, which a scale set to the reference's (the default, what undoes `scale`) moves
    by however much two models trained apart differ."""
    return Plan(plan.select, torch.ones_like(plan.out_scale), plan.merge * plan.out_scale)


@exact_fp32()  # channels matched on exact activations, whatever precision the caller set
def realign_views(
    suspect: nn.Module,
    reference: nn.Module,
    inputs: torch.Tensor | None = None,
    unmarked: bool = False,
    scales_kept: bool = False,
) -> list[nn.Module]:
    """`realign`'s model, and with `scales_kept` a second one paired the same way with every
    channel's scale left as the suspect's (`keep_scales`; signs still set back)."""
    x = probe_inputs(reference) if inputs is None else inputs
    check_cost(reference, x, "reference")  # before the copies
    check_cost(suspect, x, "suspect")
    model = copy.deepcopy(suspect).eval()
    reference = copy.deepcopy(reference).eval()
    ref_graph = dependency_graph(reference, x[:1])
    ref_groups = channel_groups(reference, ref_graph)
    check_groups(ref_groups, "reference")
    sus_groups = channel_groups(model, dependency_graph(model, x[:1]))
    check_groups(sus_groups, "suspect")
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
    if unmarked:
        plans = _plans_by_weights(model, reference, paired, plans, (ref_act, sus_act))
    bn_pairs = batchnorm_after(reference, ref_graph)
    kinds = (False, True) if scales_kept else (False,)
    views = []
    for i, kept in enumerate(kinds):
        last = i == len(kinds) - 1  # the copies made above are rewritten by the last view
        moved = model if last else copy.deepcopy(model)
        apply_plans(
            moved, sus_groups, {k: keep_scales(p) for k, p in plans.items()} if kept else plans
        )
        _norm_scales_back(moved, reference, bn_pairs, unmarked, norms=not kept)
        view = reference if last else copy.deepcopy(reference)
        try:
            view.load_state_dict(moved.state_dict())
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()
            raise NNMarkError(f"realigned suspect does not fit the reference: {first}") from None
        views.append(view.eval())
    return views


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
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise NNMarkError(
            f"{suspect.label}: does not fit the reference's layers ({first})"
        ) from None
    return model.eval()


def blind(reference: nn.Module, schemes: list[Scheme]) -> tuple[nn.Module, dict[int, str]]:
    """A copy of the reference with every realignable white-box mark's read quantities erased,
    and the marks (by key index) that refuse realignment, with the reason."""
    model = copy.deepcopy(reference).eval()
    refused: dict[int, str] = {}
    for scheme in schemes:
        if scheme.kind != "whitebox":
            continue
        try:
            model = scheme.blind_reference(model)
        except NotRealignable as exc:
            refused[scheme.mark.index] = str(exc)
        except NNMarkError as exc:  # e.g. the reference lacks the mark's layer
            refused[scheme.mark.index] = (
                f"{scheme.name}: the reference does not fit the key ({exc})"
            )
    return model, refused


class RealignedSuspect(Suspect):
    """A suspect realigned to the owner's blinded reference. White-box marks read the realigned
    model; black-box and integrity marks the suspect as given; a white-box mark that cannot be
    read (the suspect could not be matched, or its scheme refuses) is not_found, with why."""

    def __init__(
        self,
        original: Suspect,
        realigned: nn.Module | None,
        label: str,
        refused: dict[int, str] | None = None,
        failure: str | None = None,
        chosen: dict[int, str] | None = None,
        scales_kept: nn.Module | None = None,
    ) -> None:
        self.original = original
        self.chosen = dict(chosen or {})
        self.info = original.info
        self.label = label
        self.refused = dict(refused or {})
        self.failure = failure
        self.realigned = ModuleSuspect(realigned, original.info, label) if realigned else None
        #: the same pairing, each channel's scale left as the suspect's (keep_scales)
        self.scales_kept = (
            ModuleSuspect(scales_kept, original.info, f"{label}, scales kept")
            if scales_kept is not None
            else None
        )

    def for_mark(self, mark: Mark) -> Suspect:
        from nnmark.schemes import SCHEMES

        if SCHEMES.get(mark.scheme).kind != "whitebox":
            return self.original
        given = self.original.for_mark(mark)
        if given.unreadable is not None:  # e.g. an ONNX graph that does not run the weights
            return given  # read (onnx_arch): realigned, they were read anyway (red team, s. 27)
        if mark.index in self.refused:
            return UnreadableSuspect(self.label, self.refused[mark.index])
        if self.realigned is None:
            return UnreadableSuspect(self.label, f"cannot realign to the reference: {self.failure}")
        if mark.index in self.chosen:
            view = copy.copy(self.realigned)
            view.chosen_after_secrets = self.chosen[mark.index]
            return view
        return self.realigned

    def readings(self, mark: Mark) -> list[Suspect]:
        """A white-box mark realigned to the unmarked reference is read three ways: realigned;
        realigned with the suspect's channel scales kept (set to the twin's, they move a mark
        that reads magnitudes by the twin's own difference: an ST-DM mark after `permute` read at
        p 1e-51 to 1e-30 realigned, 1e-187 to 1e-38 with them kept, over 12 keys,
        benchmarks/results/realign_keys_stdm.json; with the scales from the activations' norms,
        6 of 12 keys were found realigned before session 42); and as given (the
        matching reads the host units' answers, which activation marks changed, so it can lose
        a mark an unmoved copy still shows: actsign read at BER 0.5 after realigning a copy
        that read at BER 0). Every read has an exact null (the committed reference is
        independent of the key's secrets); verify triples the smallest p. One realigned to the
        marked reference is read as given too, and only that reading counts
        (nnmark.api._read)."""
        view = self.for_mark(mark)
        if view is self.realigned or mark.index in self.chosen:
            # realigned to the marked reference: that view is shown but does not count (the
            # key's holder chose it), so an unmoved copy is still read, as given (review)
            given = self.original.for_mark(mark)
            kept = [self.scales_kept] if view is self.realigned and self.scales_kept else []
            if view is not given and given.unreadable is None:
                return [view, *kept, given]
            return [view, *kept]
        return [view]

    def tensor(self, name: str) -> torch.Tensor | None:
        return self.realigned.tensor(name) if self.realigned else None

    def tensor_names(self) -> list[str]:
        return self.realigned.tensor_names() if self.realigned else []

    def module(self) -> nn.Module:
        if self.realigned is None:
            raise NNMarkError(f"{self.label}: cannot realign to the reference: {self.failure}")
        return self.realigned.module()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.original.predict(x)


def realign_suspect(
    suspect: Suspect,
    reference: str | Path | nn.Module,
    schemes: list[Scheme],
    *,
    unmarked: bool = False,
    max_params: int | None = None,
) -> RealignedSuspect:
    """`nnmark verify --reference / --reference-unmarked`: the suspect realigned to the owner's
    model (a path or a module). `schemes`: the key's marks bound to their schemes
    (nnmark.api.bound_scheme). `unmarked=False`: the reference is the marked model, blinded per
    mark or refused (`blind`); `unmarked=True`: the reference never saw the key and is used as
    it is, for the marks whose key commits to it (`unbound`). A suspect that cannot be matched does not raise:
    its white-box marks read as not_found with the reason (RealignedSuspect.for_mark)."""
    if isinstance(reference, nn.Module):
        label = f"{suspect.label} (realigned to the reference)"
    else:
        label = f"{suspect.label} (realigned to {reference})"
        reference, _ = load_model(reference, max_params=max_params)
    refused: dict[int, str] = {}
    chosen: dict[int, str] = {}  # marks realigned to a reference made after their secrets
    if unmarked:
        reference = copy.deepcopy(reference).eval()  # one copy: read for the mark, then matched
        refused = unbound(reference, schemes)
    else:
        digest = model_sha256(reference)
        reference, refused = blind(reference, schemes)
        for s in schemes:
            if s.kind == "whitebox" and s.mark.index not in refused:
                if s.mark.stored.get("marked_sha256") != digest:
                    refused[s.mark.index] = (
                        f"{s.name}: the marked reference is not the model the key commits to "
                        "(stored.marked_sha256, written when the mark was embedded)"
                    )
                else:
                    chosen[s.mark.index] = MARKED_REFERENCE
    if not any(s.kind == "whitebox" and s.mark.index not in refused for s in schemes):
        return RealignedSuspect(
            suspect, None, label, refused, "no white-box mark to realign", chosen
        )
    try:
        try:
            module = on_cpu(suspect.module())  # surgery beside the CPU reference
        except NNMarkError:
            module = rebuild_like(reference, suspect)  # reshaped by morph or channel pruning
        # to the unmarked reference, a second view keeps the suspect's channel scales: set
        # to the twin's, they move an ST-DM mark's lattice values (realign_keys_stdm.md)
        views = realign_views(module, reference, unmarked=unmarked, scales_kept=unmarked)
    except ReferenceRefused:
        raise
    except NNMarkError as exc:
        return RealignedSuspect(suspect, None, label, refused, str(exc), chosen)
    except (RuntimeError, ValueError, IndexError, KeyError) as exc:  # surgery on a misfit
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        failure = f"it does not fit the reference ({first})"
        return RealignedSuspect(suspect, None, label, refused, failure, chosen)
    kept = views[1] if len(views) > 1 else None
    return RealignedSuspect(suspect, views[0], label, refused, None, chosen, kept)


#: Why a mark realigned to its marked reference is no evidence (nnmark.api.inadmissible).
MARKED_REFERENCE = (
    "realigned to the marked reference, which the key's holder made after the key's secrets "
    "and could have made for this suspect"
)


def unbound(reference: nn.Module, schemes: list[Scheme]) -> dict[int, str]:
    """The white-box marks (by key index) that may not realign to this unmarked reference, with
    why: the key must commit to it (OwnerKey.reference, fixed before any secret). A reference
    handed in at verify time could have been built from the suspect after the key's secrets
    were known, its channel order chosen so the suspect reads the key's bits."""
    digest = model_sha256(reference)
    refused = {}
    for s in schemes:
        if s.kind != "whitebox":
            continue
        if s.mark.reference is None:
            refused[s.mark.index] = (
                f"{s.name}: the key commits to no unmarked reference, so one given at verify "
                "time could have been built for this suspect (mark with nnmark embed, or train "
                "--reference-unmarked, to commit one)"
            )
        elif s.mark.reference != digest:
            refused[s.mark.index] = (
                f"{s.name}: the unmarked reference is not the model the key commits to "
                f"(its SHA-256 {digest[:12]}..., the key's {s.mark.reference[:12]}...)"
            )
    return refused
