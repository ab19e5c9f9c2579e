"""actsign's hinge margin is in units of each unit's spread over the training batch, so the
mark's strength does not depend on the scale a model happens to carry its units at: a unit a
thief's fine-tune moves by a fraction of its spread keeps its sign (the absolute margin 0.1 was a
third of the digits resnet20's spread and a twentieth of the cnn's; the measured effect is in
benchmarks/results/activation_finetune_why*.md). No training here: the penalty alone."""

from __future__ import annotations

import copy

import pytest
import torch

from nnmark import NNMarkError, new_model
from nnmark.data.base import DataBundle
from nnmark.keys import OwnerKey
from nnmark.layers import evaluating
from nnmark.schemes._activations import layer_output
from nnmark.schemes.actsign import SPREAD_INPUTS, ActSign, ActSignConfig


def _scheme(model: torch.nn.Module, digits: DataBundle, **config: object) -> ActSign:
    cfg = ActSignConfig(**config)  # type: ignore[arg-type]
    mark = ActSign.plan(model, OwnerKey.new("margin owner", nonce="c3" * 16), cfg, data=digits)
    return ActSign(mark, [digits])


def test_the_margin_is_the_units_spread_over_the_batch(digits: DataBundle) -> None:
    model = new_model("mlp", digits, seed=0)
    scheme = _scheme(model, digits)
    x, _ = digits.tensors("train")
    with torch.no_grad(), evaluating(model):
        out = layer_output(model, scheme.mark.layer or "", x[:SPREAD_INPUTS])
        margins = scheme.margins(model, x[:100])
    expected = out[:, scheme.cols].std(0, correction=0)
    assert margins.shape == (64,) and torch.allclose(margins, expected)
    assert bool((margins > 0).all())
    # an epoch's last batch, too small for a spread, takes the last spreads read
    assert torch.equal(scheme.margins(model, x[200:201]), margins)
    fresh = _scheme(model, digits)
    with pytest.raises(NNMarkError, match="batch of 7 inputs gives no spread"):
        fresh.margins(model, x[:7])
    with pytest.raises(NNMarkError, match="no float tensor of inputs"):
        fresh.penalty(model, {"pixel_values": x[:64]})  # type: ignore[arg-type]
    absolute = _scheme(model, digits, margin=0.1, margin_unit="absolute")
    assert absolute.margins(model, x) == pytest.approx(0.1)


def test_a_unit_carried_at_another_scale_gets_the_same_hinges(digits: DataBundle) -> None:
    """The host's units scaled by 3 (as a ReLU network can carry them without changing its
    function): in units of spread every hinge is the same, three times the penalty; with the
    absolute margin the hinges change."""
    model = new_model("mlp", digits, seed=0)
    x, y = digits.tensors("train")
    batch = (x[:64], y[:64])
    for unit, same in (("spread", True), ("absolute", False)):
        scheme = _scheme(model, digits, margin=1.0, margin_unit=unit)
        scaled = copy.deepcopy(model)
        host = dict(scaled.named_modules())[scheme.mark.layer or ""]
        with torch.no_grad():
            host.weight.mul_(3.0)
            host.bias.mul_(3.0)
        with torch.no_grad():
            p, p3 = scheme.penalty(model, batch), scheme.penalty(scaled, batch)
        assert float(p) > 0
        assert bool(torch.isclose(p3, 3 * p, rtol=1e-4)) is same, (unit, float(p), float(p3))
