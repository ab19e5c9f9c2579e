"""Coupled channel groups, and function-preserving surgery on them (permute, scale, widen).

A residual addition ties the channels of every layer that writes into the same stream; a
concatenation gives a consumer's input columns several sources; a flatten gives each channel
several consecutive columns of the next linear layer. torch_pruning's DependencyGraph already
follows all of this, so a *group* here is one of its pruning groups, reduced to the layers that
hold weights: the `out` members produce the group's channels (convs, linears, transposed convs,
BatchNorms), the `in` members consume them. Changing a group's channels the same way in every
member (a permutation, a positive rescaling, a duplication with split outgoing weights) keeps
the network's function. Shared by the permute / scale / morph / prune attacks and by
nnmark/defenses/realign.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.models.resnet import PadShortcut

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: Fixed linear maps between channel groups (a buffer `weight`, out x in x ...): rewritten with
#: the groups they join, scaled with their output group, never trained.
FIXED_MAPS = (PadShortcut,)
CHANNEL_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Linear,
    nn.ConvTranspose2d,
    *BATCHNORMS,
    *FIXED_MAPS,
)
_OTHER_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d)


@dataclass
class Member:
    """One layer's part in a group: its module indices per group channel, shape (n, k)."""

    name: str
    side: Literal["out", "in"]
    index: torch.Tensor


@dataclass
class Group:
    """Coupled channels: `size` of them, shared by every member."""

    root: str
    size: int
    members: list[Member]
    handler: Callable[..., Any] | None = None  # torch_pruning's function for the root's outputs
    #: The module whose output shows the group's channels (a BatchNorm if the group has one).
    probe: str = ""
    #: Out members whose weight (and bias) carry a channel's scale: the BatchNorms if any,
    #: else the producing layers (ReLU is positively homogeneous).
    scaled: set[str] = field(default_factory=set)


@dataclass
class Plan:
    """How a group's channels change: new channel r copies old channel select[r] (-1: empty)
    with its scaled out members times out_scale[r]; consumers' new input r is
    sum_i merge[i, r] * old input i."""

    select: torch.Tensor
    out_scale: torch.Tensor
    merge: torch.Tensor


def example_input(model: nn.Module, batch: int = 1, size: int | None = None) -> torch.Tensor:
    """A random input the model accepts, from its zoo kwargs (or its first layer)."""
    kw: dict[str, Any] = dict(getattr(model, "nnmark_kwargs", {}) or {})
    first = next((m for m in model.modules() if isinstance(m, CHANNEL_LAYERS)), None)
    if first is None:
        raise NNMarkError("model has no conv or linear layer")
    if isinstance(first, nn.Linear) and "input_size" not in kw:
        return torch.randn(batch, first.in_features)
    channels = int(kw.get("in_channels", getattr(first, "in_channels", 3)))
    side = int(size or kw.get("input_size", 32))
    return torch.randn(batch, channels, side, side)


def dependency_graph(model: nn.Module, example: torch.Tensor | None = None) -> Any:
    """torch_pruning's DependencyGraph of `model` (traced once on an example input)."""
    import torch_pruning as tp

    if any(isinstance(m, _OTHER_NORMS) for m in model.modules()):
        raise NNMarkError("channel surgery supports BatchNorm but not LayerNorm / GroupNorm")
    if any(getattr(m, "groups", 1) != 1 for m in model.modules() if isinstance(m, nn.Conv2d)):
        raise NNMarkError("channel surgery does not support grouped convolutions")
    was_training = model.training
    model.eval()
    try:
        example = example_input(model) if example is None else example
        with torch.enable_grad():  # torch_pruning traces through autograd
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, customized_pruners={PadShortcut: _FixedMapPruner()}
            )
    except NNMarkError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch-pruning's tracer raises anything: one line instead
        raise NNMarkError(f"cannot trace the model's channel dependencies ({exc})") from None
    finally:
        model.train(was_training)


def channel_groups(model: nn.Module, graph: Any = None) -> list[Group]:
    """The hidden channel groups (every group with a consumer; the output layer's is not)."""
    graph = graph if graph is not None else dependency_graph(model)
    names = {m: n for n, m in model.named_modules()}
    roots = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose2d)
    groups = []
    for tp_group in graph.get_all_groups(root_module_types=list(roots)):
        items = list(tp_group)
        root_dep, root_idxs = items[0]
        n = len(root_idxs)
        members: list[Member] = []
        seen: set[tuple[str, str]] = set()
        for dep, idxs in items:
            module = dep.target.module
            if not isinstance(module, CHANNEL_LAYERS) or module not in names:
                continue
            hname = getattr(dep.handler, "__name__", "")
            side: Literal["out", "in"] = "in" if hname == "prune_in_channels" else "out"
            if isinstance(module, BATCHNORMS):
                side = "out"
            key = (names[module], side)
            if key in seen or len(idxs) % n:
                continue
            seen.add(key)
            index = torch.as_tensor([int(i) for i in idxs], dtype=torch.long).reshape(n, -1)
            members.append(Member(names[module], side, index))
        if not any(m.side == "in" for m in members):
            continue  # the output layer: its channels are the model's outputs
        norms = [m.name for m in members if isinstance(model.get_submodule(m.name), BATCHNORMS)]
        outs = [m.name for m in members if m.side == "out"]
        # a fixed map has no norm after it to absorb a channel's scale: it carries it itself
        fixed = {n for n in outs if isinstance(model.get_submodule(n), FIXED_MAPS)}
        groups.append(
            Group(
                root=names[root_dep.target.module],
                size=n,
                members=members,
                handler=root_dep.handler,
                probe=norms[0] if norms else outs[0],
                scaled=set(norms) | fixed if norms else set(outs),
            )
        )
    return groups


def batchnorm_after(model: nn.Module, graph: Any) -> dict[str, str]:
    """conv name -> the BatchNorm that directly normalises its output."""
    names = {m: n for n, m in model.named_modules()}
    pairs = {}
    for module, node in graph.module2node.items():
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear) and module in names:
            outs = [o.module for o in node.outputs]
            if len(outs) == 1 and isinstance(outs[0], BATCHNORMS) and outs[0] in names:
                pairs[names[module]] = names[outs[0]]
    return pairs


def _dims(module: nn.Module) -> tuple[int, int]:
    """(out dim, in dim) of a weighted layer's weight."""
    return (1, 0) if isinstance(module, nn.ConvTranspose2d) else (0, 1)


def out_dim(module: nn.Module) -> int:
    """The dimension of a layer's weight that indexes its output channels."""
    return _dims(module)[0]


def _transform(
    parts: list[tuple[Member, Plan, bool]], size_old: int, what: str
) -> torch.Tensor | None:
    """The (new size x old size) matrix mapping one tensor dimension, or None (unchanged)."""
    if not parts:
        return None
    parts = sorted(parts, key=lambda p: int(p[0].index.min()))
    blocks = []
    base_old = 0
    for member, plan, scaled in parts:
        n_old, k = member.index.shape
        expect = base_old + torch.arange(n_old * k).reshape(n_old, k)
        if not torch.equal(member.index, expect):
            raise NNMarkError(f"{what}: channel layout not supported by channel surgery")
        base_old += n_old * k
        if member.side == "in":
            block = plan.merge.T.contiguous()
        else:
            n_new = len(plan.select)
            block = torch.zeros(n_new, n_old)
            rows = torch.nonzero(plan.select >= 0).flatten()
            coef = plan.out_scale[rows] if scaled else torch.ones(len(rows))
            block[rows, plan.select[rows]] = coef.to(block.dtype)
        blocks.append(torch.kron(block, torch.eye(k)))
    if base_old != size_old:
        raise NNMarkError(f"{what}: channels only partly covered by channel groups")
    return torch.block_diag(*blocks)


def _along(t: torch.Tensor, matrix: torch.Tensor | None, dim: int) -> torch.Tensor:
    if matrix is None:
        return t
    moved = torch.tensordot(matrix.to(t.dtype), t, dims=([1], [dim]))
    return moved.movedim(0, dim).contiguous()


@torch.no_grad()
def apply_plans(model: nn.Module, groups: list[Group], plans: dict[str, Plan]) -> nn.Module:
    """Rewrite every member of every planned group in place; layers change shape as needed."""
    parts: dict[str, dict[str, list[tuple[Member, Plan, bool]]]] = {}
    for group in groups:
        plan = plans.get(group.root)
        if plan is None:
            continue
        for m in group.members:
            parts.setdefault(m.name, {"out": [], "in": []})[m.side].append(
                (m, plan, m.name in group.scaled)
            )
    for name, sides in parts.items():
        module = model.get_submodule(name)
        if isinstance(module, BATCHNORMS):
            assert module.running_mean is not None and module.running_var is not None
            n_old = module.running_mean.numel()
            scaled = _transform(sides["out"], n_old, name)
            plain = _transform([(m, p, False) for m, p, _ in sides["out"]], n_old, name)
            if scaled is None or plain is None:
                continue
            module.weight = nn.Parameter(_along(module.weight, scaled, 0))
            module.bias = nn.Parameter(_along(module.bias, scaled, 0))
            mean = _along(module.running_mean, plain, 0)
            var = _along(module.running_var, plain, 0)
            var[plain.abs().sum(1) == 0] = 1.0  # an empty channel: neutral statistics
            module.running_mean, module.running_var = mean, var
            sync_shape_attributes(module)
            continue
        d_out, d_in = _dims(module)
        w = module.weight
        t_out = _transform(sides["out"], w.shape[d_out], name)
        t_in = _transform(sides["in"], w.shape[d_in], name)
        moved = _along(_along(w, t_out, d_out), t_in, d_in)
        if isinstance(module, FIXED_MAPS):
            module.weight = moved  # stays a buffer
            continue
        module.weight = nn.Parameter(moved)
        if module.bias is not None:
            module.bias = nn.Parameter(_along(module.bias, t_out, 0))
        sync_shape_attributes(module)
    return model


def rewrite_groups(model: nn.Module, make_plan: Callable[[int], Plan]) -> nn.Module:
    """Apply `make_plan(group size)` to every channel group of `model`, in place: the shared
    step of the function-preserving rewrites that change widths (morph, obfuscate). The zoo's
    arch kwargs then no longer describe the model: it is flagged `nnmark_morphed`."""
    groups = channel_groups(model)
    apply_plans(model, groups, {g.root: make_plan(g.size) for g in groups})
    model.nnmark_morphed = True
    return model


def sync_shape_attributes(module: nn.Module) -> None:
    """Make a layer's size attributes agree with its (replaced) tensors."""
    if isinstance(module, BATCHNORMS):
        assert module.running_mean is not None
        module.num_features = module.running_mean.numel()
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape[:2]
    elif isinstance(module, CHANNEL_LAYERS) and not isinstance(module, FIXED_MAPS):
        d_out, d_in = _dims(module)
        module.out_channels = module.weight.shape[d_out]
        module.in_channels = module.weight.shape[d_in]


@torch.no_grad()
def rescale_before_norm(conv: nn.Module, norm: nn.Module, factors: torch.Tensor) -> None:
    """Multiply a conv's output channels by `factors` and let the BatchNorm after it absorb
    them exactly (eval statistics: mean * c, var chosen so sqrt(var + eps) grows by |c|, its
    weight times the sign of c)."""
    eps = float(norm.eps)
    var = norm.running_var
    mean = norm.running_mean
    assert isinstance(var, torch.Tensor) and isinstance(mean, torch.Tensor)
    new_var = factors**2 * (var + eps) - eps
    c = torch.where(new_var > 0, factors, torch.ones_like(factors))
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight.mul_(c.reshape(shape).to(conv.weight.dtype))
    if getattr(conv, "bias", None) is not None:
        conv.bias.mul_(c)
    mean.mul_(c)
    var.copy_(c**2 * (var + eps) - eps)
    if norm.weight is not None:  # a negative factor: the norm's output flips back with it
        norm.weight.mul_(torch.sign(c).to(norm.weight.dtype))


class _FixedMapPruner:
    """torch_pruning's interface for a fixed map: its rows are output channels, its columns
    input channels, with no coupling between the two (like a convolution's)."""

    TARGET_MODULES = None

    def prune_out_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        return self._keep(layer, idxs, 0)

    def prune_in_channels(self, layer: nn.Module, idxs: Any) -> nn.Module:
        return self._keep(layer, idxs, 1)

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[0])

    def get_in_channels(self, layer: nn.Module) -> int:
        return int(layer.weight.shape[1])

    @staticmethod
    def _keep(layer: nn.Module, idxs: Any, dim: int) -> nn.Module:
        drop = set(int(i) for i in idxs)
        keep = [i for i in range(layer.weight.shape[dim]) if i not in drop]
        layer.weight = layer.weight.index_select(dim, torch.tensor(keep, dtype=torch.long))
        return layer
