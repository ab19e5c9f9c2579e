"""A query-budgeted test for black-box marks that may stop early and stays valid.

The owner queries trigger inputs in fixed-size groups and may stop after any group. Peeking at a
binomial p-value after every group and stopping "when p dips" inflates the false-positive rate,
so the looks are fixed before the first query, from the trigger count and the group size alone
(L = ceil(n / group), one after each group), and each is tested at alpha / L (Bonferroni alpha
spending): by the union bound the chance that an unmarked model is ever claimed is at most
alpha. A query budget only truncates that plan at a group's end: when the looks depended on
the budget, each budget was another family of tests, and a forger trying every budget claimed
10 of 300 never-marked keys at alpha 0.01 (red team, session 24). The reported
p-value is the smallest Bonferroni-adjusted min(1, L * p) over the looks taken (by the same
union bound a valid p-value, so `p < alpha` keeps its usual meaning); the last look's is in the
verdict's details (`p_last_look`). It was the last look's: a server that answered as the marked
model for the owner's first queries only then diluted the reported p (5e-10 at the first look,
2.8e-4 at the last; review, session 41; tests/blackbox/test_min_look.py).

The per-look test: k matches in q queries, H0 "each query matches with probability <= p0",
exact binomial upper tail.

>>> plan = LookPlan.make(n_triggers=100, group=10, budget=None)
>>> plan.looks, plan.max_queries
(10, 100)
>>> round(plan.adjusted(10, 10, 0.1), 12)   # 10 of 10 at chance rate 0.1
1e-09
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from nnmark.stats import binomial_pvalue

Decision = Literal["found", "not_found", "continue"]


@dataclass(frozen=True)
class LookPlan:
    """How many queries at most, and how many looks the alpha is split over."""

    group: int
    max_queries: int
    looks: int

    @classmethod
    def make(cls, n_triggers: int, group: int, budget: int | None) -> LookPlan:
        """The plan for `n_triggers` in groups of `group`; a `budget` below n_triggers is
        spent in whole groups (fewer than `group` queries: none), the looks stay the plan's."""
        looks = max(1, math.ceil(n_triggers / group))
        cap = n_triggers
        if budget is not None and budget < n_triggers:
            cap = max(budget, 0) // group * group
        return cls(group=group, max_queries=cap, looks=looks)

    def adjusted(self, k: int, q: int, p0: float) -> float:
        """Bonferroni-adjusted p-value of k matches in q queries."""
        return self.adjust(binomial_pvalue(k, q, p0))

    def adjust(self, p: float) -> float:
        """Bonferroni adjustment of one look's p-value."""
        return min(1.0, self.looks * p)

    def step(self, p_now: float, p_best: float, q: int, alpha: float) -> Decision:
        """The decision after a look with raw p-value `p_now`, where `p_best` is the smallest
        raw p-value the remaining queries could still reach (all of them matching)."""
        if self.adjust(p_now) < alpha:
            return "found"
        if q >= self.max_queries or self.adjust(p_best) >= alpha:
            return "not_found"
        return "continue"

    def decide(self, k: int, q: int, p0: float, alpha: float, n_total: int) -> Decision:
        """Claim when the adjusted p < alpha; give up when even all remaining queries matching
        could not get there (futility); otherwise keep querying."""
        if self.adjusted(k, q, p0) < alpha:
            return "found"
        left = self.max_queries - q
        if left <= 0 or self.adjusted(k + left, q + left, p0) >= alpha:
            return "not_found"
        return "continue"


@dataclass
class Smallest:
    """The smallest adjusted p-value over the looks taken (what a verdict reports), and after
    how many queries it was reached (the verdict's statistic is the last look's)."""

    p: float = 1.0
    queries: int = 0

    def see(self, p: float, queries: int) -> None:
        if p < self.p:
            self.p, self.queries = p, queries
