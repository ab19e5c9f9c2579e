"""Pure statistics: bit error rates, binomial tails, combined p-values, verdicts.

The null hypothesis of a bit-carrying mark: a model that was never marked with this key matches
each key bit independently with probability 1/2 (the projection is secret and derived from the
owner's hash, so an unmarked model's projected bits are fair coin flips). Under that null the
number of matching bits is Binomial(n, 1/2), and the p-value is its upper tail at the observed
count.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

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
    return float(_st.binom.sf(k - 1, n, p0))


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
    return float(_st.combine_pvalues(ps, method="fisher").pvalue)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided confidence interval of a binomial rate k/n."""
    if n <= 0:
        return 0.0, 1.0
    res = _st.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(res.low), float(res.high)
