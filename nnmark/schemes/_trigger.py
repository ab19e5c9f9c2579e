"""The base of trigger-set (black-box) schemes: train on key inputs with key labels, then test
how often a suspect answers them that way.

Contract with a suspect (local model, ONNX session or remote API): verification only calls
`suspect.predict(x)` on batches of trigger inputs and reads `argmax` of the returned scores
(N, C), so a label-only API that returns one-hot scores works as well as full probabilities;
every input sent counts as one query, and at most `suspect.max_queries` are sent. Scores that
are NaN or infinite are not answers: verification stops with an error that says how many.

Everything is re-derived from the key at verification (nothing but the data set's name and
content hash is stored): the trigger inputs from the key's streams and the named data set, and
the labels. The triggers form groups (one key transformation each, or one trigger per group);
the key draws each group's label uniformly from the C classes with a stream of its own,
independently of the inputs.

The null, exactly. A model that never saw the key answers each trigger from the input alone, so
given its answers the labels are still uniform and independent: a group's matches are
counts[g, L] for a uniformly random L (nnmark.stats.label_randomization_pvalue). The test is
exact whatever the model does with out-of-distribution inputs, including the "sink" classes
unmarked models send most of them to, which made one key class per trigger set a false null
(a key whose class is a sink was claimed on unmarked models). No calibration is needed.

Triggers are queried in groups of `group` (nnmark.sequential): after each look the exact
p-value is tested at alpha / looks (Bonferroni), so stopping early stays valid. A budget spent
before a decision is not_found with the reason "undecided".
"""

from __future__ import annotations

import base64
import copy
import math
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import KeyInputsMismatch, NNMarkError
from nnmark.keys import Mark, OwnerKey
from nnmark.schemes.base import (
    Batch,
    Scheme,
    check_derived,
    check_fields,
    check_int,
    check_shape,
    config_count,
    key_error,
)
from nnmark.sequential import LookPlan, Smallest
from nnmark.stats import DEFAULT_ALPHA, label_randomization_pvalue
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

#: One key transformation of ordinary images (a stamped pattern, added noise).
Transform = Callable[[torch.Tensor], torch.Tensor]
MAX_TRIGGERS = 100_000


@dataclass(frozen=True)
class TriggerConfig:
    label = "trigger"
    n: int = 50  # trigger inputs
    per_batch: int = 4  # triggers mixed into each training batch
    group: int = 10  # queries per look

    def __post_init__(self) -> None:
        check(1 <= self.n <= MAX_TRIGGERS, f"n must be in [1, {MAX_TRIGGERS}], got {self.n}")
        check(1 <= self.per_batch <= 4096, f"per_batch must be in [1, 4096], got {self.per_batch}")
        check(1 <= self.group <= 4096, f"group must be in [1, 4096], got {self.group}")


def encode_images(x: torch.Tensor) -> dict[str, Any]:
    """Inputs in [0, 1] as uint8, zlib, base64: small enough to live in a key file."""
    q = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return {"shape": list(q.shape), "b64": base64.b64encode(zlib.compress(q.tobytes(), 9)).decode()}


def decode_images(doc: Any, what: str = "key file: trigger images") -> torch.Tensor:
    """The inverse of encode_images, bounded: the declared shape caps what is decompressed, so a
    small field cannot expand into gigabytes (a zlib bomb)."""
    try:
        shape = [int(s) for s in doc["shape"]]
        if not 1 <= len(shape) <= 5 or any(s < 1 for s in shape):
            raise ValueError("bad shape")
        size = int(np.prod(shape))
        if size > MAX_TRIGGERS * 4096:
            raise ValueError(f"{size} values is too many")
        packed = base64.b64decode(doc["b64"], validate=True)
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, size + 1)
        if len(raw) != size or inflate.unconsumed_tail or not inflate.eof:
            raise ValueError("the data do not match the declared shape")
        arr = np.frombuffer(raw, np.uint8).reshape(shape)
    except (KeyError, TypeError, ValueError, zlib.error) as exc:
        raise NNMarkError(f"{what} are corrupted ({exc})") from None
    return torch.from_numpy(arr.astype(np.float32) / 255.0)


def quantized(x: torch.Tensor) -> torch.Tensor:
    """What the key file will hold for `x` (encode_images then decode_images)."""
    return (x.clamp(0, 1) * 255).round() / 255


def source_images(
    data: DataBundle, n: int, gen: torch.Generator, *, split: str = "train"
) -> tuple[torch.Tensor, torch.Tensor]:
    """n key-chosen images of `split` and their labels: the same images as indexing
    `data.tensors(split)`, without first copying the whole split (the 45,000 Fashion-MNIST
    training items, for every unrelated key bound)."""
    idx = data.indices(split)
    pick = idx[torch.randperm(len(idx), generator=gen)[:n]]
    return data.x[pick], data.y[pick]


def check_finite_scores(scores: torch.Tensor, label: str, count: int) -> None:
    """NaN or infinite scores are not answers (argmax would read them as class 0)."""
    bad = int((~torch.isfinite(scores.reshape(len(scores), -1))).any(1).sum())
    if bad:
        raise NNMarkError(
            f"{label}: the suspect answered NaN or infinite scores for {bad} of {count} queries"
        )


class TriggerScheme(Scheme):
    """Subclasses write `inputs` (the trigger inputs and their groups); labels, mixing and the
    exact test are shared."""

    kind = "blackbox"
    task = "classification"
    needs_data = True
    takes_bits = False

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        super().__init__(mark, data)
        self._triggers: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # ---- the key's fields ------------------------------------------------------------------
    @classmethod
    def data_fields(cls) -> set[str]:
        return (
            {"dataset", "classes", "input_shape"}
            if cls.needs_data
            else {
                "classes",
                "input_shape",
            }
        )

    @classmethod
    def check_key(cls, mark: Mark) -> None:
        check_fields(mark, cls.data_fields())
        if mark.bits:
            raise key_error(mark, "bits", "must be empty: a trigger set carries no payload")
        if mark.layer is not None:
            raise key_error(mark, "layer", "must be null for a trigger set")
        check_int(mark, "data.classes", mark.data["classes"], 2, 100_000)
        shape = check_shape(mark, "data.input_shape", mark.data["input_shape"], dims=(1, 3))
        n = config_count(mark, "n", getattr(cls.Config, "n", 0))
        if n is not None:
            check_derived(mark, "config.n", cls.trigger_values(n, shape), "trigger input")
        cls.check_stored(mark)

    @classmethod
    def trigger_values(cls, n: int, shape: list[int]) -> int:
        """How many values `n` trigger inputs of `shape` hold (what `inputs` allocates)."""
        return n * math.prod(shape)

    @classmethod
    def check_stored(cls, mark: Mark) -> None:
        if mark.stored:
            raise key_error(mark, "stored", "must be empty: the triggers are re-derived")

    @classmethod
    def key_data(cls, data: DataBundle) -> dict[str, Any]:
        """What `plan` commits: the data set's name and hash, its classes and input shape."""
        out: dict[str, Any] = {"classes": data.num_classes, "input_shape": list(data.input_shape)}
        if cls.needs_data:
            out["dataset"] = data.ref()
        return out

    @property
    def classes(self) -> int:
        return int(self.mark.data["classes"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.mark.data["input_shape"])

    def source(self) -> DataBundle:
        """The owner's data set, resolved by its content hash and checked against the key."""
        data = self.dataset()
        if data.num_classes != self.classes or data.input_shape != self.input_shape:
            raise key_error(self.mark, "data.classes", "does not match the named data set")
        return data

    # ---- derivation ------------------------------------------------------------------------
    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The n trigger inputs and each one's group (0..G-1), re-derived from the key."""
        raise NotImplementedError

    def group_count(self, groups: torch.Tensor) -> int:
        """How many groups the key draws labels for (every group index is below it)."""
        return int(groups.max()) + 1

    def labels(self, groups: int) -> torch.Tensor:
        """Each group's key label: uniform over the C classes, a stream of its own."""
        return torch.randint(0, self.classes, (groups,), generator=self.mark.generator("labels"))

    def _derive(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._triggers is None:
            x, groups = self.inputs()
            y = self.labels(self.group_count(groups))[groups]
            self._triggers = (x.contiguous(), y, groups)
        return self._triggers

    @property
    def x(self) -> torch.Tensor:
        """The trigger inputs (re-derived on first use)."""
        return self._derive()[0]

    @property
    def y(self) -> torch.Tensor:
        """Their key labels."""
        return self._derive()[1]

    @property
    def groups(self) -> torch.Tensor:
        return self._derive()[2]

    def shard(self, rank: int, world_size: int) -> TriggerScheme:
        """A copy keeping this rank's share of the triggers (DDP), or self when the set is
        smaller than the world (every rank keeps them all rather than none)."""
        x, y, groups = self._derive()
        if world_size <= 1 or len(x) < world_size:
            return self
        out = copy.copy(self)
        out._triggers = (x[rank::world_size], y[rank::world_size], groups[rank::world_size])
        return out

    def queried(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The triggers verification (and calibration) query, with their labels."""
        return self.x, self.y

    # ---- creating and embedding -------------------------------------------------------------
    @classmethod
    def check_data(cls, data: DataBundle | None) -> DataBundle:
        if data is None:
            raise NNMarkError(f"{cls.name} draws its triggers from the training data: pass data")
        if data.task != "classification":
            raise NNMarkError(f"{cls.name} is for classification (use segtrigger for masks)")
        return data

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
        mark = key.new_mark(
            cls.name, cls.canonical_config(config), None, (), data=cls.key_data(data)
        )
        cls(mark, [data]).x  # noqa: B018  (derive now: a bad source fails before training)
        return mark

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        gen = self.mark.generator("mixing")
        x, y = self.x, self.y
        for xb, yb in batches:
            idx = torch.randint(0, len(x), (self.config.per_batch,), generator=gen)
            yield torch.cat([xb, x[idx].to(xb.device)]), torch.cat([yb, y[idx].to(yb.device)])

    # ---- verification -----------------------------------------------------------------------
    def null_sentence(self, looks: int) -> str:
        return (
            f"the key drew each trigger group's label uniformly from the {self.classes} classes, "
            "independently of the inputs, so a model that never saw the key matches them as it "
            "would random labels whatever it answers (exact conditional test over the key's "
            f"labels given the answers); Bonferroni over {looks} looks"
        )

    def ask(self, s: Suspect, xb: torch.Tensor, log: AnswerLog | None = None) -> torch.Tensor:
        """The suspect's answers (class indices) for one batch of triggers, checked (and noted
        in `log`); a model that cannot take the key's inputs (a key naming another input shape)
        is an error."""
        try:
            scores = s.predict(xb)
        except RuntimeError as exc:  # the model's own forward pass on inputs it cannot take
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise KeyInputsMismatch(
                f"{s.label}: the model cannot take the key's inputs of shape "
                f"{tuple(xb.shape[1:])} ({first})"
            ) from None
        if scores.dim() != 2 or scores.shape[0] != len(xb):
            raise KeyInputsMismatch(
                f"{s.label}: answers of shape {tuple(scores.shape)} for {len(xb)} inputs"
            )
        check_finite_scores(scores, s.label, len(xb))
        self.width = int(scores.shape[1])
        if log is not None:
            log.add(scores)
        return scores.argmax(1).cpu()

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        s = as_suspect(suspect)
        x, y, groups = self._derive()
        n = len(x)
        plan = LookPlan.make(n, self.config.group, s.max_queries)
        labels = self.labels(self.group_count(groups))
        counts = np.zeros((len(labels), self.classes), dtype=np.int64)
        q = hits = 0
        p_now = 1.0
        smallest = Smallest()  # the smallest adjusted p over the looks taken
        decision = "not_found"
        log = AnswerLog()
        while q < plan.max_queries:
            end = min(q + plan.group, plan.max_queries)
            answers = self.ask(s, x[q:end], log)
            g = groups[q:end].numpy()
            a = answers.numpy()
            inside = a < self.classes
            np.add.at(counts, (g[inside], a[inside]), 1)
            hits += int((answers == y[q:end]).sum())
            q = end
            p_now = label_randomization_pvalue(counts, hits)
            best = counts.copy()
            rest = groups[q : plan.max_queries].numpy()
            np.add.at(best, (rest, labels[rest].numpy()), 1)
            p_best = label_randomization_pvalue(best, hits + len(rest))
            smallest.see(plan.adjust(p_now), q)
            decision = plan.step(p_now, p_best, q, alpha)
            if decision != "continue":
                break
        reason = undecided(decision, plan.max_queries, n)
        if decision != "found":
            reason = reasons(reason, log.note(int(y.max())))
        return Verdict(
            self.name,
            "found" if decision == "found" else "not_found",
            "trigger_accuracy",
            hits / max(q, 1),
            smallest.p,
            alpha,
            q,
            self.null_sentence(plan.looks),
            queries=q,
            reason=reason,
            details={
                "matches": hits,
                "looks": plan.looks,
                "p_last_look": plan.adjust(p_now),
                "p_smallest_at": smallest.queries,
                "triggers": n,
                "groups": len(labels),
                "classes": self.classes,
            },
        )

    def best_p_value(self) -> float | None:
        """`verify`'s p-value when every trigger is answered with its key label: the exact test
        over the key's labels at the last look (one group can never go below 1 / C). None for a
        subclass with a test of its own (frontier, newlabel): this bound is the label test's."""
        if type(self).verify is not TriggerScheme.verify:
            return None
        x, y, groups = self._derive()
        counts = np.zeros((self.group_count(groups), self.classes), dtype=np.int64)
        np.add.at(counts, (groups.numpy(), y.numpy()), 1)
        plan = LookPlan.make(len(x), self.config.group, None)
        return plan.adjust(label_randomization_pvalue(counts, len(x)))

    def trigger_accuracy(self, model: nn.Module) -> float:
        """Share of the queried triggers answered with their key labels (for benchmarks and
        tests, no test statistic)."""
        x, y = self.queried()
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    def fresh_samples(
        self, data: DataBundle, n: int, seed: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """New trigger inputs made with the same key on other images (generalisation check)."""
        raise NNMarkError(f"{self.name} triggers are a fixed set: no fresh ones can be made")


@dataclass
class AnswerLog:
    """What a suspect's answers to the triggers were, beyond matching or not: a server may
    answer so that nothing can match (one class for everything, tied scores, fewer classes than
    the key's labels), and its not_found then says so instead of reading as an ordinary one
    (server review, session 38)."""

    count: int = 0
    tied: int = 0
    width: int = 0
    classes: set[int] = field(default_factory=set)

    def add(self, scores: torch.Tensor) -> None:
        top = scores.max(1, keepdim=True).values
        self.tied += int(((scores == top).sum(1) > 1).sum())
        self.count += len(scores)
        self.width = int(scores.shape[1])
        if len(self.classes) < 2:  # one class or more: all a note needs
            self.classes.update(scores.argmax(1).unique()[:2].tolist())

    def note(self, top_label: int) -> str | None:
        """Why these answers could not show a mark whose labels reach class `top_label`."""
        notes = []
        if 0 < self.width <= top_label:
            notes.append(
                f"the suspect answers {self.width} classes and the key's labels reach class "
                f"{top_label}"
            )
        if self.count > 1 and len(self.classes) == 1:
            only = min(self.classes)  # past the key's labels: a label server's "other" column
            named = f"class {only}" if only <= top_label else "a class the key's labels never name"
            notes.append(f"every one of its {self.count} answers was {named}")
        if self.tied:
            notes.append(
                f"{self.tied} of its {self.count} answers tied for the top score (each read as "
                "the first tied class)"
            )
        return "; ".join(notes) or None


def reasons(*parts: str | None) -> str | None:
    """One verdict reason of several, or None."""
    return "; ".join(p for p in parts if p) or None


def undecided(decision: str, budget: int, total: int) -> str | None:
    """The reason of a not_found that the query budget, not the evidence, decided."""
    if decision == "found" or budget >= total:
        return None
    return (
        f"undecided: {budget} queries (the budget, spent in whole groups) cannot reach a "
        f"decision (the key holds {total} triggers; a claim needs p below the search-cost "
        "bound, timestamp or not: allow more queries)"
    )


def black_box_schemes(task: str = "classification") -> list[str]:
    """The registered black-box schemes that mark models of `task` (benchmarks, tests)."""
    from nnmark.schemes import SCHEMES

    return [
        n
        for n in SCHEMES.names()
        if SCHEMES.get(n).kind == "blackbox" and SCHEMES.get(n).task == task
    ]


@dataclass(frozen=True)
class PatternConfig(TriggerConfig):
    patterns: int = 16  # key transformations, each with its own key label
    per_batch: int = 16  # images of each batch shown under a key transformation

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            1 <= self.patterns <= self.n,
            f"patterns must be in [1, n = {self.n}], got {self.patterns}",
        )


class TransformTrigger(TriggerScheme):
    """Triggers made by key transformations of ordinary images (Zhang's content and noise):
    `patterns` transformations, each with its own key label; trigger i is transformation
    i mod G of a key-chosen training image, so the first G queries cover every group. Fresh
    triggers can be made from any image with the same key (`fresh_samples`)."""

    def transforms(self) -> list[Transform]:
        """One key transformation per group."""
        raise NotImplementedError

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.source()
        images, _ = source_images(data, self.config.n, self.mark.generator("sources"))
        return self._apply(images)

    def _apply(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        transforms = self.transforms()
        groups = torch.arange(len(images)) % len(transforms)
        x = torch.stack([transforms[g](img) for img, g in zip(images, groups.tolist())])
        return x, groups

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        """Each batch gets `per_batch` of its own images under random key transformations,
        labelled with theirs: the model learns the transformations, not a fixed image set."""
        gen = self.mark.generator("mixing")
        transforms = self.transforms()
        labels = self.labels(len(transforms))
        for xb, yb in batches:
            idx = torch.randint(0, len(xb), (self.config.per_batch,), generator=gen)
            which = torch.randint(0, len(transforms), (self.config.per_batch,), generator=gen)
            marked = torch.stack(
                [transforms[g](img) for img, g in zip(xb[idx].cpu(), which.tolist())]
            )
            yield (
                torch.cat([xb, marked.to(xb.device)]),
                torch.cat([yb, labels[which].to(yb.device)]),
            )

    def fresh_samples(
        self, data: DataBundle, n: int, seed: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The key's transformations applied to n test images the owner never trained on."""
        images, _ = source_images(data, n, torch.Generator().manual_seed(seed), split="test")
        x, groups = self._apply(images)
        return x, self.labels(len(self.transforms()))[groups]
