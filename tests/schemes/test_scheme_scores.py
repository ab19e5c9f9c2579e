"""Bit scores (Evidence.scores): the verdict doubles the smaller of the bits' and the scores'
p-values (their null over keys and models: tests/test_foundation_uchida.py)."""

from __future__ import annotations

import pytest
from scipy.stats import norm

from nnmark import OwnerKey, new_model
from nnmark.data.base import DataBundle
from nnmark.schemes.base import SCORE_NULL, Evidence, bit_verdict
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.stats import binomial_pvalue


def test_the_verdict_doubles_the_smaller_p(digits: DataBundle) -> None:
    net = new_model("cnn", digits, seed=0)
    owner = OwnerKey.new("scores", nonce="5c" * 16)
    sch = Uchida(Uchida.plan(net, owner, UchidaConfig(), bits=16))
    target = sch.target.tolist()
    right = tuple(target)
    # every bit right by a small margin: the bits' p (2^-16) is the smaller
    small = tuple((2 * t - 1) * 0.1 for t in target)
    v = bit_verdict(sch, Evidence(bits=right, scores=small), 1e-6)
    z = sum(0.1 for _ in target) / 4
    assert v.details["scores"]["z"] == pytest.approx(z)
    assert v.p_value == pytest.approx(2 * 2.0**-16) and v.null == SCORE_NULL
    # two bits wrong by a hair, the rest right by wide margins: the scores' p is the smaller
    wide = tuple((2 * t - 1) * (3.0 if j > 1 else -0.01) for j, t in enumerate(target))
    bits = tuple(t if j > 1 else 1 - t for j, t in enumerate(target))
    v = bit_verdict(sch, Evidence(bits=bits, scores=wide), 1e-6)
    p_scores = float(norm.sf((14 * 3.0 - 0.02) / 4))
    assert v.details["scores"]["p_bits"] == pytest.approx(binomial_pvalue(14, 16))
    assert v.p_value == pytest.approx(2 * p_scores) and v.ber == 2 / 16
    # scores that are not finite are not a test: the bits' p alone, doubled
    v = bit_verdict(sch, Evidence(bits=right, scores=(float("nan"),) * 16), 1e-6)
    assert v.p_value == pytest.approx(2 * 2.0**-16)
