"""The base of trigger-set (black-box) schemes: train on key inputs with key labels, then test
how often a suspect answers them that way.

Contract with a suspect (local model, ONNX session or remote API): verification only calls
`suspect.predict(x)` on batches of trigger inputs and reads `argmax` of the returned scores
(N, C), so a label-only API that returns one-hot scores works as well as full probabilities;
every input sent counts as one query, and at most `suspect.max_queries` are sent. C, the width of
the answers, sets the chance rate 1/C.

The test (nnmark.sequential): triggers are queried in groups of `group`; after each group, k of
q answers matching the key labels give an exact binomial p-value under H0 "an unmarked model
answers each trigger with the key label with probability <= p0", with p0 = max(1/C, the upper 95 %
Clopper-Pearson bound of the rate measured on unmarked models by `nnmark calibrate`), and the
alpha is split over the planned looks (Bonferroni), so stopping early stays valid. A budget spent
before a decision is not_found with the reason "undecided".

The trigger inputs are drawn at `plan` time from the key (mark.generator) and the owner's
training data, then stored in the key (uint8, zlib, base64) and committed with it, so a verifier
needs nothing but the key file.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nnmark.config import check, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey
from nnmark.schemes.base import Batch, Scheme
from nnmark.sequential import LookPlan
from nnmark.stats import DEFAULT_ALPHA
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict


@dataclass(frozen=True)
class TriggerConfig:
    label = "trigger"
    n: int = 50  # trigger inputs
    per_batch: int = 4  # triggers mixed into each training batch
    group: int = 10  # queries per look at verification

    def __post_init__(self) -> None:
        check(self.n >= 1, f"n must be >= 1, got {self.n}")
        check(self.per_batch >= 1, f"per_batch must be >= 1, got {self.per_batch}")
        check(self.group >= 1, f"group must be >= 1, got {self.group}")


def encode_images(x: torch.Tensor) -> dict[str, Any]:
    """Inputs in [0, 1] as uint8, zlib, base64: small enough to live in a key file."""
    q = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return {"shape": list(q.shape), "b64": base64.b64encode(zlib.compress(q.tobytes(), 9)).decode()}


def decode_images(doc: dict[str, Any]) -> torch.Tensor:
    try:
        raw = zlib.decompress(base64.b64decode(doc["b64"]))
        arr = np.frombuffer(raw, np.uint8).reshape(doc["shape"])
    except (KeyError, ValueError, zlib.error) as exc:
        raise NNMarkError(f"key file: corrupted trigger images ({exc})") from None
    return torch.from_numpy(arr.astype(np.float32) / 255.0)


def target_images(
    data: DataBundle, n: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zhang et al.'s recipe: one key-chosen target class, and n key-chosen training images of
    the other classes that will all be taught to answer it."""
    x, y = data.tensors("train")
    target = int(torch.randint(0, data.num_classes, (1,), generator=gen))
    pool = torch.nonzero(y != target).flatten()
    idx = pool[torch.randperm(len(pool), generator=gen)[:n]]
    return x[idx], torch.full((len(idx),), target)


class TriggerScheme(Scheme):
    """Subclasses write `make_triggers`; mixing, storage and verification are shared."""

    kind = "blackbox"
    null_kind: ClassVar[str] = "key label"

    def __init__(self, mark: Mark) -> None:
        super().__init__(mark)
        self.x = decode_images(mark.data["triggers"])
        self.y = torch.tensor(mark.data["labels"], dtype=torch.long)

    @classmethod
    def make_triggers(
        cls, data: DataBundle, gen: torch.Generator, config: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def plan(
        cls,
        model: nn.Module,
        key: OwnerKey,
        config: Any,
        *,
        bits: int | None = None,
        payload: tuple[int, ...] | None = None,
        data: DataBundle | None = None,
    ) -> Mark:
        if data is None:
            raise NNMarkError(f"{cls.name} draws its triggers from the training data: pass data")
        if data.task != "classification":
            raise NNMarkError(f"{cls.name} is for classification (use segtrigger for masks)")
        cfg = config_to_dict(config)
        gen = key.new_mark(cls.name, cfg, None, ()).generator("triggers")
        x, y = cls.make_triggers(data, gen, config)
        return key.new_mark(
            cls.name, cfg, None, (), data={"triggers": encode_images(x), "labels": y.tolist()}
        )

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        gen = self.mark.generator("mixing")
        for x, y in batches:
            idx = torch.randint(0, len(self.x), (self.config.per_batch,), generator=gen)
            yield torch.cat([x, self.x[idx]]), torch.cat([y, self.y[idx]])

    def chance(self, classes: int) -> tuple[float, str]:
        """p0 and the sentence saying where it comes from."""
        floor = 1.0 / classes
        cal = self.calibration or {}
        ucb = float(cal.get("ucb", 0.0))
        if ucb > floor:
            return ucb, (
                f"calibrated: upper 95 % bound {ucb:.4f} of the rate of unmarked models "
                f"({cal.get('models')} models) exceeds 1/C = {floor:.4f}"
            )
        source = "1/C" + (f" (calibrated bound {ucb:.4f} is lower)" if cal else " (not calibrated)")
        return floor, source

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        s = as_suspect(suspect)
        n = len(self.x)
        plan = LookPlan.make(n, self.config.group, s.max_queries)
        k = q = 0
        decision = "not_found"
        p0, source = 0.5, ""
        while q < plan.max_queries:
            xb, yb = self.x[q : q + plan.group], self.y[q : q + plan.group]
            xb = xb[: plan.max_queries - q]
            yb = yb[: len(xb)]
            scores = s.predict(xb)
            if scores.dim() != 2 or scores.shape[0] != len(xb):
                raise NNMarkError(
                    f"{s.label}: answers of shape {tuple(scores.shape)} for {len(xb)} inputs"
                )
            if q == 0:
                p0, source = self.chance(max(int(scores.shape[1]), 2))
            k += int((scores.argmax(1) == yb).sum())
            q += len(xb)
            decision = plan.decide(k, q, p0, alpha, n)
            if decision != "continue":
                break
        p = plan.adjusted(k, q, p0)
        reason = None
        if decision != "found" and plan.max_queries < n:
            full = LookPlan.make(n, self.config.group, None)
            if full.adjusted(k + n - q, n, p0) < alpha:
                reason = "undecided: the query budget ran out before a decision"
        null = (
            f"an unmarked model answers each trigger with its key label with probability <= "
            f"p0 = {p0:.4f} ({source}); exact binomial tail, Bonferroni over {plan.looks} looks"
        )
        return Verdict(
            self.name,
            "found" if decision == "found" else "not_found",
            "trigger_accuracy",
            k / max(q, 1),
            p,
            alpha,
            q,
            null,
            queries=q,
            reason=reason,
            details={"matches": k, "p0": p0, "looks": plan.looks, "triggers": n},
        )

    def trigger_accuracy(self, model: nn.Module) -> float:
        """Share of all triggers answered with the key label (for benchmarks, no test)."""
        with torch.no_grad():
            return float((model(self.x).argmax(1) == self.y).float().mean())
