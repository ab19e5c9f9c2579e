"""The cnn's pooling (nnmark.models.cnn.max_pool2) is F.max_pool2d, bit for bit.

Faster on a CPU (benchmarks/results/cnn_pool.md); it must not change a value, a gradient, a
trained weight or an exported graph, or every committed mark and figure would move.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from nnmark.models.cnn import max_pool2

SHAPES = [(64, 64, 8, 8), (5, 3, 7, 7), (2, 4, 28, 28), (1, 1, 2, 3)]


def batch(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """ReLU outputs with ties: a block of equal positive values (a bias over blank input) and
    zeros, where which maximum gets the gradient matters."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    x[:, :, : shape[2] // 2] = 0.5
    return x.relu()


@pytest.mark.parametrize("shape", SHAPES)
def test_values_and_gradients_are_max_pool2ds(shape: tuple[int, ...]) -> None:
    for seed in range(3):
        x = batch(shape, seed)
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        want, got = F.max_pool2d(a, 2), max_pool2(b)
        assert torch.equal(want, got) and got.is_contiguous()
        g = torch.randn(want.shape, generator=torch.Generator().manual_seed(seed))
        (da,) = torch.autograd.grad(want, a, g, create_graph=True)
        (db,) = torch.autograd.grad(got, b, g, create_graph=True)
        assert torch.equal(da, db)
        # a double backward (tartaglione's inward gradient) flows as through max_pool2d
        (dda,) = torch.autograd.grad((da * da).sum(), a)
        (ddb,) = torch.autograd.grad((db * db).sum(), b)
        assert torch.equal(dda, ddb)
        with torch.no_grad():
            assert torch.equal(max_pool2(x), want)


def test_off_the_cpu_and_under_tracing_it_is_max_pool2d() -> None:
    meta = max_pool2(torch.empty(2, 3, 8, 8, device="meta"))
    assert meta.shape == (2, 3, 4, 4)
    # torch.func: vmap cannot ask for a channels-last layout (a RuntimeError before the check)
    x = batch((3, 2, 4, 6, 6), 0)
    pools = (max_pool2, lambda t: F.max_pool2d(t, 2))
    assert torch.equal(*(torch.func.vmap(pool)(x) for pool in pools))
    grads = [torch.func.grad(lambda t, pool=pool: (pool(t) ** 2).sum())(x[0]) for pool in pools]
    assert torch.equal(*grads)
    traced = torch.jit.trace(lambda t: max_pool2(t), torch.rand(1, 2, 4, 4))
    assert "max_pool2d" in str(traced.graph) and "channels_last" not in str(traced.graph)


def test_the_cnn_still_scripts_and_traces_with_fx(digits) -> None:  # type: ignore[no-untyped-def]
    """torch.jit.script compiles no autograd.Function and torch.fx cannot branch on a traced
    value: both took the cnn before, and take it as it was."""
    from nnmark import new_model

    model, x = new_model("cnn", digits, seed=0), digits.x[:8]
    want = model(x)
    scripted, graph = torch.jit.script(model), torch.fx.symbolic_trace(model)
    assert torch.equal(scripted(x), want) and torch.equal(graph(x), want)
    pools = [n for n in graph.graph.nodes if n.target is F.max_pool2d]
    assert len(pools) == 2


def test_a_trained_cnn_and_its_onnx_graph_are_unchanged(digits, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from nnmark import TrainConfig, new_model, train
    from nnmark.models import cnn

    def run() -> tuple[dict[str, torch.Tensor], bytes]:
        model = train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=2, seed=0))
        out = io.BytesIO()
        torch.onnx.export(model, (digits.x[:1],), out, dynamo=False)
        return model.state_dict(), out.getvalue()

    weights, graph = run()
    monkeypatch.setattr(cnn, "max_pool2", lambda x: F.max_pool2d(x, 2))
    plain_weights, plain_graph = run()
    assert all(torch.equal(weights[k], plain_weights[k]) for k in weights)
    assert graph == plain_graph
