"""A real OIP v2 server on a free loopback port, a verifying client, and tritonclient."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from typer.testing import CliRunner

from nnmark import OwnerKey, TrainConfig, embed, new_model
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.remote.client import RemoteSuspect
from nnmark.remote.defenses import parse_defense
from nnmark.remote.server import create_app

runner = CliRunner()


@contextmanager
def serving(
    model: torch.nn.Module, defenses: tuple[str, ...] = (), name: str = "m"
) -> Iterator[str]:
    """Start uvicorn in a thread on 127.0.0.1, port chosen by the OS; poll readiness."""
    asgi = create_app(
        model,
        (1, 8, 8),
        model_name=name,
        defenses=[parse_defense(d) for d in defenses],
        max_body=200_000,
    )
    server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{url}/v2/health/ready").json() == {"ready": True}
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def content_marked(digits: DataBundle, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    key = OwnerKey.new("remote owner", nonce="ab" * 16)
    model, key = embed(
        new_model("cnn", digits, seed=0),
        digits,
        "content",
        key=key,
        config=TrainConfig(epochs=20, seed=0),
    )
    path = tmp_path_factory.mktemp("remote") / "owner.nnkey"
    key.save(path)
    return model, key, path


def test_predictions_match_the_local_model(plain_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    with serving(plain_cnn) as url:
        remote = RemoteSuspect(url)
        assert remote.model_name == "m" and remote.classes == 10
        x = digits.x[:16]
        assert torch.allclose(remote.predict(x), plain_cnn(x).softmax(1), atol=1e-5)
        assert remote.queries == 16


@pytest.mark.parametrize("defense", [(), ("top1",), ("round:decimals=1",), ("label",)])
def test_remote_verification_through_the_cli(defense, content_marked, plain_cnn) -> None:  # type: ignore[no-untyped-def]
    model, _, key_path = content_marked
    with serving(model, defense) as url:
        r = runner.invoke(app, ["verify", "--remote", url, "--key", str(key_path), "--json"])
        assert r.exit_code == 0, r.stderr
        v = json.loads(r.stdout)
        print(
            f"defense {defense or 'none'}: {v['verdict']} with {v['queries']} queries, p {v['p_value']:.2e}"
        )
        assert v["verdict"] == "found" and v["queries"] <= 30 and v["p_value"] < 1e-6
    with serving(plain_cnn, defense) as url:
        r = runner.invoke(app, ["verify", "--remote", url, "--key", str(key_path), "--json"])
        assert r.exit_code == 1 and json.loads(r.stdout)["verdict"] == "not_found"


def test_budget_and_refusals_are_reported(content_marked) -> None:  # type: ignore[no-untyped-def]
    model, key, key_path = content_marked
    with serving(model) as url:
        r = runner.invoke(
            app, ["verify", "--remote", url, "--key", str(key_path), "--json", "--max-queries", "5"]
        )
        v = json.loads(r.stdout)
        assert r.exit_code == 1 and v["queries"] == 5 and "undecided" in v["reason"]
    with serving(model, ("reject:threshold=0.999999",)) as url:
        r = runner.invoke(app, ["verify", "--remote", url, "--key", str(key_path)])
        assert r.exit_code == 2 and "refused queries" in r.stderr


def test_unreachable_and_unknown_model(content_marked, plain_cnn) -> None:  # type: ignore[no-untyped-def]
    _, _, key_path = content_marked
    with serving(plain_cnn) as url:
        r = runner.invoke(
            app, ["verify", "--remote", url, "--model-name", "other", "--key", str(key_path)]
        )
        assert r.exit_code == 2 and "unknown model 'other'" in r.stderr
    r = runner.invoke(app, ["verify", "--remote", url, "--key", str(key_path)])
    assert r.exit_code == 2 and "not reachable" in r.stderr


def test_bad_payloads_get_4xx_with_a_message(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    good = {
        "inputs": [{"name": "input", "shape": [1, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64}]
    }
    cases = [
        (b"{not json", 400, "malformed JSON"),
        (json.dumps({"inputs": []}).encode(), 400, "exactly 1 input"),
        (
            json.dumps({**good, "inputs": [{**good["inputs"][0], "shape": [1, 1, 9, 9]}]}).encode(),
            400,
            "does not match",
        ),
        (
            json.dumps({**good, "inputs": [{**good["inputs"][0], "datatype": "BYTES"}]}).encode(),
            400,
            "not supported",
        ),
        (
            json.dumps({**good, "inputs": [{**good["inputs"][0], "data": [0.0] * 10}]}).encode(),
            400,
            "needs 64",
        ),
        (
            json.dumps({**good, "inputs": [{**good["inputs"][0], "data": ["a"] * 64}]}).encode(),
            400,
            "only numbers",
        ),
        (b"[" + b"0.0," * 100_000 + b"0.0]", 413, "exceeds"),
    ]
    with serving(plain_cnn) as url:
        for body, status, msg in cases:
            r = httpx.post(
                f"{url}/v2/models/m/infer",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert r.status_code == status and msg in r.json()["error"], (r.status_code, r.text)
        assert httpx.post(f"{url}/v2/models/nope/infer", json=good).status_code == 404
        assert httpx.post(f"{url}/v2/models/m/infer", json=good).status_code == 200  # still alive


def test_official_tritonclient_conformance(plain_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.http as th

    with serving(plain_cnn) as url:
        client = th.InferenceServerClient(url=url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("m")
        meta = client.get_model_metadata("m")
        assert meta["inputs"][0]["shape"] == [-1, 1, 8, 8]
        x = digits.x[:4].numpy().astype(np.float32)
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=False)
        res = client.infer(
            "m", [inp], outputs=[th.InferRequestedOutput("output", binary_data=False)]
        )
        got = res.as_numpy("output")
        assert got.shape == (4, 10)
        assert np.allclose(got, plain_cnn(digits.x[:4]).softmax(1).detach().numpy(), atol=1e-5)


def test_serve_command_rejects_bad_input(tmp_path: Path) -> None:
    r = runner.invoke(app, ["serve", str(tmp_path / "missing.safetensors")])
    assert r.exit_code == 2 and "model file not found" in r.stderr
    assert (
        "unknown defense"
        in runner.invoke(app, ["serve", "x.safetensors", "--defend", "magic"]).stderr
    )
