"""Adversarial frontier stitching (Le Merrer, Pérez, Trédan, Neural Computing and Applications
2019; arXiv 1711.01894, 2017): adversarial examples near the decision frontier, fine-tuned to
key labels.

Threat model: black-box. From key-chosen training images that the trained model classifies
correctly, FGSM (step `eps`, inputs in [0, 1]) makes *true adversaries* (now misclassified) and
*false adversaries* (perturbed the same way but still right); the key holds `n` of them, half of
each. They depend on the trained model, so they are stored (compressed) in the key with each
one's source label and the model's answer, and committed, not re-derived. Fine-tuning the model
on its data with the key mixed in "stitches" the frontier to the key labels.

The step adapts to the model it marks. How many images one step fools depends on the model: at
0.15, 788 of the 1,075 training images the digits CNN answers right, but 810 of the tiny ViT's
912 (tests/integrations/test_hf.py), which leaves it 102 false adversaries for the 100 needed
(`python benchmarks/frontier_eps.py`). With `eps` unset (the default), `plan` takes the first
step of a fixed ladder that leaves enough of both kinds: 0.15, then a factor 2^(1/2) a step down
to 0.0187 where 0.15 left too few false adversaries, or up to 0.3 where it left too few true
ones (EPS_DOWN, EPS_UP: at most 7 steps, each a pass over the training images and a key
derivation). The key records the step used (`eps` in its config, and in the verdict's
details), and is the key that `eps` set to that step makes on the same trained model; an `eps`
the user sets is used as given, and one that falls short is an error that says which way to
move it. Whether a step falls short depends on the model and the training images only (all of
them are tried), not on the key's secret, and the coins are drawn after the adversaries are
fixed, as below: the ladder changes nothing in the statistical argument.

The key labels, and why they are not the paper's. Le Merrer et al. stitch every true adversary
back to its source label and fix the threshold by assuming that an unmarked model lands on either
side of the frontier with probability 1/2. That is not a property of unmarked models: a true
adversary fools another model only as far as adversarial examples transfer, which depends on the
architecture (CNN-crafted adversaries: unmarked digits CNNs answered 15 to 30 % of them right,
MLPs more, resnet20s nearly all), and a model stitched with any key answers most adversaries
right. A calibrated rate covered the calibration models' architecture only (117 of 290
never-marked model-key pairs were claimed at alpha 1e-6 on other architectures, before this
change: benchmarks/results/false_claims.md). Here the key flips a fair coin per true adversary,
from a stream of the mark's secret, which binds the stored adversaries and their labels (the
coins are drawn after they are fixed: a holder who fits them to the coins, e.g. clean images any
model of the task answers right, pays a key derivation per try; with coins from a secret that
did not bind them, one key written that way was claimed on 18 of 20 never-marked digits models:
red team, session 28): heads, the adversary is stitched back
to its source label (the paper's frontier stitching); tails, it keeps the class the owner's model
gave it, and stitching holds it there. A model that never saw the key answers each true
adversary from the input alone, so it matches the key label with probability 1/2 if it answers
one of the two classes and 0 otherwise, whatever its architecture, recipe or robustness: the
binomial tail at 1/2 is exact (conservative), with no calibration. False adversaries keep their
source label and are mixed into training only (the paper's balance); only true adversaries are
queried.

When the model handed to `plan` is untrained (validation accuracy below `min_accuracy`), it has no
frontier to stitch: `plan` first trains it in place for `warmup` plain epochs (seeded by the key)
and crafts the adversaries on that; so ``nnmark train --scheme frontier`` is `warmup` plain epochs,
then the marked training. ``nnmark embed TRAINED --scheme frontier`` is the paper's setting.
Defaults (digits): fine-tuned 20 epochs with 64 key inputs per batch (with 32, 0.81 to 0.92 of
the key labels were learned, too few for one bit per query), eps 0.15 (the ladder's first
step, which the digits CNN keeps), looks at 30, 60, 90 and
100 queries. Each query carries at most one bit, and the key's holder chose the adversaries:
the secret binds them, so fitting them to the coins costs a key derivation per try, and the
claim rule prices that search, as every key search, whether or not a timestamp predates the
suspect (clean images that every model of the task answers right fit future models as well as
the suspect; nnmark.api.STAMP_WAIVES_NOTHING). A claim needs p below the search-cost bound (about 1.6e-12 at the default KDF): 57 of
the first 60 true adversaries, or 78 of 90. Over 20 keys every mark was claimed within 100
queries (none within 30, which cannot reach the bound), at 0.28 points of accuracy (median;
1.67 at worst): `python benchmarks/blackbox_keys.py --scheme frontier --keys 20`. Over 24 other keys at
the tests' recipe, all 24 were claimed, stamped or not, in 60 queries (18 keys) or 90 (6), none
within 30, at 0.28 points (median; 1.39 at worst): `python benchmarks/key_draws.py --schemes
frontier --keys 24 --orders 0 --tag frontier` (key format v3). Before the bound held for
frontier, `per_batch=128` reached alpha 1e-6 within 30 queries for 24 of 24 keys where 64 did
for 22, at more accuracy (median 0.56, worst 1.95 points; 8 of 24 keys past one point, against
3 at 64): `key_draws_frontier_per_batch_128.md`. The default stays 64.
Example: ``nnmark embed plain.safetensors --data digits --scheme frontier --epochs 20 ...``
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnmark.config import check, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey
from nnmark.schemes import register
from nnmark.schemes._trigger import (
    AnswerLog,
    TriggerConfig,
    TriggerScheme,
    decode_images,
    encode_images,
    quantized,
    reasons,
    undecided,
)
from nnmark.schemes.base import key_error
from nnmark.sequential import LookPlan, Smallest
from nnmark.stats import DEFAULT_ALPHA
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

#: The FGSM steps tried when `eps` is left to the scheme (None), in order: EPS_START, the step
#: the digits figures above were measured at, then a factor 2^(1/2) a step, down to EPS_START/8
#: (about 5 of 255 grey levels) where EPS_START fools so many of the model's images that too few
#: false adversaries are left, or up to 2 * EPS_START where it fools too few; rounded to 4
#: places, the step a key records. The first step that leaves enough of both kinds is used.
EPS_START = 0.15
EPS_DOWN = tuple(round(EPS_START * 2 ** (-k / 2), 4) for k in range(1, 7))  # 0.1061 .. 0.0187
EPS_UP = tuple(round(EPS_START * 2 ** (k / 2), 4) for k in range(1, 3))  # 0.2121, 0.3

#: Stored triggers bound into the mark's secret (nnmark.keys.AFTER_EMBEDDING): a key whose
#: coins were drawn from a secret that did not depend on them is refused.
STORED_VERSION = 2


@dataclass(frozen=True)
class FrontierConfig(TriggerConfig):
    n: int = 200  # key inputs, half true and half false adversaries
    #: FGSM step (inputs in [0, 1]). None (the default): the first step of the ladder (EPS_START,
    #: then EPS_DOWN or EPS_UP) that leaves the model enough of both kinds of adversary; a
    #: number is used as given. A key records the step it was made with.
    eps: float | None = None
    per_batch: int = 64  # stitching takes many passes over the key: a large share per batch
    #: one bit per query: 10 or 20 cannot reach alpha 1e-6; looks at 30, 60, 90 and 100 of the
    #: 100 true adversaries, and the search-cost bound (about 1.6e-12) needs 57 of 60 or 78 of 90
    group: int = 30
    warmup: int = 10  # plain epochs first when the given model is untrained
    min_accuracy: float = 0.5  # below this validation accuracy the model counts as untrained

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n >= 2, f"n must be >= 2 (true and false adversaries), got {self.n}")
        check(self.eps is None or 0 < self.eps <= 1, f"eps must be in (0, 1], got {self.eps}")
        check(self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}")


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Goodfellow et al.'s fast gradient sign step, clipped to [0, 1] and to the key's 8 bits."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    return quantized(x.detach() + eps * grad.sign())


class Shortfall(NNMarkError):
    """The model's training images gave too few true or false adversaries at one step."""

    def __init__(self, message: str, too_few_true: bool, too_few_false: bool) -> None:
        super().__init__(message)
        #: short of true adversaries (the step is too small), of false ones (too large), or both
        #: (the model answers too few training images right for n: no step helps)
        self.too_few_true = too_few_true
        self.too_few_false = too_few_false


def frontier_triggers(
    model: nn.Module, data: DataBundle, n: int, eps: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, source labels, the model's answers, is-true-adversary) of n key inputs, half
    true, in a key-chosen order. Shortfall where the training images the model answers right
    hold too few of either kind at this step (the whole set was tried: whether a step falls
    short does not depend on the order)."""
    x_all, y_all = data.tensors("train")
    order = torch.randperm(len(y_all), generator=gen)
    want = {True: n // 2, False: n - n // 2}
    got: dict[bool, list[tuple[torch.Tensor, int, int]]] = {True: [], False: []}
    for start in range(0, len(order), 256):
        idx = order[start : start + 256]
        x, y = x_all[idx], y_all[idx]
        with torch.no_grad():
            right = model(x).argmax(1) == y
        x, y = x[right], y[right]
        if len(y) == 0:
            continue
        adv = fgsm(model, x, y, eps)
        with torch.no_grad():
            answers = model(adv).argmax(1)
        fooled = answers != y
        for xi, yi, ai, fi in zip(adv, y.tolist(), answers.tolist(), fooled.tolist(), strict=True):
            if len(got[fi]) < want[fi]:
                got[fi].append((xi, yi, ai))
        if all(len(got[k]) == want[k] for k in got):
            break
    if len(got[True]) < want[True] or len(got[False]) < want[False]:
        too_few_true = len(got[True]) < want[True]
        too_few_false = len(got[False]) < want[False]
        if too_few_true and too_few_false:
            advice = "lower n (the model answers too few training images right)"
        else:
            advice = f"{'raise' if too_few_true else 'lower'} eps"
        raise Shortfall(
            f"frontier: eps={eps} gave {len(got[True])} true and {len(got[False])} false "
            f"adversaries of the {want[True]} + {want[False]} needed; {advice}",
            too_few_true,
            too_few_false,
        )
    items = [(*t, 1) for t in got[True]] + [(*t, 0) for t in got[False]]
    mixed = [items[i] for i in torch.randperm(len(items), generator=gen).tolist()]
    return (
        torch.stack([m[0] for m in mixed]),
        torch.tensor([m[1] for m in mixed]),
        torch.tensor([m[2] for m in mixed]),
        torch.tensor([m[3] for m in mixed], dtype=torch.bool),
    )


def adversaries(
    model: nn.Module,
    data: DataBundle,
    n: int,
    eps: float | None,
    draft: Callable[[float], Mark],
) -> tuple[float, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(the step used, frontier_triggers at it). A given `eps` is used as given (Shortfall if
    it falls short); None walks the ladder: EPS_START, then EPS_DOWN where it left too few
    false adversaries or EPS_UP where too few true ones, until a step leaves enough of both;
    it stops where the other kind (or both) falls short, and at the ladder's end, with the
    last step's Shortfall. `draft(step)` is the draft mark of the config at that step, whose
    secret orders the images: a key made on the ladder is the key `eps=step` makes (on the
    same trained model), and one more key derivation per step tried."""

    def at(step: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return frontier_triggers(model, data, n, step, draft(step).generator("triggers"))

    if eps is not None:
        return eps, at(eps)
    try:
        return EPS_START, at(EPS_START)
    except Shortfall as e:
        if e.too_few_true and e.too_few_false:
            raise
        short = e
    ladder = EPS_UP if short.too_few_true else EPS_DOWN
    for step in ladder:
        try:
            return step, at(step)
        except Shortfall as e:
            turned = (e.too_few_true, e.too_few_false) != (short.too_few_true, short.too_few_false)
            short = e
            if turned:
                break  # the other kind (or both) falls short here: no step leaves both
    raise Shortfall(
        f"{short} (eps unset: the steps from {EPS_START} to {step} all fell short)",
        short.too_few_true,
        short.too_few_false,
    )


@register("frontier")
class Frontier(TriggerScheme):
    Config = FrontierConfig
    config: FrontierConfig
    needs_trained = True
    situation = "finetune"
    needs_data = False
    #: The triggers depend on the trained model, so they are stored, and whoever holds the key
    #: chose them: the secret binds them, so fitting them costs a derivation per try, which
    #: the claim rule prices like every other key search (red team, session 28).
    paper = "Le Merrer et al., Adversarial frontier stitching for remote neural network watermarking, Neural Computing and Applications 2019"

    @classmethod
    def check_stored(cls, mark: Mark) -> None:
        eps = mark.config.get("eps")
        if not isinstance(eps, float | int) or isinstance(eps, bool):
            raise key_error(mark, "config.eps", "must be the FGSM step the key was made with")
        stored = mark.stored
        if set(stored) != {"triggers", "labels", "answers", "adversarial", "version"}:
            raise key_error(
                mark,
                "stored",
                "must hold triggers, labels, answers, adversarial and version (a frontier key "
                "made before key labels were drawn per adversary: embed again)",
            )
        if type(stored["version"]) is not int or stored["version"] != STORED_VERSION:
            raise key_error(
                mark,
                "stored.version",
                f"must be {STORED_VERSION}: a frontier key whose coins did not depend on its "
                "stored triggers (its holder could fit the triggers to the coins): embed again",
            )
        n = int(mark.config.get("n", 0)) if isinstance(mark.config.get("n"), int) else 0
        for name in ("labels", "answers", "adversarial"):
            values = stored[name]
            if (
                not isinstance(values, list)
                or len(values) != n
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
            ):
                raise key_error(mark, f"stored.{name}", f"must be {n} integers")
        classes = mark.data["classes"]
        for name in ("labels", "answers"):
            if any(not 0 <= v < classes for v in stored[name]):
                raise key_error(mark, f"stored.{name}", f"must be classes in [0, {classes})")
        if any(v not in (0, 1) for v in stored["adversarial"]):
            raise key_error(mark, "stored.adversarial", "must be 0 or 1")
        if not any(stored["adversarial"]):  # plan keeps half true adversaries; none is no key
            raise key_error(mark, "stored.adversarial", "must mark at least one true adversary")
        for y, a, adv in zip(stored["labels"], stored["answers"], stored["adversarial"]):
            if (y != a) != bool(adv):
                raise key_error(
                    mark,
                    "stored.answers",
                    "must differ from the label exactly for the true adversaries",
                )
        if not isinstance(stored["triggers"], dict) or stored["triggers"].get("shape") != [
            n,
            *mark.data["input_shape"],
        ]:
            raise key_error(mark, "stored.triggers", "must hold n inputs of the key's shape")
        decode_images(stored["triggers"], "key: frontier triggers")  # bounded: no zlib bomb

    def inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        x = decode_images(self.mark.stored["triggers"], "key: frontier triggers")
        return x, torch.arange(len(x))

    def labels(self, groups: int) -> torch.Tensor:
        """Key labels: a fair coin per true adversary (a stream of its own) picks its source
        label (stitched back) or the owner's model's answer (kept); false adversaries keep their
        source label."""
        source = torch.tensor(self.mark.stored["labels"], dtype=torch.long)
        answers = torch.tensor(self.mark.stored["answers"], dtype=torch.long)
        keep = torch.randint(0, 2, (len(source),), generator=self.mark.generator("coins")).bool()
        return torch.where(self.adversarial & keep, answers, source)

    @property
    def adversarial(self) -> torch.Tensor:
        return torch.tensor(self.mark.stored["adversarial"], dtype=torch.bool)

    @property
    def key_x(self) -> torch.Tensor:
        """Every key input: what embedding mixes in."""
        return self.x

    @property
    def key_y(self) -> torch.Tensor:
        return self.y

    def queried(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What verification (and calibration) queries: the true adversaries, whose key labels
        the coins drew (false adversaries carry no evidence)."""
        return self.x[self.adversarial], self.y[self.adversarial]

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
        fields = cls.key_data(data)

        @functools.cache  # one key derivation per step, the first step's shared with warmup
        def draft_at(step: float) -> Mark:
            settled = config_to_dict(replace(config, eps=step))
            return key.new_mark(cls.name, settled, None, (), data=fields)

        # the config as a key holds it, at the first step tried (a default key on the digits
        # CNN is the key it was before the ladder: EPS_START is its step)
        draft = draft_at(EPS_START if config.eps is None else config.eps)
        was_training = model.training
        model.eval()
        xv, yv = data.tensors("val")
        if _accuracy(model, xv, yv) < config.min_accuracy:
            if config.warmup == 0:
                raise NNMarkError(
                    "frontier stitches a trained model's frontier: this model is untrained "
                    "(embed into a trained model, or set warmup=EPOCHS)"
                )
            from nnmark.train import TrainConfig, fit

            seed = draft.seed("warmup") % (2**31)
            fit(model, data, (), TrainConfig(epochs=config.warmup, seed=seed))
        try:
            eps, (x, y, answers, adversarial) = adversaries(
                model, data, config.n, config.eps, draft_at
            )
        finally:
            model.train(was_training)
        config = replace(config, eps=eps)  # the key records the step it was made with
        stored = {
            "triggers": encode_images(x),
            "labels": y.tolist(),
            "answers": answers.tolist(),
            "adversarial": [int(a) for a in adversarial],
            "version": STORED_VERSION,
        }
        # the coins come from this mark's secret, which binds the stored triggers and labels:
        # drawn after they were fixed (the draft's secret, which drew the triggers, does not)
        return key.new_mark(cls.name, config_to_dict(config), None, (), data=fields, stored=stored)

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        """k of q true adversaries answered with their key labels, exact binomial tail at 1/2,
        Bonferroni over the looks."""
        s = as_suspect(suspect)
        x, y = self.queried()
        n = len(x)
        plan = LookPlan.make(n, self.config.group, s.max_queries)
        p0 = 0.5
        k = q = 0
        smallest = Smallest()  # the smallest adjusted p over the looks taken
        decision = "not_found"
        log = AnswerLog()
        while q < plan.max_queries:
            end = min(q + plan.group, plan.max_queries)
            k += int((self.ask(s, x[q:end], log) == y[q:end]).sum())
            q = end
            smallest.see(plan.adjusted(k, q, p0), q)
            decision = plan.decide(k, q, p0, alpha, n)
            if decision != "continue":
                break
        reason = undecided(decision, plan.max_queries, n)
        if decision != "found":
            reason = reasons(reason, log.note(int(y.max())))
        null = (
            "the key drew each true adversary's label by a fair coin between its source class "
            "and the class the owner's model gave it, independently of the inputs, so a model "
            "that never saw the key matches each with probability at most 1/2 whatever it "
            f"answers (any architecture); exact binomial tail, Bonferroni over {plan.looks} looks"
        )
        return Verdict(
            self.name,
            "found" if decision == "found" else "not_found",
            "trigger_accuracy",
            k / max(q, 1),
            smallest.p,
            alpha,
            q,
            null,
            queries=q,
            reason=reason,
            details={
                "matches": k,
                "p0": p0,
                "looks": plan.looks,
                "p_last_look": plan.adjusted(k, q, p0),
                "p_smallest_at": smallest.queries,
                "triggers": n,
                "eps": self.config.eps,  # the FGSM step the key's adversaries were made with
            },
        )

    def key_accuracy(self, model: nn.Module) -> dict[str, float]:
        """Share of the key answered with its key labels: all, true and false adversaries."""
        with torch.no_grad():
            right = model(self.key_x).argmax(1) == self.key_y
        return {
            "all": float(right.float().mean()),
            "true": float(right[self.adversarial].float().mean()),
            "false": float(right[~self.adversarial].float().mean()),
        }
