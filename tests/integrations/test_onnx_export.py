"""ONNX round trip with a BatchNorm model: the mark is found in the exported file, white-box
(initializers) and black-box (onnxruntime)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from nnmark import OwnerKey, TrainConfig, embed, model_info, new_model, save_model
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.suspect import load_suspect

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(digits: DataBundle, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("onnx")
    key = OwnerKey.new("onnx owner", nonce="0d" * 16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 OpenMP threads on 2 shared cores: ~10x slower (spin-waits)
    try:
        model, key = embed(  # a composite mark: both schemes in one training
            new_model("resnet20", digits, seed=0),
            digits,
            "uchida+content",
            key=key,
            config=TrainConfig(epochs=10, seed=0),
        )
    finally:
        torch.set_num_threads(threads)
    src = d / "m.safetensors"
    save_model(model, model_info(model, digits), src)
    key.save(d / "k.nnkey")
    r = runner.invoke(app, ["export", str(src), "--format", "onnx", "--out", str(d / "m.onnx")])
    assert r.exit_code == 0, r.stderr
    return model, key, d


def test_initializers_keep_names_and_values_despite_batchnorm(exported) -> None:  # type: ignore[no-untyped-def]
    model, key, d = exported
    init = {
        i.name: numpy_helper.to_array(i) for i in onnx.load(str(d / "m.onnx")).graph.initializer
    }
    layer = f"{key.marks[0].layer}.weight"
    assert torch.equal(torch.from_numpy(init[layer].copy()), model.state_dict()[layer])
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_marks_found_in_the_onnx_file(exported, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    model, _, d = exported
    suspect = load_suspect(d / "m.onnx")
    x = digits.x[:8]
    assert torch.allclose(suspect.predict(x), model(x), atol=1e-4)
    r = runner.invoke(app, ["verify", str(d / "m.onnx"), "--key", str(d / "k.nnkey"), "--json"])
    assert r.exit_code == 0, r.stderr
    v = json.loads(r.stdout)
    parts = {p["scheme"]: p for p in v["parts"]}
    assert parts["uchida"]["verdict"] == "found" and parts["uchida"]["ber"] == 0.0
    print("content part:", parts["content"])
    assert parts["content"]["verdict"] == "found" and parts["content"]["queries"] <= 30


def test_bad_onnx_file_is_a_clear_error(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, _, d = exported
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    r = runner.invoke(app, ["verify", str(tmp_path / "bad.onnx"), "--key", str(d / "k.nnkey")])
    assert r.exit_code == 2 and "not a readable ONNX file" in r.stderr


def test_every_state_dict_tensor_reads_back_from_onnx_by_name(
    digits: DataBundle, tmp_path: Path
) -> None:
    """A fresh resnet20: its BatchNorm tensors are identical, and the exporter stores them once
    behind Identity nodes; the suspect still reads every state-dict name, with equal values."""
    from nnmark.integrations.onnx import OnnxSuspect, export_onnx

    model = new_model("resnet20", digits, seed=0).eval()
    export_onnx(model, digits.input_shape, tmp_path / "fresh.onnx")
    graph = onnx.load(str(tmp_path / "fresh.onnx")).graph
    assert any(n.op_type == "Identity" for n in graph.node)  # the aliasing really happens
    suspect = OnnxSuspect(tmp_path / "fresh.onnx")
    for name, tensor in model.state_dict().items():
        if not name.endswith("num_batches_tracked"):
            got = suspect.tensor(name)
            assert got is not None and torch.equal(got, tensor), name
