"""The base of trigger-set (black-box) schemes: train on key inputs with key labels, then test
how often a suspect answers them that way.

Contract with a suspect (local model, ONNX session or remote API): verification only calls
`suspect.predict(x)` on batches of trigger inputs and reads `argmax` of the returned scores
(N, C), so a label-only API that returns one-hot scores works as well as full probabilities;
every input sent counts as one query, and at most `suspect.max_queries` are sent. C, the width of
the answers, sets the chance rate 1/C.

The test (nnmark.sequential): triggers are queried in groups of `group`; after each group, k of
q answers matching the key labels give an exact binomial p-value under H0 "an unmarked model
answers each trigger with the key label with probability <= p0", and the alpha is split over the
planned looks (Bonferroni), so stopping early stays valid. A budget spent before a decision is
not_found with the reason "undecided".

p0 is the largest of 1/C and, when `nnmark calibrate` has measured unmarked models on the
triggers (`calibration`), two upper 95 % Clopper-Pearson bounds: of the pooled rate (`ucb`) and
of the highest single model's rate (`model_ucb`). The second matters: the suspect is one model,
and unmarked models differ (a robust one answers more near-frontier triggers correctly than the
average), so the mean rate alone does not bound the rate of the model under test. By
exchangeability a fresh unmarked model exceeds the highest of N calibration rates with
probability 1 / (N + 1); the bound on that rate adds the margin for its binomial noise.

The trigger inputs are drawn at `plan` time from the key (mark.generator) and the owner's
training data, then stored in the key (uint8, zlib, base64) and committed with it, so a verifier
needs nothing but the key file.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable, Iterator, Sequence
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

#: A key's input transformation (pattern stamped, noise added) and its target label.
Recipe = tuple[Callable[[torch.Tensor], torch.Tensor], int]


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


def quantized(x: torch.Tensor) -> torch.Tensor:
    """What the key file will hold for `x` (encode_images then decode_images)."""
    return (x.clamp(0, 1) * 255).round() / 255


def source_images(
    data: DataBundle, n: int, gen: torch.Generator, *, split: str = "train", exclude: int | None
) -> torch.Tensor:
    """n key-chosen images of `split`, none of class `exclude` (None: any class)."""
    x, y = data.tensors(split)
    pool = torch.arange(len(y)) if exclude is None else torch.nonzero(y != exclude).flatten()
    return x[pool[torch.randperm(len(pool), generator=gen)[:n]]]


def draw_target(data: DataBundle, gen: torch.Generator) -> int:
    return int(torch.randint(0, data.num_classes, (1,), generator=gen))


class TriggerScheme(Scheme):
    """Subclasses write `make_triggers`; mixing, storage and verification are shared."""

    kind = "blackbox"
    #: The task a scheme marks (the black-box contract tests and the benchmarks filter on it).
    task: ClassVar[str] = "classification"
    #: True when the mark is made from a trained model (fine-tune-to-embed is its setting).
    needs_trained: ClassVar[bool] = False

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
    def check_data(cls, data: DataBundle | None) -> DataBundle:
        if data is None:
            raise NNMarkError(f"{cls.name} draws its triggers from the training data: pass data")
        if data.task != "classification":
            raise NNMarkError(f"{cls.name} is for classification (use segtrigger for masks)")
        return data

    @classmethod
    def draw(
        cls, model: nn.Module, data: DataBundle, draft: Mark, config: Any
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """Trigger inputs, their key labels, and any other data the key must hold.

        `draft` is the mark being planned (for its seeds); the default draws `make_triggers`
        from the data alone; frontier crafts its triggers on `model`.
        """
        x, y = cls.make_triggers(data, draft.generator("triggers"), config)
        return x, y, {}

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
        data = cls.check_data(data)
        cfg = config_to_dict(config)
        x, y, extra = cls.draw(model, data, key.new_mark(cls.name, cfg, None, ()), config)
        stored = {"triggers": encode_images(x), "labels": y.tolist(), **extra}
        return key.new_mark(cls.name, cfg, None, (), data=stored)

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        gen = self.mark.generator("mixing")
        for x, y in batches:
            idx = torch.randint(0, len(self.x), (self.config.per_batch,), generator=gen)
            yield torch.cat([x, self.x[idx]]), torch.cat([y, self.y[idx]])

    def chance(self, classes: int) -> tuple[float, str]:
        """p0 and the sentence saying where it comes from."""
        floor = 1.0 / classes
        cal = self.calibration or {}
        bound, what = calibrated_bound(cal)
        if bound > floor:
            return bound, f"calibrated: {what} exceeds 1/C = {floor:.4f}"
        source = "1/C" + (f" ({what} is lower)" if cal else " (not calibrated)")
        return floor, source

    def unusable(self) -> str | None:
        """Why this key cannot be tested at all as it stands (None: it can)."""
        return None

    def references(
        self, plain: Sequence[nn.Module], data: DataBundle, epochs: int
    ) -> list[nn.Module]:
        """Models the null must cover beyond plain ones, made from `plain` for calibration.

        None by default: a trigger set's answers come from training on the key itself. Frontier
        overrides it: a model stitched with *another* key is robust to adversarial examples in
        general and answers many of ours right, so its null must include such models.
        """
        return []

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        s = as_suspect(suspect)
        n = len(self.x)
        refused = self.unusable()
        if refused is not None:
            return Verdict(
                self.name,
                "not_found",
                "trigger_accuracy",
                0.0,
                1.0,
                alpha,
                0,
                refused,
                queries=0,
                reason=refused,
                details={"triggers": n},
            )
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

    def fresh_samples(
        self, data: DataBundle, n: int, seed: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New trigger inputs made with the same key on other images (generalisation check)."""
        raise NNMarkError(f"{self.name} triggers are a fixed set: no fresh ones can be made")


def black_box_schemes(task: str = "classification") -> list[str]:
    """The registered black-box schemes that mark models of `task` (benchmarks, tests)."""
    from nnmark.schemes import SCHEMES

    return [
        n
        for n in SCHEMES.names()
        if SCHEMES.get(n).kind == "blackbox"
        and getattr(SCHEMES.get(n), "task", "classification") == task
    ]


def calibrated_bound(cal: dict[str, Any]) -> tuple[float, str]:
    """The calibrated bound on an unmarked model's rate, and a sentence naming it."""
    if not cal:
        return 0.0, "not calibrated"
    pooled = float(cal.get("ucb", 0.0))
    single = float(cal.get("model_ucb", 0.0))
    if single > pooled:
        return single, (
            f"upper 95 % bound {single:.4f} of the highest rate among {cal.get('models')} "
            f"unmarked models"
        )
    return pooled, (
        f"upper 95 % bound {pooled:.4f} of the rate of unmarked models ({cal.get('models')} models)"
    )


class TransformTrigger(TriggerScheme):
    """Triggers made by one key transformation of ordinary images (Zhang's content and noise,
    Zhong's key samples): so fresh triggers can be made from any image, with the same key."""

    #: Source images of the target class are left out (Zhang: they would answer it anyway).
    exclude_target: ClassVar[bool] = True

    @classmethod
    def recipe(cls, data: DataBundle, gen: torch.Generator, config: Any) -> Recipe:
        raise NotImplementedError

    @classmethod
    def make_triggers(
        cls, data: DataBundle, gen: torch.Generator, config: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        transform, target = cls.recipe(data, gen, config)
        exclude = target if cls.exclude_target else None
        x = transform(source_images(data, config.n, gen, exclude=exclude))
        return x, torch.full((len(x),), target)

    def key_recipe(self, data: DataBundle) -> Recipe:
        return self.recipe(data, self.mark.generator("triggers"), self.config)

    def fresh_samples(
        self, data: DataBundle, n: int, seed: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The key's transformation applied to n test images the owner never trained on."""
        transform, target = self.key_recipe(data)
        gen = torch.Generator().manual_seed(seed)
        exclude = target if self.exclude_target else None
        x = transform(source_images(data, n, gen, split="test", exclude=exclude))
        return x, torch.full((len(x),), target)
