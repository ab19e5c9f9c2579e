"""A query-budgeted black-box verdict reports the smallest Bonferroni-adjusted p over the looks it
took, not the last look's: a thief's server that answers as the marked model only for the
owner's first queries diluted the reported p (content: 5e-10 at the first look, 2.8e-4 reported
at the last; review, session 41). By the union bound the smallest of L looks times L is still a
valid p-value (nnmark.sequential)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnmark import SCHEMES, OwnerKey, verify
from nnmark.api import bound_scheme
from nnmark.config import build_config
from nnmark.sequential import LookPlan
from nnmark.stats import binomial_pvalue
from nnmark.suspect import ModuleSuspect


class HonestFirst(nn.Module):
    """Answers the key's trigger label for the first `k` inputs it is asked, then as `plain`."""

    def __init__(self, plain: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int) -> None:
        super().__init__()
        self.plain, self.x, self.y, self.k, self.seen = plain, x, y, k, 0

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        out = self.plain(xb).detach().clone()
        for i in range(len(xb)):
            if self.seen < self.k:
                j = int((self.x - xb[i]).flatten(1).abs().sum(1).argmin())
                out[i] = -10.0
                out[i, self.y[j]] = 10.0
            self.seen += 1
        return out


def test_a_server_honest_for_the_first_queries_does_not_dilute_the_p(digits, plain_cnn) -> None:  # type: ignore[no-untyped-def]
    cls = SCHEMES.get("content")
    key = OwnerKey.new("honest first", nonce="e6" * 16)
    key = key.with_mark(cls.plan(plain_cnn, key, build_config(cls.Config, {}), data=digits))
    x, y = bound_scheme(key, 0, digits).queried()
    group = bound_scheme(key, 0, digits).config.group
    v = verify(HonestFirst(plain_cnn, x, y, group), key, data=digits)
    assert v.verdict == "not_found"  # one look's worth of right answers is no claim here
    last = v.details["p_last_look"]
    assert v.queries > group and last > v.p_value  # it asked on, and the later looks diluted
    assert v.details["p_smallest_at"] == group  # the first look's
    # the reported p is the first look's: all `group` answers right, times the looks
    first = verify(_budget(HonestFirst(plain_cnn, x, y, group), group), key, data=digits)
    assert v.p_value == first.p_value < 1e-6


def _budget(model: nn.Module, queries: int) -> ModuleSuspect:
    s = ModuleSuspect(model)
    s.max_queries = queries
    return s


def test_the_smallest_adjusted_p_over_the_looks_is_a_valid_p_value() -> None:
    """Under the null (each answer right with probability p0, independently), P(min over the
    looks of L * p_look <= t) <= t, by simulation over 20,000 sequences at three plans."""
    rng = np.random.default_rng(0)
    for n, group, p0 in ((100, 10, 0.1), (60, 20, 0.5), (32, 4, 0.25)):
        plan = LookPlan.make(n, group, None)
        hits = rng.random((20_000, n)) < p0
        cum = hits.cumsum(1)
        looks = [min(n, (i + 1) * group) for i in range(plan.looks)]
        tail = {(k, q): binomial_pvalue(k, q, p0) for q in looks for k in range(q + 1)}
        p_min = np.array([min(plan.adjust(tail[int(c[q - 1]), q]) for q in looks) for c in cum])
        for t in (0.01, 0.05, 0.2):
            # the exact rate is at most t; 3 binomial standard errors of slack for the draw
            slack = 3 * (t * (1 - t) / len(p_min)) ** 0.5
            assert (p_min <= t).mean() <= t + slack, (n, group, p0, t)
