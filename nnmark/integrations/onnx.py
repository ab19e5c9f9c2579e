"""ONNX export that keeps the marked weights readable, and ONNX files as suspects.

torch's ONNX export with constant folding in eval mode may fold BatchNorm into the preceding
convolution and keep the convolution's name: a white-box reader would then silently see other
values. `export_onnx` exports with `do_constant_folding=False` and the model's own mode
preserved, so every initializer keeps its state-dict name and its exact values (checked after
export: a mismatch is an error, not a silent difference). The exporter stores identical tensors
once and names the copies through `Identity` nodes (e.g. the BatchNorm weights of a fresh model,
all ones): `initializer_names` follows those, so every state-dict name still resolves.
`OnnxSuspect` reads initializers by name (white-box) and runs the graph with onnxruntime
(black-box).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_bytes
from nnmark.suspect import Suspect


def initializer_names(graph: Any) -> dict[str, str]:
    """Every name under which an initializer is reachable -> the initializer's own name.

    Identity nodes fed by an initializer (or by another such alias) give it extra names.
    """
    names = {i.name: i.name for i in graph.initializer}
    changed = True
    while changed:
        changed = False
        for node in graph.node:
            if node.op_type == "Identity" and node.input and node.input[0] in names:
                for out in node.output:
                    if out not in names:
                        names[out] = names[node.input[0]]
                        changed = True
    return names


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> None:
    """Write `model` as ONNX (inputs (N, *input_shape)), initializers named as the state dict."""
    import onnx
    from onnx import numpy_helper

    model = model.eval()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, *input_shape),),
            str(out),
            dynamo=False,
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        data = out.read_bytes()
    graph = onnx.load_from_string(data).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    names = initializer_names(graph)
    for name, tensor in model.state_dict().items():
        if name not in names:
            if name.endswith("num_batches_tracked"):
                continue  # not used by an eval-mode graph; no scheme reads it
            raise NNMarkError(f"ONNX export renamed or dropped {name}; refusing to write it")
        if not np.array_equal(arrays[names[name]], tensor.detach().cpu().numpy()):
            raise NNMarkError(f"ONNX export changed the values of {name}; refusing to write it")
    atomic_write_bytes(path, data)


class OnnxSuspect(Suspect):
    """An ONNX file: initializers by name, predictions through onnxruntime."""

    def __init__(self, path: str | Path) -> None:
        import onnx
        from onnx import numpy_helper

        self.path = Path(path)
        self.label = str(self.path)
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:  # noqa: BLE001 - onnx raises protobuf DecodeError and others
            raise NNMarkError(
                f"{self.path}: not a readable ONNX file ({type(exc).__name__})"
            ) from None
        self._init = {i.name: i for i in model.graph.initializer}
        self._names = initializer_names(model.graph)
        self._array = numpy_helper.to_array
        self._session = None

    def tensor(self, name: str) -> torch.Tensor | None:
        if name not in self._names:
            return None
        return torch.from_numpy(np.array(self._array(self._init[self._names[name]])))

    def tensor_names(self) -> list[str]:
        return list(self._names)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self._session is None:
            import onnxruntime as ort

            self._session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
        session = self._session
        assert session is not None
        name = session.get_inputs()[0].name
        return torch.from_numpy(session.run(None, {name: x.float().numpy()})[0])
