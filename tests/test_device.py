"""--device: every command that runs a model takes it, a device this machine lacks is one line
and exit 2 before any work, and keys, verdicts and model files do not depend on the device.

On a CPU-only machine the device-independence test runs its CPU leg (the code path: model moved
to the device, white-box reads from CPU copies, queries on the device, outputs back on the
CPU); the legs that need a GPU run where one exists and are reported as skipped, with the
reason, elsewhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nnmark import OwnerKey, TrainConfig, embed, load_model, new_model, verify
from nnmark.api import model_info
from nnmark.cli import app
from nnmark.device import OnDevice, device_of, resolve_device
from nnmark.errors import NNMarkError
from nnmark.io import save_model

runner = CliRunner()
HAS_CUDA = torch.cuda.is_available()
NO_GPU = "no CUDA GPU on this machine: the GPU leg runs where one exists"

#: Every command that runs a model, with the arguments it needs besides --device.
COMMANDS = {
    "train": ["train", "--epochs", "1", "--out", "{tmp}/m.safetensors"],
    "embed": ["embed", "{plain}", "--epochs", "1", "--out", "{tmp}/e.safetensors",
              "--key-out", "{tmp}/e.nnkey"],
    "attack": ["attack", "noise", "{plain}", "--out", "{tmp}/a.safetensors"],
    "verify": ["verify", "{plain}", "--key", "{key}"],
    "evaluate": ["evaluate", "{plain}"],
    "calibrate": ["calibrate", "{key}", "--models", "1", "--epochs", "1",
                  "--out", "{tmp}/c.nnkey"],
    "serve": ["serve", "{plain}"],
    "demo": ["demo", "--epochs", "1"],
}  # fmt: skip


@pytest.fixture(scope="module")
def files(digits, uchida_cnn, plain_cnn, tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("device")
    plain = d / "plain.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), plain)
    key = d / "owner.nnkey"
    uchida_cnn[1].save(key)
    return {"plain": str(plain), "key": str(key)}


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    expected = "cuda" if HAS_CUDA else "cpu"
    if not HAS_CUDA and resolve_device("auto").type == "mps":  # a Mac
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    for bad in ("tpu", "cuda:x", "cpu:3", "auto:0", "", "cuda:-1"):
        with pytest.raises(NNMarkError, match="unknown device|available"):
            resolve_device(bad)
    with pytest.raises(NNMarkError, match="not available"):
        resolve_device("cuda:99")  # no machine here has 100 GPUs


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_missing_device_is_one_line_and_exit_2(
    name: str, files: dict[str, str], tmp_path: Path
) -> None:
    args = [a.format(tmp=tmp_path, **files) for a in COMMANDS[name]]
    r = runner.invoke(app, [*args, "--device", "cuda:99"])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "device 'cuda:99' is not available" in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []  # refused before any work: nothing written


def test_commands_run_with_device_cpu(files: dict[str, str], tmp_path: Path) -> None:
    for name in ("train", "embed", "attack", "evaluate"):
        args = [a.format(tmp=tmp_path, **files) for a in COMMANDS[name]]
        r = runner.invoke(app, [*args, "--device", "cpu"])
        assert r.exit_code == 0, (name, r.stdout, r.stderr)
    r = runner.invoke(app, ["verify", str(tmp_path / "e.safetensors"), "--key",
                            str(tmp_path / "e.nnkey"), "--device", "cpu", "--json"])  # fmt: skip
    # the verdict the API gives on the same file, and the exit code that says it
    expected = verify(
        load_model(tmp_path / "e.safetensors")[0], OwnerKey.load(tmp_path / "e.nnkey")
    )
    got = json.loads(r.stdout)
    assert (got["verdict"], got["p_value"]) == (expected.verdict, expected.p_value)
    assert r.exit_code == (0 if expected.verdict == "found" else 1), r.stderr


LEGS = [
    pytest.param("cpu", "cpu", id="cpu->cpu"),
    pytest.param("cuda", "cpu", id="cuda->cpu", marks=pytest.mark.skipif(not HAS_CUDA, reason=NO_GPU)),
    pytest.param("cpu", "cuda", id="cpu->cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason=NO_GPU)),
]  # fmt: skip


@pytest.mark.parametrize(("mark_on", "verify_on"), LEGS)
def test_keys_and_verdicts_do_not_depend_on_the_device(
    digits, plain_cnn, tmp_path: Path, mark_on: str, verify_on: str
) -> None:  # type: ignore[no-untyped-def]
    """Mark on one device (fine-tune-to-embed, a white-box and a black-box mark together), save,
    verify the file and the live model on another: the same verdict, BER and p-value for each
    mark; the file's tensors are CPU tensors. Equality is under test, not whether one epoch
    plants the marks (session 40: 5 epochs, under the default recipe, asserted "found"; the
    default recipe's marks are tests/schemes' contract)."""
    key = OwnerKey.new("o", nonce="12" * 16)
    marked, key = embed(
        plain_cnn, digits, "uchida+content", key=key, config=TrainConfig(epochs=1),
        device=mark_on,
    )  # fmt: skip
    assert device_of(marked).type == mark_on
    path = tmp_path / "m.safetensors"
    save_model(marked, model_info(marked, digits), path)
    loaded, _ = load_model(path)
    assert device_of(loaded).type == "cpu"
    here = verify(marked, key, data=[digits])
    there = verify(loaded.to(verify_on), key, data=[digits])
    assert here.verdict == there.verdict
    assert len(here.parts) == 2 and all(a.n > 0 for a in here.parts)  # both marks were read
    for a, b in zip(here.parts, there.parts, strict=True):
        assert (a.verdict, a.ber, a.p_value) == (b.verdict, b.ber, b.p_value)


def test_on_device_wrapper_answers_on_the_cpu(plain_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    x = digits.x[:4]
    wrapped = OnDevice(plain_cnn)
    with torch.no_grad():
        assert torch.equal(wrapped(x), plain_cnn(x))
    assert wrapped(x).device.type == "cpu"


def test_bf16_autocast_embeds_marks_found_at_the_default_recipe(digits, caplog) -> None:  # type: ignore[no-untyped-def]
    """--amp bf16: the forward passes in bfloat16, the penalties in fp32; a white-box and a
    black-box mark embedded with the default recipe are both found. The host is the MLP: on a
    CPU without native bfloat16 (this one may be such) a bf16 convolution takes PyTorch's
    reference kernels, and 20 epochs of the cnn took 96 s of the suite where the MLP takes 5;
    autocast and the fp32 penalties are the same code for either. Such a CPU is told so."""
    from nnmark.train import native_half_precision

    key = OwnerKey.new("o", nonce="13" * 16)
    init = new_model("mlp", digits, seed=0)
    with caplog.at_level("WARNING", logger="nnmark.train"):
        marked, key = embed(init, digits, "uchida+content", key=key, amp="bf16")
    slow = not native_half_precision("bf16", torch.device("cpu"))
    assert ("no native bf16 kernels" in caplog.text) == slow
    v = verify(marked, key, data=[digits])
    assert v.verdict == "found" and all(p.verdict == "found" for p in v.parts)
    assert all(p.dtype == torch.float32 for p in marked.parameters())  # weights stay fp32


def test_fp16_scales_the_loss_and_refuses_a_custom_step(digits) -> None:  # type: ignore[no-untyped-def]
    """fp16 trains through a GradScaler (one epoch: the path, not a mark), and a scheme that
    runs its own step (tartaglione), which no scaler reaches, is refused in one line."""
    from nnmark import train

    init = new_model("cnn", digits, seed=0, width=4, hidden=16)
    out = train(init, digits, TrainConfig(epochs=1), amp="fp16")
    assert all(torch.isfinite(p).all() for p in out.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(init.parameters(), out.parameters()))
    with pytest.raises(NNMarkError, match="fp16 needs loss scaling"):
        embed(new_model("cnn", digits, seed=0), digits, "tartaglione", amp="fp16")
    with pytest.raises(NNMarkError, match="amp must be bf16 or fp16"):
        train(init, digits, TrainConfig(epochs=1), amp="fp8")  # type: ignore[arg-type]
    r = runner.invoke(app, ["train", "--epochs", "1", "--amp", "fp8", "--out", "/tmp/x.st"])
    assert r.exit_code == 2 and "--amp must be bf16 or fp16" in r.stderr


def test_dataloader_workers_feed_the_same_batches(digits) -> None:  # type: ignore[no-untyped-def]
    """fit(workers=2): the batches come from worker processes, in the order and with the values
    the main process would give (the sampler and its seed stay in the main process), so the
    trained weights are the same bit for bit. Two epochs of a narrow CNN: the path, not a mark."""
    from nnmark import train

    init = new_model("cnn", digits, seed=0, width=4, hidden=16)
    config = TrainConfig(epochs=2)
    here = train(init, digits, config)
    fed = train(init, digits, config, workers=2)
    assert all(
        torch.equal(a, b) for a, b in zip(here.state_dict().values(), fed.state_dict().values())
    )


def test_workers_on_the_cli_give_the_same_model(tmp_path: Path) -> None:
    """`nnmark train --workers 2`: the same weights as the main process alone (2 epochs)."""
    from safetensors.torch import load_file

    for w in ("0", "2"):
        r = runner.invoke(
            app,
            ["train", "--epochs", "2", "--workers", w, "--out", str(tmp_path / f"{w}.safetensors")],
        )
        assert r.exit_code == 0, r.stderr
    a, b = load_file(str(tmp_path / "0.safetensors")), load_file(str(tmp_path / "2.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    r = runner.invoke(app, ["train", "--workers", "-1", "--out", str(tmp_path / "x.safetensors")])
    assert r.exit_code == 2
