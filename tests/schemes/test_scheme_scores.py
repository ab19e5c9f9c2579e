"""Bit scores (Evidence.scores): the verdict doubles the smaller of the bits' and the scores'
p-values; the scores' null holds over keys and models (ST-DM here; Uchida's random key in
tests/test_foundation_uchida.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kstest, norm

from nnmark import OwnerKey, new_model, verify
from nnmark.data.base import DataBundle
from nnmark.schemes.base import SCORE_NULL, Evidence, bit_verdict
from nnmark.schemes.stdm import STDM, STDMConfig
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


def test_stdm_scores_are_standard_normal_on_never_marked_models(
    digits: DataBundle, unmarked_cnns: list[torch.nn.Module]
) -> None:
    """10 keys per architecture never used to mark anything, on the ten unmarked trained CNNs
    and freshly initialised MLPs and resnet20s: no claim, and z is standard normal
    (Kolmogorov-Smirnov against N(0, 1)): the key's uniform dither puts each projection
    uniformly in its lattice cell, whatever the model."""
    models = {
        "cnn": unmarked_cnns,
        "mlp": [new_model("mlp", digits, seed=s) for s in (1, 2)],
        "resnet20": [new_model("resnet20", digits, seed=s) for s in (1, 2)],
    }
    zs = []
    for arch, group in models.items():
        for i in range(10):
            owner = OwnerKey.new(f"null {arch} {i}", nonce=f"{i + 64:032x}")
            key = owner.with_mark(STDM.plan(group[0], owner, STDMConfig(), bits=256))
            for model in group:
                v = verify(model, key)
                assert v.verdict == "not_found" and v.p_value >= 1e-6, (arch, i, v.ber)
                zs.append(v.details["scores"]["z"])
    assert kstest(zs, "norm").pvalue > 1e-3, (np.mean(zs), np.std(zs))


def test_stdm_scores_stay_within_the_dithers_resolution(digits: DataBundle) -> None:
    """A projection exactly on a lattice point (a host of zeros, a dither torch.rand drew as 0)
    is not a tail of 1e-300: the dither is float32, so 2 d is read at no less than 2^-20 (a
    4-bit key was read at p 1.5e-70 with BER 0.5 before, review); the far side is finite too;
    projections too large for the dither to register give no scores."""
    from nnmark.schemes.stdm import DITHER_FLOOR

    net = new_model("cnn", digits, seed=0)
    owner = OwnerKey.new("stdm scores", nonce="5e" * 16)
    sch = STDM(STDM.plan(net, owner, STDMConfig(), bits=16))
    t = sch.target.double()
    p = torch.zeros(16, dtype=torch.float64)
    top = float(norm.isf(DITHER_FLOOR))
    on_point = sch._scores(p, t / 2)  # every r exactly on its target's point
    assert on_point is not None and all(abs(s) == pytest.approx(top) for s in on_point)
    far = sch._scores(p, torch.remainder(t / 2 + 0.5, 1.0))  # every r on the other point
    assert far is not None and all(abs(s) == pytest.approx(top) for s in far)
    v = bit_verdict(sch, Evidence(bits=tuple(t.long().tolist()), scores=on_point), 1e-6)
    assert v.p_value == pytest.approx(2 * float(norm.sf(top * 4)))  # z = 16 x top / sqrt(16)
    assert sch._scores(torch.full((16,), 1e30, dtype=torch.float64), t / 2) is None
