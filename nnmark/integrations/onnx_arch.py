"""Does an ONNX graph run the weights a white-box mark reads? (`graph_runs_its_weights`)

A white-box mark is read from the initializer named as the marked layer, but the graph is the
other side's program: it can store -W under the layer's name and negate the layer's output, or
store 2W and halve it, and answer exactly as the marked model while the stored tensor reads as
no mark (red team: not_found, answers identical). ONNX files carry no zoo metadata, so the
architecture is found from the initializers: a zoo architecture (at the structural settings of
`_VARIANTS`) matches when every one of its parameters and buffers is an initializer of the same
name and rank. Its widths are the file's (each tensor is set as read, whatever its size), and
it is then run on probe inputs beside the graph (through the bounded ORT worker): the
reading is sound only if some matching architecture, computing with exactly the initializers a
white-box mark reads, gives the graph's answers. Otherwise the white-box marks of the file are
not read, and the reason says why.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.keys import stream
from nnmark.models import activation_values

#: Structural settings tried per zoo architecture (names of parameters depend on them; widths do
#: not, they are read from the file). Defaults only for the others.
_VARIANTS: dict[str, list[dict[str, Any]]] = {
    "mlp": [{"depth": d} for d in range(1, 17)],
    "resnet20": [{"shortcut": s, "widen": w} for s in ("A", "B") for w in (1, 2)],
    "resnet32": [{"shortcut": s, "widen": w} for s in ("A", "B") for w in (1, 2)],
    "wrn": [{"depth": d, "widen": w} for d in (10, 16, 22, 28, 34, 40) for w in (1, 2)],
}
#: At most this many matching architectures are built and run (the largest first).
MAX_BUILDS = 3
#: Probe batches (Gaussian noise, seeded afresh per check: a graph cannot know the probes'
#: values in advance) and their size when the graph does not fix its batch.
PROBES = 2
PROBE_BATCH = 4
#: The most values one probe batch may hold (the graph's declared input shape is the other
#: side's number), and the most values all the zoo model's layers may output on it (counted
#: first on the meta device: the widths are the file's, and the model runs in this process).
MAX_PROBE_VALUES = 1 << 22
MAX_ACTIVATION_VALUES = 1 << 27
#: The most multiply-adds the zoo model may spend on one probe batch (it runs in this process,
#: with the file's kernel sizes): about 10 s on one core.
MAX_PROBE_MACS = 1 << 35
#: Values a graph may hold beyond the zoo tensors, over what the zoo model's own export holds
#: (shape constants): far fewer than any layer a mark is read from.
MAX_FOREIGN_VALUES = 256
#: Agreement: max |zoo - graph| <= RTOL x the largest |output| (float32 accumulation order).
RTOL = 1e-3


@dataclass(frozen=True)
class GraphCheck:
    """What the check found: the architecture shown to compute the graph's answers and the
    initializer names it computes with (the only ones a white-box mark may read), or why
    none was (`reason`)."""

    arch: str | None = None
    names: frozenset[str] = frozenset()
    reason: str | None = None


def _candidates() -> Iterator[tuple[str, dict[str, Any], dict[str, int]]]:
    """(architecture, structural kwargs, parameter and buffer name -> rank), built on the meta
    device (nothing allocated)."""
    from nnmark.models import MODELS

    for arch in MODELS.names():
        for kwargs in _VARIANTS.get(arch, [{}]):
            try:
                with torch.device("meta"):
                    model = MODELS.get(arch)(**kwargs)
            except (TypeError, ValueError, RuntimeError):
                continue
            ranks = {
                k: v.dim()
                for k, v in model.state_dict().items()
                if not k.endswith("num_batches_tracked")  # not in an eval-mode graph
            }
            yield arch, kwargs, ranks


def matching_architectures(
    ranks: Mapping[str, int],
) -> list[tuple[str, dict[str, Any], frozenset[str]]]:
    """The zoo architectures (name, structural kwargs, their tensor names) every parameter and
    buffer of which is among `ranks` (initializer name -> rank) with its rank, most names
    first."""
    found = [
        (arch, kwargs, frozenset(need))
        for arch, kwargs, need in _candidates()
        if all(ranks.get(k) == r for k, r in need.items())
    ]
    return sorted(found, key=lambda f: -len(f[2]))


def build_with(
    arch: str, kwargs: dict[str, Any], read: Callable[[str], torch.Tensor | None]
) -> nn.Module:
    """`arch` with each parameter and buffer set to the tensor `read` gives for its name (its
    shape as read: the widths are the file's), in eval mode (on the tensors' device: meta
    tensors give a model that counts, `activation_values`, and allocates nothing)."""
    from nnmark.models import MODELS

    with torch.device("meta"):
        model = MODELS.get(arch)(**kwargs)
    for name, _ in list(model.named_parameters()) + list(model.named_buffers()):
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        if leaf == "num_batches_tracked":
            module._buffers[leaf] = torch.zeros((), dtype=torch.long)
            continue
        tensor = read(name)
        if tensor is None:
            raise NNMarkError(f"no initializer {name!r}")
        value = tensor.detach().to(torch.float32)
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
        else:
            module._buffers[leaf] = value
    return model.eval()


def probe_shape(graph: Any) -> tuple[int, ...]:
    """The shape of one probe batch: the graph's first (non-initializer) input as it declares
    it, its batch dimension PROBE_BATCH unless fixed. A one-line error when it declares none."""
    from nnmark.integrations.onnx import input_dims

    shape = input_dims(graph)
    if shape is None:
        raise NNMarkError("the graph declares no tensor input")
    if not shape:
        raise NNMarkError("the graph does not declare its input's shape")
    if 0 in shape[1:]:
        raise NNMarkError("the graph does not declare its input's shape (a free dimension)")
    shape[0] = shape[0] or PROBE_BATCH
    if int(np.prod(shape, dtype=np.float64)) > MAX_PROBE_VALUES:
        raise NNMarkError(f"the graph's input shape {shape} is too large to probe")
    return tuple(shape)


def output_difference(
    model: nn.Module, run_graph: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...]
) -> float:
    """The largest |zoo - graph| on PROBES noise batches (a fresh seed), relative to the largest
    |output| (inf where they differ in shape, do not run, or are not finite)."""
    gen = stream(secrets.token_bytes(32))  # all 256 bits: manual_seed keeps 32
    worst = 0.0
    for _ in range(PROBES):
        x = torch.randn(shape, generator=gen)
        try:
            with torch.no_grad():
                want = model(x).float()
        except RuntimeError:
            return float("inf")  # the file's widths do not fit together in this architecture
        got = run_graph(x).float()
        if got.shape != want.shape or not (got.isfinite().all() and want.isfinite().all()):
            return float("inf")
        scale = max(float(want.abs().max()), float(got.abs().max()), 1e-12)
        worst = max(worst, float((want - got).abs().max()) / scale)
    return worst


def _foreign_values(graph: Any, names: frozenset[str]) -> int:
    """The values the graph holds beyond the zoo tensors `names` (and their Identity aliases):
    other initializers, in subgraphs too, and Constant nodes' tensors and lists."""
    from nnmark.integrations.onnx import all_nodes, initializer_names

    aliases = initializer_names(graph)
    own = {aliases[n] for n in names if n in aliases}
    nodes = list(all_nodes(graph.node))
    subgraphs = [g for node in nodes for a in node.attribute for g in [a.g, *a.graphs]]
    inits = list(graph.initializer) + [i for g in subgraphs for i in g.initializer]
    total = sum(int(np.prod(i.dims, dtype=np.float64)) for i in inits if i.name not in own)
    for node in nodes:
        if node.op_type == "Constant":
            for a in node.attribute:
                total += int(np.prod(a.t.dims, dtype=np.float64)) if a.HasField("t") else 0
                total += len(a.floats) + len(a.ints) + len(a.strings) + 1
    return total


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Operations that may compute shape-only values (`shape_only_values`): the tensor plumbing
#: exporters build shapes and constant operands with, which only copies values. No arithmetic
#: (Range, Mul, Mod...: from a few literals they would make a large pseudo-random tensor, free
#: of the MAX_FOREIGN_VALUES budget, to hide what a layer stores), no subgraphs.
_SHAPE_ARITH = _names(
    "Cast Concat ConstantOfShape Expand Gather Identity Reshape Slice Squeeze Unsqueeze"
)
#: Operations whose outputs' shapes follow from their inputs' shapes and attributes alone.
_SHAPE_FROM_SHAPES = _names(
    "Abs Add And AveragePool BatchNormalization Cast CastLike Clip Concat Conv ConvTranspose "
    "DepthToSpace Div Dropout Elu Equal Erf Exp Flatten Gather GatherElements Gelu Gemm "
    "GlobalAveragePool GlobalMaxPool Greater HardSigmoid HardSwish Identity "
    "InstanceNormalization LayerNormalization LeakyRelu Less Log LogSoftmax MatMul Max MaxPool "
    "Mean Min Mul Neg Not Or Pow PRelu Reciprocal Relu Selu Shape Sigmoid Size Softmax "
    "Softplus SpaceToDepth Sqrt Sub Sum Tanh Transpose Where"
)
#: Operations whose outputs' shapes follow also from the values of their inputs after the
#: first (a target shape, pads, axes, sizes): fixed only where those are shape-only.
_SHAPE_FROM_VALUES = _names(
    "Expand Pad ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd "
    "ReduceSum ReduceSumSquare Reshape Resize Slice Split Squeeze Tile TopK Unsqueeze "
    "Upsample"
)
#: ONNX integer and bool element types (TensorProto codes).
_INTEGER_TYPES = frozenset({2, 3, 4, 5, 6, 7, 9, 12, 13})


def _literal(node: Any) -> bool:
    """Whether a Constant node holds a shape-only literal: integers or bools of any size, or a
    single number (an exporter's scalar: the 0 bias of a convolution without one). A float
    tensor of more values is a weight, never shape-only (its values count, `_foreign_values`,
    either way)."""
    for a in node.attribute:
        if a.name == "value":
            return a.t.data_type in _INTEGER_TYPES or np.prod(a.t.dims, dtype=np.float64) == 1
        if a.name in ("value_int", "value_ints", "value_float"):
            return True
        if a.name == "value_floats":
            return len(a.floats) <= 1
    return False


def shape_only_values(graph: Any) -> set[str]:
    """The values of `graph` computed only from shapes that are the same on every run of it,
    from integer literals and integer initializers: the same numbers whatever the input holds.

    Taint analysis over the top-level nodes (a node with a subgraph, or of another domain, is
    never shape-only). A value is shape-only when it is an integer initializer (not one a
    caller may feed: not also a graph input), a Constant literal (`_literal`), the output of a
    Shape or Size node whose input's shape is fixed, of a CastLike whose first input is
    shape-only (the second gives only a type), or of a `_SHAPE_ARITH` node all of whose inputs
    are. A shape is fixed for initializers, constants, the graph's input only where it declares
    every dimension (a free batch dimension is a number the caller picks: a graph could answer
    differently at batch size 1 than at the probes' batch), and the outputs of operations whose
    output shapes follow from fixed input shapes (and from shape-only values for target shapes,
    axes, pads: never from a NonZero, a Loop, or a Reshape to the input's values).
    """
    from nnmark.integrations.onnx import input_dims

    fed = {i.name for i in graph.input}
    inits = {i.name: i for i in graph.initializer if i.name not in fed}
    const = {n for n, i in inits.items() if i.data_type in _INTEGER_TYPES}
    fixed = set(inits) | {""}  # an omitted optional input holds nothing
    dims = input_dims(graph)
    if dims is not None and all(dims):
        first = next(i.name for i in graph.input if i.name not in inits)
        fixed.add(first)
    const.add("")
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in set(node.input):
            users.setdefault(name, []).append(node)
    todo = list(graph.node)
    while todo:
        node = todo.pop()
        if node.domain not in ("", "ai.onnx") or any(
            a.HasField("g") or a.graphs for a in node.attribute
        ):
            continue
        op, ins = node.op_type, list(node.input)
        if op == "Constant":
            is_const = _literal(node)
        elif op in ("Shape", "Size"):
            is_const = bool(ins) and ins[0] in fixed
        elif op == "CastLike":
            is_const = bool(ins) and ins[0] in const
        else:
            is_const = op in _SHAPE_ARITH and bool(ins) and all(i in const for i in ins)
        is_fixed = (
            is_const
            or op == "Constant"
            or (op in _SHAPE_FROM_SHAPES and all(i in fixed for i in ins))
            or (
                op in _SHAPE_FROM_VALUES
                and all(i in fixed for i in ins)
                and all(i in const for i in ins[1:])
            )
        )
        for out in node.output:
            grew = False
            if is_const and out not in const:
                const.add(out)
                grew = True
            if is_fixed and out not in fixed:
                fixed.add(out)
                grew = True
            if grew:
                todo.extend(users.get(out, []))
    return const - {""}


def _op_counts(graph: Any) -> Counter[str]:
    """The graph's operations (subgraphs included) as the structural check counts them: not
    Identity, not the shape-only ones (`shape_only_values`: every output shape-only), and a
    Reshape to a shape-only shape counted as a Flatten, a ReduceMean over shape-only axes as a
    GlobalAveragePool (exporters write one or the other; both only move or average values, the
    same way on every input)."""
    from nnmark.integrations.onnx import all_nodes

    const = shape_only_values(graph)
    counts: Counter[str] = Counter()
    for node in all_nodes(graph.node):
        op, ins = node.op_type, list(node.input)
        if op == "Identity" or (node.output and all(o in const for o in node.output)):
            continue
        if op == "Reshape" and len(ins) == 2 and ins[1] in const:
            op = "Flatten"
        elif op == "ReduceMean" and (len(ins) < 2 or ins[1] in const):
            op = "GlobalAveragePool"
        counts[op] += 1
    return counts


def structure_reason(
    graph: Any, model: nn.Module, shape: tuple[int, ...], names: frozenset[str]
) -> str | None:
    """Why the graph may compute something else than `model` on other inputs than the probes,
    or None: its operations (subgraphs included) must be among those of the zoo model's own
    export, no more of each (`_op_counts`: Identity and shape-only computation aside), and it
    may hold at most MAX_FOREIGN_VALUES values more than that export beyond the zoo tensors. A
    graph that sent noise probes to the zoo weights and digits to a hidden copy of the marked
    layer (an If on the input's minimum, or the same as a gate of ReduceMin, Sign and Mul, the
    copy in a Constant) passed the probes and read not_found (red team, session 27): it needs
    operations and values the zoo has not. Shape-only values are the same numbers on every
    run of the file (`shape_only_values`), probes included, so they cannot tell probes from
    inputs: torch.onnx.export(dynamo=True, optimize=False) builds shapes and zero biases with
    them.
    """
    import onnx

    from nnmark.integrations.onnx import onnx_bytes

    reference = onnx.load_from_string(onnx_bytes(model, tuple(shape[1:]))).graph
    want, got = _op_counts(reference), _op_counts(graph)
    extra = {op: n - want[op] for op, n in got.items() if n > want[op]}
    if extra:
        listed = ", ".join(f"{op} x{n}" for op, n in sorted(extra.items())[:8])
        return (
            f"the graph has operations the zoo architecture's own export does not ({listed}), "
            "so on inputs other than the check's probes it may compute something else than the "
            "weights a white-box mark would read (files of `nnmark export`, of torch.onnx.export "
            "with dynamo=False and do_constant_folding=False, or with dynamo=True, "
            "optimize=False and a fixed input shape, are read): verify a black-box mark of the "
            "key, or the model itself"
        )
    foreign, allowed = _foreign_values(graph, names), _foreign_values(reference, names)
    if foreign > allowed + MAX_FOREIGN_VALUES:
        return (
            f"the graph holds {foreign:,} values beyond the zoo architecture's tensors (its own "
            f"export: {allowed:,}), room for weights other than those a white-box mark would "
            "read: verify a black-box mark of the key, or the model itself"
        )
    return None


def graph_runs_its_weights(
    graph: Any,
    dims: Mapping[str, tuple[int, ...]],
    read: Callable[[str], torch.Tensor | None],
    run_graph: Callable[[torch.Tensor], torch.Tensor],
    committed: Mapping[str, Any] | None = None,
) -> GraphCheck:
    """The zoo architecture matching the initializers (`dims`: name -> declared shape; `read`
    reads one by name) that computes the graph's answers (`run_graph`) with them, and the names
    it reads; otherwise why the white-box marks of this file cannot be read. `committed`: the
    architecture the key commits to (OwnerKey.arch), the only one tried (at its
    `nnmark.suspect.structure`): a resnet20's marked block moved into a resnet32, the name the
    key reads holding noise, passed as the resnet32 it is (red team, session 27); for a module
    from outside the zoo (its tensors' names), only the zoo architectures within them."""
    from nnmark.models import list_models
    from nnmark.suspect import structure

    matches = matching_architectures({k: len(v) for k, v in dims.items()})
    if committed is not None and "tensors" in committed:  # a module from outside the zoo
        # fewer is fine, as nnmark.suspect.arch_mismatch: only zoo matches within its tensors
        # (a zoo model committed by its tensors); its own class nothing here can run
        within = frozenset(committed["tensors"])
        matches = [m for m in matches if within.issuperset(m[2])]
        if not matches:
            return GraphCheck(
                reason="its initializers are not those of a zoo architecture within the tensors "
                "of the module the key's mark lives in, so nothing shows the graph runs the "
                "weights a white-box mark would read: verify a black-box mark of the key, or "
                "the model itself (safetensors)"
            )
    elif committed is not None:
        name, placed = committed["name"], structure(committed["name"], committed["kwargs"])
        matches = [m for m in matches if m[0] == name and structure(name, m[1]) == placed]
        if not matches:
            return GraphCheck(
                reason=f"its initializers are not those of a {name} {placed}, the architecture "
                "the key's mark lives in: verify a black-box mark of the key, or the model itself"
            )
    if not matches:
        return GraphCheck(
            reason="its initializers match no zoo architecture (" + ", ".join(list_models()) + "), "
            "so nothing shows the graph runs the weights a white-box mark would read (an "
            "exporter that folds BatchNorm into the convolutions stores other weights than "
            "those marked): verify a black-box mark of the key, or the model itself (safetensors)"
        )
    try:
        shape = probe_shape(graph)
    except NNMarkError as exc:
        return GraphCheck(
            reason=f"{exc}, so it cannot be run beside the zoo architecture: verify a black-box "
            "mark of the key, or the model itself (safetensors)"
        )
    diffs = []
    for arch, kwargs, names in matches[:MAX_BUILDS]:
        try:
            meta = build_with(arch, kwargs, lambda n: torch.empty(dims[n], device="meta"))
        except (RuntimeError, ValueError):  # declared dims no tensor can have
            values = None
        else:
            values = activation_values(meta, shape)
        if values is None:
            diffs.append(f"{arch} does not run with these shapes")
            continue
        outputs, macs = values
        if outputs > MAX_ACTIVATION_VALUES or macs > MAX_PROBE_MACS:
            return GraphCheck(
                reason=f"{arch} with its initializers outputs {outputs:,} values in "
                f"{macs:,} multiply-adds on a probe of shape {list(shape)} (at most "
                f"{MAX_ACTIVATION_VALUES:,} and {MAX_PROBE_MACS:,}), too much to run it beside "
                "the graph: verify a black-box mark of the key, or the model itself"
            )
        model = build_with(arch, kwargs, read)
        diff = output_difference(model, run_graph, shape)
        if diff <= RTOL:
            why = structure_reason(graph, model, shape, names)
            if why is not None:
                return GraphCheck(reason=why)
            return GraphCheck(arch=arch, names=names)
        diffs.append(f"{arch} {diff:.3g}")
    return GraphCheck(
        reason="the graph does not compute the zoo architecture its initializers name with those "
        f"initializers (largest output difference relative to the outputs, on {PROBES} probe "
        f"batches: {', '.join(diffs)}): its weights are not what it runs, so white-box marks "
        "cannot be read from it; verify a black-box mark of the key, or the model itself"
    )
