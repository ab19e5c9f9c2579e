"""Pure statistics: bit error rates, binomial tails, combined p-values, verdicts.

The null hypothesis of a bit-carrying mark: a model that was never marked with this key matches
each key bit independently with probability 1/2 (the projection is secret and derived from the
owner's hash, so an unmarked model's projected bits are fair coin flips). Under that null the
number of matching bits is Binomial(n, 1/2), and the p-value is its upper tail at the observed
count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_ALPHA = 1e-6


def ber(extracted: Sequence[int] | np.ndarray, expected: Sequence[int] | np.ndarray) -> float:
    """Bit error rate: the fraction of positions where two bit strings differ.

    >>> ber([1, 0, 1, 1], [1, 1, 1, 1])
    0.25
    """
    a = np.asarray(extracted, dtype=np.int64)
    b = np.asarray(expected, dtype=np.int64)
    if a.shape != b.shape:
        raise ValueError(f"bit strings differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("empty bit string")
    return float(np.mean(a != b))


def binomial_pvalue(k: int, n: int, p0: float = 0.5) -> float:
    """P(X >= k) for X ~ Binomial(n, p0): the chance of k or more matches under the null.

    >>> round(binomial_pvalue(64, 64), 25) == round(0.5 ** 64, 25)
    True
    >>> binomial_pvalue(0, 10)
    1.0
    """
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..{n}")
    return float(_scipy_stats().binom.sf(k - 1, n, p0))


#: The smallest p-value normal_pvalue reports: a tail beyond it is reported as it (conservative),
#: so that no combination of p-values takes the logarithm of 0.
MIN_PVALUE = 1e-300


def normal_pvalue(scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """(z, P(Z >= z)) for z = sum(scores) / sqrt(n): the exact upper tail when the n scores
    are independent standard normals under the null, floored at MIN_PVALUE.

    >>> z, p = normal_pvalue([1.0, 1.0, 1.0, 1.0])
    >>> z, round(p, 5)
    (2.0, 0.02275)
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0 or not np.all(np.isfinite(s)):
        return 0.0, 1.0
    z = float(s.sum() / np.sqrt(s.size))
    return z, max(MIN_PVALUE, float(_scipy_stats().norm.sf(z)))


def normal_isf(tail: np.ndarray) -> np.ndarray:
    """The standard normal's inverse survival function: z with P(Z >= z) = tail, elementwise.

    >>> [round(float(v), 4) for v in normal_isf(np.array([0.5, 0.025]))]
    [0.0, 1.96]
    """
    return np.asarray(_scipy_stats().norm.isf(tail), dtype=np.float64)


def label_randomization_pvalue(counts: np.ndarray, observed: int) -> float:
    """P(S >= observed), S = sum over groups g of counts[g, L_g], each L_g uniform over the C
    columns and independent: the exact null of a trigger set whose labels the key drew.

    `counts` (G x C) says how often the suspect answered each label with the triggers of each
    group. A model that never saw the key answers from the inputs alone, and the labels were
    drawn independently of the inputs, so conditional on its answers each group's match count
    is counts[g, L] for a uniformly random label L: whatever the model's "sink" classes, the
    test is exact. With one trigger per group it is Binomial(q, 1/C) for answers inside C.

    >>> round(label_randomization_pvalue(np.array([[1, 0], [1, 0]]), 2), 6)   # 2 of 2, C = 2
    0.25
    >>> label_randomization_pvalue(np.array([[3, 0, 0]]), 3)                # one group: 1/C
    0.3333333333333333
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2 or counts.shape[1] < 1 or (counts < 0).any():
        raise ValueError("counts must be a G x C table of non-negative integers")
    pmf = np.ones(1)
    share = 1.0 / counts.shape[1]
    for row in counts:
        group = np.zeros(int(row.max()) + 1)
        np.add.at(group, row, share)
        pmf = np.convolve(pmf, group)
    if observed <= 0:
        return 1.0
    if observed >= len(pmf):
        return 0.0
    return float(min(1.0, pmf[observed:].sum()))


def hypergeometric_pvalue(k: int, n_real: int, hits: int, total: int) -> float:
    """P(X >= k), X ~ Hypergeometric(total, hits, n_real): the chance that n_real triggers
    drawn at random from `total` exchangeable ones include k or more of the `hits`.

    >>> round(hypergeometric_pvalue(2, 2, 2, 4), 6)    # both hits among the 2 real of 4
    0.166667
    """
    if total <= 0 or n_real <= 0:
        return 1.0
    return float(_scipy_stats().hypergeom.sf(k - 1, total, hits, n_real))


def bonferroni_combine(p_values: Sequence[float]) -> float:
    """min(1, k * min p): valid whatever the dependence between the k tests."""
    ps = list(p_values)
    return min(1.0, len(ps) * min(ps)) if ps else 1.0


def decide(p_value: float, alpha: float) -> bool:
    """The mark is claimed when p < alpha (a strict inequality)."""
    return p_value < alpha


def fisher_combine(p_values: Sequence[float]) -> float:
    """Fisher's method: one p-value from independent tests (-2 sum log p ~ chi2 with 2k dof).

    >>> round(fisher_combine([0.5]), 6)
    0.5
    """
    ps = np.clip(np.asarray(p_values, dtype=np.float64), 1e-300, 1.0)
    if ps.size == 0:
        return 1.0
    return float(_scipy_stats().combine_pvalues(ps, method="fisher").pvalue)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided confidence interval of a binomial rate k/n."""
    if n <= 0:
        return 0.0, 1.0
    res = _scipy_stats().binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(res.low), float(res.high)


def _scipy_stats() -> Any:
    """scipy.stats, imported on first use: it costs about half a second, which every CLI
    command (and every `nnmark verify` a test runs in a subprocess) paid at start-up."""
    from scipy import stats

    return stats
