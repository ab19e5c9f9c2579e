"""ONNX files a thief would write, for tests and benchmarks: stored weights transformed and
undone in the graph, so the answers stay the same while the stored tensor reads otherwise."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def undone_transform(src: Path, tensor: str, out: Path, how: str) -> Path:
    """`src` with `tensor` stored as -W (`how` "neg") or 2W ("scale") and the graph undoing it
    right after the node that computes with it (that node's bias transformed alike): a Neg, or
    a Mul by 0.5. Written to `out`, which is returned."""
    import onnx
    from onnx import numpy_helper

    from nnmark.integrations.onnx import initializer_names

    proto = onnx.load(str(src))
    graph = proto.graph
    names = initializer_names(graph)
    at, node = next(  # the node computing with it (a dynamo export also reads its Shape)
        (k, n)
        for k, n in enumerate(graph.node)
        if names[tensor] in n.input and n.op_type not in ("Shape", "Size")
    )
    factor = -1.0 if how == "neg" else 2.0
    for init in graph.initializer:
        if init.name in node.input[1:]:  # the weight and the bias of that node
            w = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array((factor * w).astype(w.dtype), init.name))
    done = node.output[0]
    node.output[0] = done + ".pre"
    if how == "neg":
        undo = onnx.helper.make_node("Neg", [done + ".pre"], [done])
    else:
        graph.initializer.append(numpy_helper.from_array(np.float32(0.5), "thief.half"))
        undo = onnx.helper.make_node("Mul", [done + ".pre", "thief.half"], [done])
    graph.node.insert(at + 1, undo)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out
