"""Black-box (trigger-set) schemes: found / not found, fidelity, the query budget, the claim rule
(forgery cost or a verified timestamp), calibration."""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from nnmark import SCHEMES, OwnerKey, TrainConfig, attack, embed, evaluate, new_model, verify
from nnmark.api import CLAIM_CPU_YEARS, bound_scheme, claim_threshold
from nnmark.calibrate import calibrate
from nnmark.cli import app
from nnmark.config import build_config
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.schemes._trigger import black_box_schemes, source_images
from nnmark.schemes.frontier import Frontier
from nnmark.schemes.newlabel import NewLabel, perturb
from nnmark.sequential import LookPlan
from nnmark.suspect import ModuleSuspect
from nnmark.testing.tsa import seen_now

BLACKBOX = black_box_schemes("classification")
#: Queries a claim may take: 30 (the required figure), but one bit per query cannot reach the
#: search-cost bound in 30 (2^-30 > 1.6e-12), which a timestamp does not waive
#: (nnmark.api.STAMP_WAIVES_NOTHING): frontier needs 57 of 60 or 78 of 90 true adversaries,
#: newlabel (key samples and decoys) 60 queries.
MAX_QUERIES = {"frontier": 90, "newlabel": 60}
#: The accuracy a mark may cost on digits: one point, but unrelated costs 2.1 (median) to 3.6
#: points against its plain twin (98.89 %) over 20 keys: its Fashion-MNIST items, resized to
#: 8 x 8, look like digits and carry other labels (benchmarks/results/blackbox_keys_unrelated.md;
#: the scheme's docstring). This test compares with the mean of the 11 plain models (97.62 %,
#: session 39); the worst of those 20 keys (95.26 %) is 2.4 points below it, so 3.5 holds for
#: every key measured, not only for this one.
FIDELITY = {"unrelated": 0.035}


def acc(model: torch.nn.Module, data: DataBundle) -> float:
    return evaluate(model, data.loader("test", 512), data.task)["accuracy"]


def needs_trained(name: str) -> bool:
    """True for schemes made from a trained model (frontier): stored triggers."""
    return SCHEMES.get(name).needs_trained


def test_the_registry_has_the_black_box_schemes() -> None:
    assert {"content", "noise", "unrelated", "adi", "newlabel", "frontier"} <= set(BLACKBOX)
    assert SCHEMES.get("segtrigger").kind == "blackbox" and "segtrigger" not in BLACKBOX
    # a second data set is a declared need (forge, the false-claim check and bench read it)
    assert [n for n in SCHEMES.names() if SCHEMES.get(n).needs_source] == ["unrelated"]


@pytest.mark.parametrize("name", BLACKBOX)
def test_found_on_marked_and_not_on_unmarked(
    name: str,
    blackbox_marked,
    blackbox_options,
    plain_cnn,
    unmarked_cnns,
    digits: DataBundle,
    key_data,
    stamp,
    tsa,  # type: ignore[no-untyped-def]
) -> None:
    """p < 1e-6 within 30 queries on the marked model (MAX_QUERIES for one bit per query), by
    the forgery cost, which a verified timestamp does not waive; never on unmarked models, nor
    under another owner's key."""
    model, key = blackbox_marked[name]
    certs = [tsa.ca_cert_pem]
    owner = stamp(key)
    v = verify(model, owner, data=key_data, tsa_certs=certs, suspect_seen=seen_now())
    print(
        f"{name}: {v.verdict} in {v.queries} queries, p {v.p_value:.2e}, forgery cost "
        f"{v.forgery_cost:.3g} CPU-years; null: {v.null}"
    )
    assert v.verdict == "found" and v.p_value < 1e-6 and v.queries is not None
    assert v.queries <= MAX_QUERIES.get(name, 30)  # the required figure: within 30 queries
    assert v.forgery_cost is not None and v.claim_rule and v.claim_rule.startswith("claimed")
    assert v.forgery_cost >= CLAIM_CPU_YEARS and "waives no search cost" in v.claim_rule
    assert "committed no later than" in (v.priority or "")
    bare = verify(model, key, data=key_data)  # the same claim without the stamp
    assert bare.verdict == "found" and bare.p_value == v.p_value
    assert "no verified timestamp" in (bare.claim_rule or "")
    for i, other in enumerate(unmarked_cnns):
        u = verify(other, owner, data=key_data, tsa_certs=certs, suspect_seen=seen_now())
        assert u.verdict == "not_found" and u.p_value >= 1e-6, (i, u)
    p = verify(plain_cnn, owner, data=key_data, tsa_certs=certs, suspect_seen=seen_now())
    assert p.verdict == "not_found" and p.p_value >= 1e-6
    # Wrong key: the same scheme planned by another owner (another nonce -> other triggers and
    # labels), stamped like ours; frontier's is in
    # test_another_owners_frontier_key_is_not_claimed_on_a_stitched_model.
    cls = SCHEMES.get(name)
    if not needs_trained(name):
        other_key = OwnerKey.new("someone else", nonce="ee" * 16)
        cfg: Any = build_config(cls.Config, blackbox_options.get(name, {}))
        wrong = other_key.with_mark(cls.plan(copy.deepcopy(plain_cnn), other_key, cfg, data=digits))
        w = verify(
            model,
            stamp(wrong),
            data=key_data,
            tsa_certs=certs,
            suspect_seen=seen_now(),
        )
        assert w.verdict == "not_found" and w.p_value >= 1e-6, w
    # against the recipe's plain models, not the one of them the marked model shares its
    # initialisation with: over the 11 seeds they range from 96.7 to 98.9 % (plain_cnn, seed
    # 0, the best), a spread wider than the 1 point the mark may cost
    plain = statistics.mean(acc(m, digits) for m in [plain_cnn, *unmarked_cnns])
    print(f"{name}: marked accuracy {acc(model, digits):.4f}, plain {plain:.4f} (mean of 11)")
    assert acc(model, digits) >= plain - FIDELITY.get(name, 0.01)


@pytest.mark.parametrize("name", BLACKBOX)
def test_same_key_and_seed_give_bit_identical_models(  # type: ignore[no-untyped-def]
    name: str, plain_cnn, blackbox_options, digits: DataBundle
) -> None:
    """Trigger drawing, mixing into batches and (frontier) the adversarial search included: the
    same key and seed give the same key entry and the same weights, bit for bit. One short
    epoch: determinism does not depend on how long the mark trains."""
    key = OwnerKey.new(f"owner {name}", nonce="c7" * 16)  # one key: its creation time is committed
    start = plain_cnn if needs_trained(name) else new_model("cnn", digits, seed=0)
    config = TrainConfig(epochs=1, seed=3, fraction=0.25)
    options = blackbox_options.get(name)
    (a, ka), (b, kb) = (
        embed(start, digits, name, options=options, key=key, config=config) for _ in range(2)
    )
    assert ka.marks[0].entry() == kb.marks[0].entry()
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_newlabel_needs_more_than_30_queries(blackbox_marked, stamp, tsa) -> None:  # type: ignore[no-untyped-def]
    """One bit per query: 30 queries reach at best 1 / C(30, 15) x 3 looks = 2e-8, short of the
    forgery cost the claim rule asks (about 1.6e-12), so the claim takes more of the budget
    (key samples and decoys, 64 queries); a timestamp does not shorten it."""
    model, key = blackbox_marked["newlabel"]
    full = verify(model, key)
    print(
        f"newlabel without a timestamp: {full.verdict} in {full.queries} queries, "
        f"p {full.p_value:.2e}, forgery cost {full.forgery_cost:.3g} CPU-years"
    )
    assert full.verdict == "found" and full.forgery_cost is not None
    assert full.forgery_cost >= CLAIM_CPU_YEARS and full.queries is not None and full.queries > 30
    # 30 queries: even all answers right could not reach the cost, so the
    # test gives up early (futility) and says the budget is too small
    s = ModuleSuspect(model)
    s.max_queries = 30
    short = verify(s, key)
    print(f"newlabel, 30 queries, no timestamp: {short.verdict} after {short.queries} queries")
    assert short.verdict == "not_found" and short.queries is not None and short.queries <= 30
    assert "undecided" in (short.reason or "")
    s = ModuleSuspect(model)
    s.max_queries = 30
    stamped = verify(s, stamp(key), tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    assert stamped.verdict == "not_found" and stamped.queries is not None
    assert stamped.queries <= 30 and "waives no search cost" in (stamped.claim_rule or "")
    # a timestamp that is not checked (no TSA certificate given) does not count
    s = ModuleSuspect(model)
    s.max_queries = 30
    unchecked = verify(s, stamp(key))
    assert unchecked.verdict == "not_found" and "not checked" in (unchecked.priority or "")


def test_the_marks_of_one_key_share_the_query_budget(blackbox_marked, stamp, tsa) -> None:  # type: ignore[no-untyped-def]
    """A key of two trigger marks verified with --max-queries N sends at most N queries in all:
    the second mark gets what the first left, and a spent budget is "undecided" (README), never
    an error or a budget overrun."""
    model, key = blackbox_marked["content"]
    m = key.marks[0]
    second = key.new_mark(m.scheme, m.config, m.layer, m.bits, data=m.data, stored=m.stored)
    two = stamp(key.with_mark(second))
    for budget in (5, 40, 60):
        s = ModuleSuspect(model)
        s.max_queries = budget
        v = verify(s, two, tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
        used = [part.queries or 0 for part in v.parts]
        print(f"two content marks, budget {budget}: {v.verdict}, queries {used}")
        assert sum(used) == v.queries and v.queries <= budget
        assert used[1] <= budget - used[0]
        if budget == 5:  # less than one group (10): no look, undecided, not an error
            assert v.verdict == "not_found" and used == [0, 0]
            assert all("undecided" in (part.reason or "") for part in v.parts)
        else:  # the embedded mark decides within the budget; the other spends what is left
            assert v.parts[0].verdict == "found" and v.verdict == "found"


def test_frontier_coins_make_its_null_exact(
    blackbox_marked, unmarked_cnns, plain_cnn, stamp, tsa
) -> None:  # type: ignore[no-untyped-def]
    """Each true adversary's key label is a key coin between its source class and the owner's
    model's answer: about half of each, false adversaries keep their source label; the marked
    model is claimed within 90 queries with no calibration, by the search cost, which its
    timestamp does not waive either; the model it was
    stitched from, which answers every true adversary with the owner's answer, and unmarked
    models meet the labels about half the time and are not claimed."""
    model, key = blackbox_marked["frontier"]
    scheme = Frontier(key.marks[0])
    source = torch.tensor(key.marks[0].stored["labels"])
    answers = torch.tensor(key.marks[0].stored["answers"])
    adv = scheme.adversarial
    kept = int((scheme.y[adv] == answers[adv]).sum())
    assert 0.3 < kept / int(adv.sum()) < 0.7  # fair coins over 100 adversaries
    assert bool((scheme.y[adv] != answers[adv]).eq(scheme.y[adv] == source[adv]).all())
    assert bool((scheme.y[~adv] == source[~adv]).all())
    shares = scheme.key_accuracy(model)
    stamped = stamp(key)
    v = verify(model, stamped, tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    print(f"frontier key accuracy {shares}: {v.verdict}, p {v.p_value:.1e}, {v.queries} queries")
    assert v.verdict == "found" and v.queries <= 90 and v.details["p0"] == 0.5
    assert v.forgery_cost is not None and v.forgery_cost >= CLAIM_CPU_YEARS
    assert "waives no search cost" in (v.claim_rule or "")
    assert "fair coin" in v.null and "calibrat" not in v.null
    # A model that never saw the key matches a true adversary's label with probability 1/2 when
    # it answers the source class or the owner's answer (a fair key coin picked between them),
    # never otherwise: given its answers, its matches are Binomial(m, 1/2) over the m answers
    # of those two classes. Each of the 11 models stays in the central 1 - 1e-3 of that
    # (family-wise about 1 %); 0.25 to 0.75 of all 100 before session 40, not derived.
    from scipy import stats

    x, y = scheme.queried()
    rates = []
    for m in [plain_cnn, *unmarked_cnns]:
        with torch.no_grad():
            said = m(x).argmax(1)
        either = int(((said == source[adv]) | (said == answers[adv])).sum())
        k = int((said == y).sum())
        rates.append((k, either))
        assert stats.binom.ppf(5e-4, either, 0.5) <= k <= stats.binom.isf(5e-4, either, 0.5)
    print(f"frontier true adversaries: (matches, answered one of the two) per model {rates}")
    for m in [plain_cnn, *unmarked_cnns]:
        assert (
            verify(m, stamped, tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now()).verdict
            == "not_found"
        )
    # the same evidence without a timestamp: the same claim, by the search cost
    bare = verify(model, key)
    assert bare.verdict == "found" and bare.p_value == v.p_value
    assert "no verified timestamp" in (bare.claim_rule or "")
    # at 30 queries it is not: all matching gives at best 2^-30 before the looks' Bonferroni,
    # above the search-cost bound, which the timestamp does not waive
    early = ModuleSuspect(model)
    early.max_queries = 30
    short = verify(early, stamped, tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    bound = claim_threshold(1e-6, key.marks[0].derivation_seconds)
    assert short.verdict == "not_found" and bound < 2.0**-30 <= short.p_value
    assert "waives no search cost" in (short.claim_rule or "")


def test_another_owners_frontier_key_is_not_claimed_on_a_stitched_model(
    blackbox_marked, unmarked_cnns, digits: DataBundle, stamp, tsa
) -> None:  # type: ignore[no-untyped-def]
    """Stitching makes a model robust to FGSM adversaries in general, so under the paper's
    labels (every adversary stitched back) another owner's key was claimed on our stitched
    model. Under key coins it cannot be: our model's answers do not know their coins. Their key
    is timestamped, which waives nothing: the verdict rests on the null and the
    search cost."""
    from nnmark.schemes.frontier import FrontierConfig

    model, _ = blackbox_marked["frontier"]
    other_key = OwnerKey.new("someone else", nonce="ee" * 16)
    mark = Frontier.plan(copy.deepcopy(unmarked_cnns[0]), other_key, FrontierConfig(), data=digits)
    theirs = stamp(other_key.with_mark(mark))
    v = verify(model, theirs, tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    print(f"another owner's frontier key on our stitched model: {v.verdict}, p {v.p_value:.1e}")
    assert v.verdict == "not_found" and v.p_value >= 1e-6
    assert "waives no search cost" in (v.claim_rule or "")


def test_a_frontier_key_of_the_previous_format_is_refused_with_the_reason(
    blackbox_marked,
) -> None:  # type: ignore[no-untyped-def]
    """Keys made when every adversary was stitched back hold no `answers`: refused, naming it."""
    from nnmark.keys import sha256_hex

    model, key = blackbox_marked["frontier"]
    doc = key.to_json()
    del doc["committed"]["marks"][0]["stored"]["answers"]
    doc["commitment"] = sha256_hex(doc["committed"])  # as an old nnmark would have written it
    with pytest.raises(NNMarkError, match="stored.*answers.*embed again"):
        verify(model, OwnerKey.from_json(doc))


@pytest.mark.parametrize(
    "edit, field",
    [
        ({"adversarial": "none"}, "stored.adversarial must mark at least one true adversary"),
        ({"version": 2.0}, "stored.version must be 2"),
    ],
)
def test_a_frontier_key_without_evidence_or_with_its_version_respelled_is_refused(
    blackbox_marked, edit: dict[str, Any], field: str
) -> None:  # type: ignore[no-untyped-def]
    """Red team: a hand-edited key with no true adversary (answers set to the labels) passed
    the checks and crashed verification on an empty maximum; `version: 2.0` passed for 2 (a
    second spelling of a committed field). Both are refused at load, naming the field."""
    from nnmark.keys import sha256_hex

    model, key = blackbox_marked["frontier"]
    doc = key.to_json()
    stored = doc["committed"]["marks"][0]["stored"]
    if edit.get("adversarial") == "none":
        stored["answers"] = list(stored["labels"])
        stored["adversarial"] = [0] * len(stored["labels"])
    else:
        stored.update(edit)
    doc["commitment"] = sha256_hex(doc["committed"])  # the editor recomputes it
    with pytest.raises(NNMarkError, match=field):
        verify(model, OwnerKey.from_json(doc))


def test_frontier_warms_up_an_untrained_model(digits: DataBundle) -> None:
    from nnmark.schemes.frontier import FrontierConfig

    key = OwnerKey.new("o", nonce="f2" * 16)
    fresh = new_model("cnn", digits, seed=3)
    mark = Frontier.plan(fresh, key, FrontierConfig(n=20, warmup=2), data=digits)
    assert acc(fresh, digits) > 0.5 and sum(mark.stored["adversarial"]) == 10
    # the triggers are stored (they depend on the trained model) and bound by the secret
    assert len(Frontier(mark).key_x) == 20
    with pytest.raises(NNMarkError, match="untrained"):
        Frontier.plan(new_model("cnn", digits, seed=4), key, FrontierConfig(warmup=0), data=digits)


def test_newlabel_grows_the_head_generalises_and_survives_finetuning(
    blackbox_marked, digits: DataBundle, stamp, tsa
) -> None:  # type: ignore[no-untyped-def]
    model, key = blackbox_marked["newlabel"]
    assert model.fc2.out_features == 11 and model.nnmark_kwargs["num_classes"] == 11
    scheme = NewLabel(key.marks[0])
    x, y = scheme.fresh_samples(digits, 100)
    assert bool((y == 10).all())
    decoys = scheme.decoys()
    with torch.no_grad():
        fresh = (model(x).argmax(1) == 10).float().mean()
        decoy = (model(decoys).argmax(1) == 10).float().mean()
    stolen = attack(model, "finetune:epochs=5", digits)
    with torch.no_grad():
        after = (stolen(x).argmax(1) == 10).float().mean()
    v = verify(stolen, stamp(key), tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    bare = verify(stolen, key)
    print(
        f"newlabel: fresh key accuracy {fresh:.2f} (decoys answered the new label {decoy:.2f}), "
        f"after 5 epochs of fine-tuning {after:.2f}: timestamped {v.verdict} in {v.queries} "
        f"queries p {v.p_value:.1e}; without a timestamp {bare.verdict} in {bare.queries} "
        f"queries p {bare.p_value:.1e} ({bare.claim_rule})"
    )
    # Over 6 other keys at this recipe (`python tests/blackbox/spread_over_keys.py 6`, session
    # 40): fresh 1.00 for every key, decoys 0.00 to 0.16 (of 32), so 0.9 and 0.2 hold for each.
    # After 5 epochs of fine-tuning: 0.99, 0.99, 0.05, 0.40, 0.85, 1.00: `after >= 0.5` holds
    # for this key and 4 of those 6, not for every key (an open newlabel issue, not a bound).
    assert fresh >= 0.9 and after >= 0.5 and v.verdict == "found"
    assert decoy <= 0.2  # the model learned the key's perturbations, not perturbation at large
    assert bare.verdict == "found" and bare.p_value == v.p_value  # the stamp waives nothing


def test_newlabel_margin_holds_key_samples_above_the_other_classes(
    blackbox_marked, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    """The margin hinge sees only a batch's key samples, in eval mode: zero without key samples
    or once they clear the margin, a gradient otherwise; training mode and BatchNorm's running
    statistics are left as they were (a resnet here)."""
    model, key = blackbox_marked["newlabel"]
    scheme = NewLabel(key.marks[0])
    x, _ = scheme.fresh_samples(digits, 16)
    normal, labels = digits.tensors("test")
    assert float(scheme.penalty(model, (normal[:16], labels[:16])).detach()) == 0.0
    keys = (x, torch.full((16,), 10))
    with torch.no_grad():
        z = model(x)
        gap = z[:, 10] - z[:, :10].max(1).values
    for margin in (float(gap.max()) + 1, float(gap.min()) - 1):  # every key sample short / clear
        scheme.config = dataclasses.replace(scheme.config, margin=margin)
        expected = scheme.config.margin_weight * torch.relu(margin - gap).mean()
        assert float(scheme.penalty(model, keys).detach()) == pytest.approx(
            float(expected), rel=1e-5
        )
        assert (float(expected) > 0) == (margin > float(gap.max()))

    scheme = NewLabel(key.marks[0])
    net = scheme.prepare(new_model("resnet20", digits, seed=0))
    net.train()
    stats = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    loss = scheme.penalty(net, keys)
    loss.backward()
    assert float(loss.detach()) > 0 and net.training and all(m.training for m in net.modules())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in stats.items())
    assert net.conv1.weight.grad is not None and float(net.conv1.weight.grad.abs().sum()) > 0


def test_newlabel_keys_from_before_the_margin_hinge_are_accepted(blackbox_marked) -> None:  # type: ignore[no-untyped-def]
    """A key written before `margin` / `margin_weight` existed holds neither: it is accepted as
    what it was (the hinge off), while one holding only one of them is refused, and new keys
    write both (so the keys issued since keep their secrets)."""
    _, key = blackbox_marked["newlabel"]
    mark = key.marks[0]
    assert {"margin", "margin_weight"} <= set(mark.config)
    old = {k: v for k, v in mark.config.items() if k not in ("margin", "margin_weight")}
    fields = {"data": mark.data, "stored": mark.stored}
    before = key.new_mark("newlabel", old, mark.layer, mark.bits, **fields)
    assert NewLabel(before).config.margin_weight == 0.0
    half = key.new_mark("newlabel", {**old, "margin": 30.0}, mark.layer, mark.bits, **fields)
    with pytest.raises(NNMarkError, match="not complete and canonical"):
        NewLabel(half)


def test_fresh_samples_reuse_the_key_transformation(blackbox_marked, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    """Content / noise: fresh samples are the key's transformations (one per group) applied to
    test images, each with its group's key label, the same as the committed triggers of that
    group; newlabel: the key's perturbations on test images, labelled with the new class. Fixed
    sets (adi, unrelated) have none. The marked models answer fresh samples as the key says."""
    images, _ = source_images(digits, 20, torch.Generator().manual_seed(1), split="test")
    for name in ("content", "noise"):
        model, key = blackbox_marked[name]
        scheme = bound_scheme(key, 0)
        x, y = scheme.fresh_samples(digits, 20)  # type: ignore[attr-defined]
        transforms = scheme.transforms()  # type: ignore[attr-defined]
        groups = torch.arange(20) % len(transforms)
        assert x.shape[1:] == scheme.x.shape[1:] and len(transforms) == scheme.config.patterns  # type: ignore[attr-defined]
        for i, g in enumerate(groups.tolist()):
            assert torch.equal(x[i], transforms[g](images[i]))
            # the committed triggers of group g carry the same label
            assert set(scheme.y[scheme.groups == g].tolist()) == {int(y[i])}  # type: ignore[attr-defined]
        assert len(set(y.tolist())) > 1  # one label per group, not one per key
        again, same = scheme.fresh_samples(digits, 20)  # type: ignore[attr-defined]
        assert torch.equal(x, again) and torch.equal(y, same)
        x100, y100 = scheme.fresh_samples(digits, 100)  # type: ignore[attr-defined]
        with torch.no_grad():
            rate = float((model(x100).argmax(1) == y100).float().mean())
        print(f"{name}: fresh samples answered with their group labels {rate:.2f}")
        # over 6 other keys at this recipe: content 0.88 to 0.95, noise 0.89 to 0.98 of 100
        # (`python tests/blackbox/spread_over_keys.py 6`, session 40); 0.8 is below every key
        assert rate >= 0.8
    _, key = blackbox_marked["newlabel"]
    scheme = bound_scheme(key, 0)
    x, y = scheme.fresh_samples(digits, 20)  # type: ignore[attr-defined]
    patterns = scheme.patterns(scheme.config.n, "patterns")  # type: ignore[attr-defined]
    expected = perturb(images, patterns[torch.arange(20) % len(patterns)], scheme.config.beta)  # type: ignore[attr-defined]
    assert torch.equal(x, expected) and bool((y == 10).all())
    for name in ("adi", "unrelated"):
        with pytest.raises(NNMarkError, match="fixed set"):
            bound_scheme(blackbox_marked[name][1], 0).fresh_samples(digits, 5)  # type: ignore[attr-defined]


def test_query_budget_and_undecided(blackbox_marked) -> None:  # type: ignore[no-untyped-def]
    model, key = blackbox_marked["content"]
    suspect = ModuleSuspect(model)
    suspect.max_queries = 15  # spent in whole groups of 10: one look, too few to decide
    v = verify(suspect, key)
    assert v.verdict == "not_found" and v.queries == 10 and v.reason and "undecided" in v.reason
    assert "timestamp or not: allow more queries" in v.reason  # a stamp lowers no bar


def memoised_decide(p0: float, alpha: float, n: int) -> Callable[[LookPlan, int, int], str]:
    """`LookPlan.decide` at fixed p0, alpha and n, memoised: a pure function of (plan, k, q),
    so the simulations below ask it each distinct question once (a few thousand) instead of
    once per trial and budget (500,000 binomial tails: 13.9 s of the suite, session 40)."""
    return functools.cache(lambda plan, k, q: plan.decide(k, q, p0, alpha, n))


def test_sequential_test_keeps_its_false_positive_rate() -> None:
    """Unmarked answers at the null rate p0: claims at alpha = 0.05 stay at or below 0.05."""
    rng = np.random.default_rng(0)
    p0, alpha, n, trials = 0.1, 0.05, 50, 4000
    plan = LookPlan.make(n, 10, None)
    decide = memoised_decide(p0, alpha, n)
    claims = 0
    for _ in range(trials):
        hits = rng.random(n) < p0
        k = q = 0
        while q < n:
            k += int(hits[q : q + 10].sum())
            q += 10
            d = decide(plan, k, q)
            if d != "continue":
                claims += d == "found"
                break
    assert claims / trials <= alpha


def test_trying_every_budget_keeps_the_false_positive_rate() -> None:
    """The query budget is not committed, so a forger may try every one: a claim under any
    budget 1..n must stay at alpha. When the looks depended on the budget (Bonferroni over
    ceil(B / group) looks, a last look at B), each budget was a test of its own (red team:
    10 of 300 never-marked keys claimed at alpha 0.01 with the best budget). Now every budget
    makes the same looks, truncated at a group's end."""
    rng = np.random.default_rng(1)
    p0, alpha, n, group, trials = 0.5, 0.05, 50, 10, 2000
    plans = [LookPlan.make(n, group, b) for b in range(1, n + 1)]
    decide = memoised_decide(p0, alpha, n)
    assert {p.looks for p in plans} == {5}
    assert all(p.max_queries % group == 0 and p.max_queries <= b for b, p in enumerate(plans, 1))
    claims = 0
    for _ in range(trials):
        hits = rng.random(n) < p0
        found = False
        for plan in plans:
            k = q = 0
            while q < plan.max_queries and not found:
                end = min(q + group, plan.max_queries)
                k, q = k + int(hits[q:end].sum()), end
                found = decide(plan, k, q) == "found"
        claims += found
    print(f"best of {n} budgets: {claims} of {trials} unmarked claimed at alpha {alpha}")
    assert claims / trials <= alpha


def test_calibration_is_stored_and_no_verdict_uses_it(
    blackbox_marked, unmarked_cnns, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A calibration is still measured and stored beside the commitment (under its own hash);
    the exact tests ignore it (their nulls name the key's labels)."""
    model, key = blackbox_marked["noise"]
    cal = calibrate(key, unmarked_cnns)
    entry = cal.derived["calibration"]["0"]
    assert entry["models"] == 10 and len(entry["rates"]) == 10 and 0 <= entry["ucb"] <= 1
    assert entry["model_ucb"] >= max(entry["rates"])
    assert all(p >= 1e-6 for p in entry["p_values"])
    assert cal.commitment == key.commitment  # derived data: not part of the commitment
    path = tmp_path / "k.nnkey"
    cal.save(path)
    doc = json.loads(path.read_text())
    assert doc["derived"]["calibration"]["0"] == entry and len(doc["derived_hash"]) == 64
    loaded = OwnerKey.load(path)
    scheme = bound_scheme(loaded, 0)
    assert scheme.calibration == entry
    # the stored calibration is hashed: changing it breaks the key file
    doc["derived"]["calibration"]["0"]["ucb"] = 0.0
    path.write_text(json.dumps(doc))
    with pytest.raises(NNMarkError, match="does not match its hash"):
        OwnerKey.load(path)
    # noise's test is exact over the key's labels: the calibration changes nothing
    plain = verify(model, key)
    for calibrated in (
        loaded,
        loaded.with_derived(
            "calibration", {"0": {**entry, "ucb": 0.6, "model_ucb": 0.7, "models": 10}}
        ),
    ):
        v = verify(model, calibrated)
        assert (v.verdict, v.p_value, v.queries) == (plain.verdict, plain.p_value, plain.queries)
        assert "p0" not in v.details and "calibrated" not in v.null
        assert "label uniformly from the 10 classes" in v.null


def test_calibrate_cli(blackbox_marked, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`nnmark calibrate` records the rates of an adi key (stored, hashed); adi's verdict under
    the calibrated key is that of the key as issued."""
    model, key = blackbox_marked["adi"]
    path = tmp_path / "adi.nnkey"
    key.save(path)
    r = CliRunner().invoke(
        app, ["calibrate", str(path), "--data", "digits", "--models", "2", "--epochs", "1"]
    )
    assert r.exit_code == 0, r.stderr
    assert "mark 0 (adi): smallest unmarked p-value" in r.stdout
    loaded = OwnerKey.load(path)
    entry = loaded.derived["calibration"]["0"]
    assert entry["models"] == 2 and len(entry["rates"]) == 2 and len(entry["p_values"]) == 2
    assert loaded.commitment == key.commitment
    v, before = verify(model, loaded), verify(model, key)
    assert v.verdict == "found" and (v.p_value, v.queries) == (before.p_value, before.queries)
    assert "label uniformly" in v.null
    r = CliRunner().invoke(app, ["calibrate", str(path), "--models", "0"])
    assert r.exit_code == 2 and "--models must be in [1, 1000]" in r.stderr
    for epochs in ("-1", "10001"):  # a ValueError's text before; no bound above
        r = CliRunner().invoke(app, ["calibrate", str(path), "--epochs", epochs])
        assert r.exit_code == 2 and f"--epochs must be in [1, 10000], got {epochs}" in r.stderr
    other = tmp_path / "another.nnkey"  # --out over another file needs --force, as train's
    other.write_text("another key")
    r = CliRunner().invoke(app, ["calibrate", str(path), "--models", "1", "--out", str(other)])
    assert r.exit_code == 2 and "refusing to overwrite it (use --force)" in r.stderr
    assert other.read_text() == "another key"


def test_unrelated_labels_are_per_source_class_even_when_a_draw_misses_a_class(
    plain_cnn, digits: DataBundle, fashion: DataBundle, blackbox_options, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """The triggers and the training pool index one label per source class and variant (as it
    is, tones inverted: 20 groups): a trigger draw that misses some of them (the bench's key
    held 9 of the 10 classes) must not shift the labels."""
    from nnmark.schemes.unrelated import Unrelated, UnrelatedConfig

    cfg = build_config(UnrelatedConfig, {**blackbox_options["unrelated"], "n": 12})
    # the source the config names, loaded once (the fixture) rather than once per key
    assert Unrelated.config_data(cfg)[0].ref() == fashion.ref()
    monkeypatch.setattr(Unrelated, "config_data", classmethod(lambda cls, config: [fashion]))
    # Session 40: plan once, then each key's mark is plan's entry under that key, bound once
    # (every binding hashes Fashion-MNIST afresh: 0.23 s, and plan binds too); a cheap KDF, as
    # only the labels and groups are looked at.
    cheap = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}
    first = OwnerKey.new("unrelated owner", nonce=f"{0x40:02x}" * 16, kdf=cheap)
    planned = Unrelated.plan(copy.deepcopy(plain_cnn), first, cfg, data=digits)
    # the key names its source, not the folder it lay in (keys were location-dependent)
    assert planned.config["source"] == "fashion-mnist" and ":" in cfg.source
    seen_short = False
    for i in range(12):
        key = OwnerKey.new("unrelated owner", nonce=f"{i + 0x40:02x}" * 16, kdf=cheap)
        mark = key.new_mark("unrelated", planned.config, None, (), data=planned.data)
        assert i > 0 or mark.entry() == planned.entry()  # the plan's own entry for key 0
        scheme = Unrelated(mark, [digits, fashion])
        labels = scheme.labels(20)
        assert torch.equal(scheme.y, labels[scheme.groups])  # the trigger's label is its group's
        inverted = scheme.groups >= 10  # items shown with their tones inverted
        assert 0 < int(inverted.sum()) < len(inverted)
        seen_short |= len(set(scheme.groups.tolist())) < 20
        xb, yb = next(scheme.batches(iter([(digits.x[:8], digits.y[:8])])))
        assert len(xb) == 8 + cfg.per_batch and int(yb.max()) < 10
    assert seen_short  # 12 items of 20 groups: every draw misses some
    # a key made before variants (no such option) reads its items as they are: 10 groups
    legacy = dataclasses.replace(
        mark, config={k: v for k, v in mark.config.items() if k != "variants"}
    )
    old = Unrelated(legacy, [digits, fashion])
    assert old.config.variants == 1 and int(old.groups.max()) < 10
    assert old.group_count(old.groups) == 10


class _Oracle(torch.nn.Module):
    """Answers each of a scheme's triggers with its key label (the best any model can do)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.x, self.y, self.classes = x.flatten(1), y, classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        which = (x.flatten(1)[:, None] == self.x[None]).all(-1).float().argmax(1)
        return torch.nn.functional.one_hot(self.y[which], self.classes).float()


@pytest.mark.parametrize(
    "name, options",
    [
        ("content", {}),
        ("noise", {}),
        ("adi", {}),
        ("unrelated", None),
        ("content", {"patterns": 1}),
    ],
)
def test_best_p_value_is_what_a_perfect_answer_gets(  # type: ignore[no-untyped-def]
    name: str, options: dict[str, Any] | None, digits: DataBundle, fashion, blackbox_options, caplog
) -> None:
    """best_p_value is verify's p for a suspect answering every trigger with its key label; at
    the defaults it is below alpha (unrelated at most 5e-10: 10 key labels, one per Fashion-MNIST
    class, over 5 looks), with one pattern (one key label, Zhang's form) it never is, and embed
    says so before training."""
    import logging

    from nnmark.stats import DEFAULT_ALPHA

    opts = blackbox_options.get(name) if options is None else options
    key = OwnerKey.new("best p", nonce="0b" * 16, created="2026-01-01T00:00:00+00:00")
    with caplog.at_level(logging.WARNING, logger="nnmark.api"):
        _, key = embed(
            new_model("mlp", digits, seed=0), digits, name, options=opts, key=key,
            config=TrainConfig(epochs=1),
        )  # fmt: skip
    data = [digits, fashion] if SCHEMES.get(name).needs_source else [digits]
    scheme = bound_scheme(key, 0, data)
    best = scheme.best_p_value()
    oracle = _Oracle(scheme.x, scheme.y, scheme.classes)
    assert best is not None and verify(oracle, key, data=data).p_value == pytest.approx(best)
    never = "can never be claimed" in caplog.text
    assert never == (best >= DEFAULT_ALPHA) == (options == {"patterns": 1})
    if never:
        assert best == pytest.approx(5 / 10)  # 1 / C, over 50 / 10 looks


def test_best_p_value_is_none_for_a_test_of_its_own(digits: DataBundle) -> None:
    """The label test's bound is not claimed for a scheme whose verify is another test:
    frontier's, newlabel's, or a future subclass's (it would otherwise inherit a wrong bound)."""
    from nnmark.schemes import scheme_for
    from nnmark.schemes.noise import NoiseTrigger

    key = OwnerKey.new("own test", nonce="0c" * 16, created="2026-01-01T00:00:00+00:00")
    mark = NoiseTrigger.plan(
        new_model("mlp", digits, seed=0), key, NoiseTrigger.Config(), data=digits
    )
    assert scheme_for(mark, [digits]).best_p_value() is not None

    class OwnTest(NoiseTrigger):
        def verify(self, suspect, alpha=0.01):  # type: ignore[no-untyped-def]
            raise AssertionError("not called")

    assert OwnTest(mark, [digits]).best_p_value() is None
    for cls in (Frontier, NewLabel):  # decided by the class alone, before any derivation
        assert cls.__new__(cls).best_p_value() is None


class _Answers(torch.nn.Module):
    """A served model that answers nothing of a model: constant rows (`scores`), or one class."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scores", scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores.expand(len(x), -1)


@pytest.mark.parametrize("name", ["content", "frontier", "newlabel"])
def test_answers_that_carry_nothing_say_so_in_the_not_found(blackbox_marked, name: str) -> None:  # type: ignore[no-untyped-def]
    """Server review, session 38: a server answering every query alike (tied scores, one class,
    fewer classes than the key's labels) got a not_found with no reason, as an honest model's."""
    _, key = blackbox_marked[name]
    width = 11 if name == "newlabel" else 10
    tied = verify(_Answers(torch.zeros(1, width)), key)
    assert tied.verdict == "not_found" and tied.reason is not None
    assert f"every one of its {tied.queries} answers was class 0" in tied.reason
    assert f"{tied.queries} of its {tied.queries} answers tied for the top score" in tied.reason
    one = torch.zeros(1, width)
    one[0, 4] = 1.0
    v = verify(_Answers(one), key)
    assert v.verdict == "not_found" and "was class 4" in (v.reason or "")
    assert "tied" not in (v.reason or "")
    if name != "newlabel":  # its own reason: no output for the new label
        top = int(bound_scheme(key, 0).queried()[1].max())
        few = verify(_Answers(torch.tensor([[0.0, 1.0]])), key)
        assert f"answers 2 classes and the key's labels reach class {top}" in (few.reason or "")
