"""ONNX files of torch's dynamo exporter: read white-box where the stored weights are the
model's (optimize=False, a fixed input shape), refused where BatchNorm is folded; the shape
computation it adds is left out of the structural check only where it is shape-only
(nnmark.integrations.onnx_arch.shape_only_values), never where it reads the input's values or a
free batch size."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nnmark import OwnerKey, verify
from nnmark.data.base import DataBundle
from nnmark.integrations import onnx_arch
from nnmark.suspect import load_suspect
from nnmark.testing.onnx import undone_transform


def dynamo_export(model: torch.nn.Module, shape: tuple[int, ...], path: Path, **kw: bool) -> Path:
    """`model` through torch.onnx.export(dynamo=True), input batch 1 (a fixed input shape)."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(), (torch.zeros(1, *shape),), str(path), dynamo=True, verbose=False, **kw
        )
    return path


@pytest.fixture(scope="module")
def dynamo_cnn(
    uchida_cnn: tuple[torch.nn.Module, OwnerKey],
    digits: DataBundle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    model, _ = uchida_cnn
    path = tmp_path_factory.mktemp("dynamo") / "cnn.onnx"
    return dynamo_export(model, digits.input_shape, path, optimize=False)


def test_a_dynamo_export_is_read_white_box(  # type: ignore[no-untyped-def]
    uchida_cnn, dynamo_cnn: Path, tmp_path: Path
) -> None:
    """torch.onnx.export(dynamo=True, optimize=False) keeps the state-dict names and values but
    writes the flatten as a Reshape to a Concat of Constants: the white-box mark was refused
    ("operations the zoo architecture's own export does not"). It is read, and found; the same
    file storing -W undone by a Neg is still refused."""
    _, key = uchida_cnn
    ops = {n.op_type for n in onnx.load(str(dynamo_cnn)).graph.node}
    assert {"Concat", "Constant", "Reshape"} <= ops and "Flatten" not in ops
    v = verify(load_suspect(dynamo_cnn), key)
    assert v.verdict == "found" and v.ber == 0.0, v
    neg = undone_transform(dynamo_cnn, f"{key.marks[0].layer}.weight", tmp_path / "n.onnx", "neg")
    v = verify(load_suspect(neg), key)
    assert v.verdict == "not_found" and "not what it runs" in (v.reason or ""), v


def _bias_from(graph: onnx.GraphProto, nodes: list[onnx.NodeProto], value: str) -> None:
    """`graph`'s last Gemm (the classifier) adding `value` (computed by `nodes`) as its bias."""
    gemm = [n for n in graph.node if n.op_type == "Gemm"][-1]
    gemm.input[2] = value
    at = list(graph.node).index(gemm)
    for k, node in enumerate(nodes):
        graph.node.insert(at + k, node)


def _const(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(torch.tensor(values).numpy())
    )


def test_shape_like_operations_on_the_inputs_values_still_count(  # type: ignore[no-untyped-def]
    uchida_cnn, dynamo_cnn: Path, digits: DataBundle
) -> None:
    """The classifier's bias built by "shape" operations (Gather, Cast, Expand, as the dynamo
    exporter uses on shapes) from the input's first pixel (a gate: noise probes have negative
    pixels, digits none): refused, naming them. The same chain from the input's Shape is
    shape-only at a fixed input shape (the same numbers on every run: it cannot tell probes
    from inputs) and passes the structural check; with a free batch dimension the shape holds
    the caller's batch size (a graph could answer as the zoo model at the probes' batch size
    and otherwise at batch size 1), and it is refused."""
    model, key = uchida_cnn
    names = frozenset(model.state_dict())
    shape = (1, *digits.input_shape)
    x = onnx.load(str(dynamo_cnn)).graph.input[0].name

    def gated(source: str) -> onnx.GraphProto:
        graph = onnx.load(str(dynamo_cnn)).graph
        nodes = [_const("g/flat", [-1]), _const("g/at", [0]), _const("g/ten", [10])]
        if source == "values":
            nodes.append(helper.make_node("Reshape", [x, "g/flat"], ["g/pixels"]))
        else:
            nodes.append(helper.make_node("Shape", [x], ["g/pixels"]))
        nodes += [
            helper.make_node("Gather", ["g/pixels", "g/at"], ["g/first"]),
            helper.make_node("Cast", ["g/first"], ["g/int"], to=TensorProto.INT64),
            helper.make_node("Cast", ["g/int"], ["g/float"], to=TensorProto.FLOAT),
            helper.make_node("Expand", ["g/float", "g/ten"], ["g/bias"]),
        ]
        _bias_from(graph, nodes, "g/bias")
        return graph

    why = onnx_arch.structure_reason(gated("values"), model, shape, names)
    assert why is not None and "Cast x2" in why and "Expand x1" in why and "Gather x1" in why
    assert "dynamo=True, optimize=False and a fixed input shape" in why
    assert onnx_arch.structure_reason(gated("shape"), model, shape, names) is None
    free = gated("shape")
    free.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    why = onnx_arch.structure_reason(free, model, shape, names)
    assert why is not None and "Shape x1" in why and "Gather x1" in why


def test_shape_only_values_follow_fixed_shapes_and_literals_only() -> None:
    """The taint analysis: the Shape of a NonZero (its shape is the input's values), a float
    Constant of more than one value, a float initializer, and anything computed from one of
    those are not shape-only; the Shape of a fixed input, integer literals and what plumbing
    (Concat, Expand...) makes of them are, arithmetic on them (Add, Range) is not; a CastLike
    reads only its second input's type; a node with a subgraph never is."""
    fixed = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Constant", [], ["one"], value_ints=[1]),
        helper.make_node("Concat", ["s", "one"], ["s1"], axis=0),
        # arithmetic on literals could make a large pseudo-random tensor: never shape-only
        helper.make_node("Add", ["s", "one"], ["s_add"]),
        helper.make_node("Range", ["one", "s_add", "one"], ["r"]),
        helper.make_node("Constant", [], ["zero"], value_float=0.0),
        helper.make_node("CastLike", ["zero", "x"], ["z"]),
        helper.make_node("Expand", ["z", "s1"], ["zeros"]),
        helper.make_node("NonZero", ["x"], ["nz"]),
        helper.make_node("Shape", ["nz"], ["s_nz"]),
        helper.make_node("Add", ["s_nz", "one"], ["s_nz1"]),
        helper.make_node(
            "Constant", [], ["w"], value=numpy_helper.from_array(torch.ones(3).numpy())
        ),
        helper.make_node("Expand", ["w", "s"], ["w_big"]),
        helper.make_node("Expand", ["W", "s"], ["W_big"]),
        helper.make_node("Gather", ["x", "one"], ["x1"]),
        helper.make_node("Shape", ["x1"], ["s_x1"]),  # x1's shape is fixed: shape-only
    ]
    inits = [numpy_helper.from_array(torch.ones(3).numpy(), "W")]
    out = helper.make_tensor_value_info("zeros", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "taint", [fixed], [out], inits)
    const = onnx_arch.shape_only_values(graph)
    assert {"s", "one", "s1", "zero", "z", "zeros", "s_x1"} <= const
    assert not {"nz", "s_nz", "s_nz1", "w", "w_big", "W_big", "x1", "s_add", "r"} & const
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert not {"s", "s1", "zeros", "s_x1"} & onnx_arch.shape_only_values(graph)


def test_exports_that_fold_batchnorm_stay_refused(  # type: ignore[no-untyped-def]
    digits: DataBundle, tmp_path: Path
) -> None:
    """A BatchNorm model (resnet20): dynamo with optimize=False is read (its zero biases are
    built from the weights' Shape, a CastLike and Expands); dynamo's default optimize=True and
    the legacy exporter's constant folding fold BatchNorm into the convolutions, store other
    weights than the model's, and are refused."""
    from nnmark import new_model
    from nnmark.integrations.onnx import OnnxSuspect

    model = new_model("resnet20", digits, seed=0).eval()
    key = OwnerKey.new("o", nonce="0f" * 16)
    mark = key.new_mark("uchida", {}, "conv1", [0] * 8)
    honest = dynamo_export(model, digits.input_shape, tmp_path / "d.onnx", optimize=False)
    assert OnnxSuspect(honest).for_mark(mark).unreadable is None
    folded = dynamo_export(model, digits.input_shape, tmp_path / "f.onnx")
    legacy = tmp_path / "l.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *digits.input_shape),), str(legacy),
                          dynamo=False, do_constant_folding=True)  # fmt: skip
    for path in (folded, legacy):
        why = OnnxSuspect(path).for_mark(mark).unreadable or ""
        assert "match no zoo architecture" in why and "folds BatchNorm" in why, why
