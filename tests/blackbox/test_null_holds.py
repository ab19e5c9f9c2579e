"""The black-box nulls hold against models built to break them (issue 13).

- Sink models: unmarked digits models trained to send out-of-distribution inputs (stamped
  patches, noisy digits, Fashion-MNIST items, abstract images) to one class s. A trigger set
  with one key class (Zhang et al.'s recipe, nnmark's before key format 2) is claimed on them
  whenever that class is s; with key-drawn labels per group the test is exact and none is.
- NaN answers are an error that says how many, not a verdict (argmax would read NaN as class 0).
- newlabel: a model with only the task's outputs cannot answer the new label; a model with a
  "reject" class that takes every perturbed input is caught by the decoys.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from nnmark import SCHEMES, OwnerKey, TrainConfig, evaluate, new_model, train, verify
from nnmark.api import bound_scheme, model_info
from nnmark.cli import app
from nnmark.config import build_config, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.io import save_model
from nnmark.schemes._trigger import TriggerScheme
from nnmark.schemes.newlabel import NewLabelConfig
from nnmark.stats import binomial_pvalue
from nnmark.testing.tsa import seen_now

#: The classes the sink models send out-of-distribution inputs to.
SINKS = (0, 3, 7)
#: Keys planned per scheme (never embedded in any model).
KEYS = 10
SCHEMES_UNDER_TEST = ("content", "noise", "unrelated", "adi")
CREATED = "2026-01-01T00:00:00+00:00"
#: The lowest scrypt cost a key may commit: these nulls do not depend on what a derivation
#: costs (the tests assert p-values, not the claim rule), and 40 sink keys at the default cost
#: spent 10 CPU-seconds in scrypt alone (session 40).
CHEAP_KDF = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}
#: The tiny recipe of the model this module trains from scratch (the reject-class model).
RECIPE = TrainConfig(epochs=12, seed=0)
#: The sink models are unmarked CNNs fine-tuned into sinks, as anyone would make one from a model
#: at hand: after 3 epochs they send 70 to 98 % of every key's triggers to s (p 5e-24 or less
#: under a one-class key; the sink test prints the shares) at 0.90 to 0.95 accuracy. Trained
#: from scratch (12 epochs on the grown data) they took 36 s of the suite, fine-tuned 5 s.
SINK_RECIPE = TrainConfig(epochs=3, seed=0)


def assert_exact_over_keys(p_by_model: dict[Any, list[float]], level: float = 0.05) -> None:
    """The share of p-values below `level` that an exact test allows, counted where the draws
    are independent: over the keys, one model at a time. Pairs of one key are not independent
    (models trained on the same data answer alike, so one key's p repeats across them), and a
    binomial bound pooled over pairs held only while the p-values were conservative (the last
    look's, before the smallest look's was reported: session 41). For each model, the keys
    below `level` are at most Binomial(keys, level): 99 % bound, Bonferroni over the models."""
    from scipy import stats

    for model, ps in p_by_model.items():
        below = sum(p < level for p in ps)
        assert below <= stats.binom.ppf(1 - 0.01 / len(p_by_model), len(ps), level), (model, ps)


def out_of_distribution(
    digits: DataBundle, fashion: DataBundle, each: int, seed: int
) -> torch.Tensor:
    """`each` inputs of four families, none made with a key: digits with random binary patches
    stamped in the corner (sides 3 to 5 pixels), digits with Gaussian noise (sigma 0.4 to 0.9),
    Fashion-MNIST training items averaged down to 8 x 8, and abstract images (random 3 x 3
    fields upsampled, with a horizontal and a vertical stroke)."""
    gen = torch.Generator().manual_seed(seed)
    x, _ = digits.tensors("train")
    size = x.shape[-1]
    pick = torch.randint(0, len(x), (2 * each,), generator=gen)
    stamped = x[pick[:each]].clone()
    for img in stamped:
        side = int(torch.randint(3, 6, (1,), generator=gen))
        img[..., -side:, -side:] = (torch.rand(side, side, generator=gen) > 0.5).float()
    sigma = 0.4 + 0.5 * torch.rand(each, 1, 1, 1, generator=gen)
    noisy = (x[pick[each:]] + sigma * torch.randn(each, *x.shape[1:], generator=gen)).clamp(0, 1)
    fx, _ = fashion.tensors("train")
    items = fx[torch.randperm(len(fx), generator=gen)[:each]].mean(1, keepdim=True)
    items = F.interpolate(items, size=(size, size), mode="area")
    coarse = torch.rand(each, 1, 3, 3, generator=gen)
    abstract = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    lines = torch.randint(0, size, (each, 2), generator=gen)
    for img, (row, col) in zip(abstract, lines.tolist(), strict=True):
        img[:, row, :] = 1.0
        img[:, :, col] = 0.0
    return torch.cat([stamped, noisy, items, abstract])


def with_extra(data: DataBundle, extra_x: torch.Tensor, label: int, classes: int) -> DataBundle:
    """`data` with `extra_x` (all labelled `label`) added to its training split."""
    n = len(data.x)
    splits = dict(data.splits)
    splits["train"] = torch.cat([data.splits["train"], torch.arange(n, n + len(extra_x))])
    return DataBundle(
        f"{data.name}+extra",
        data.task,
        torch.cat([data.x, extra_x]),
        torch.cat([data.y, torch.full((len(extra_x),), label)]),
        splits,
        classes,
    )


@pytest.fixture(scope="module")
def sink_models(
    digits: DataBundle, fashion: DataBundle, unmarked_cnns: list[nn.Module]
) -> dict[int, nn.Module]:
    """One unmarked digits CNN per sink class s (three of the ten, seeds 100 to 102), fine-tuned
    on digits with 4 x 300 out-of-distribution inputs labelled s (plain nnmark training, no
    mark)."""
    extra = out_of_distribution(digits, fashion, 300, seed=13)
    return {
        s: train(model, with_extra(digits, extra, s, 10), SINK_RECIPE)
        for s, model in zip(SINKS, unmarked_cnns[: len(SINKS)], strict=True)
    }


@pytest.fixture(scope="module")
def sink_keys(digits: DataBundle, blackbox_options, key_data) -> dict[str, list[TriggerScheme]]:  # type: ignore[no-untyped-def]
    """KEYS keys per scheme, each with one mark at the scheme's default recipe, bound once to
    the data sets its triggers are re-derived from (a binding of an unrelated key hashes
    Fashion-MNIST afresh: 0.23 s). These schemes' plan commits the config and the data's
    fields only: the first key is planned, the others' marks are that entry under each key (a
    plan of unrelated loads Fashion-MNIST from disk: 0.9 s)."""
    out: dict[str, list[TriggerScheme]] = {}
    for name in SCHEMES_UNDER_TEST:
        cls = SCHEMES.get(name)
        cfg: Any = build_config(cls.Config, blackbox_options.get(name, {}))
        schemes, planned = [], None
        for i in range(KEYS):
            key = OwnerKey.new(
                f"sink test {name} {i}", nonce=f"{i + 1:032x}", created=CREATED, kdf=CHEAP_KDF
            )
            if planned is None:
                planned = cls.plan(nn.Identity(), key, cfg, data=digits)
            mark = key.new_mark(name, planned.config, None, (), data=planned.data)
            assert i > 0 or mark.entry() == planned.entry()  # the plan's own entry for key 0
            scheme = bound_scheme(key.with_mark(mark), 0, key_data)
            assert isinstance(scheme, TriggerScheme)
            scheme.x  # noqa: B018  (derive once, here)
            schemes.append(scheme)
        out[name] = schemes
    return out


def test_sink_models_send_triggers_to_their_class(
    sink_models, sink_keys, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    """The sink models are what the test needs: accurate on digits, and they answer s for most
    of every key's triggers, so a one-class key of class s would be claimed (binomial at 1/C)."""
    for s, model in sink_models.items():
        accuracy = evaluate(model, digits.loader("test", 512), "classification")["accuracy"]
        rates = {}
        for name, schemes in sink_keys.items():
            shares = []
            for scheme in schemes:
                with torch.no_grad():
                    answers = model(scheme.x).argmax(1)
                k = int((answers == s).sum())
                shares.append(k / len(answers))
                # had this key's single class been s, the one-class test would claim it
                assert binomial_pvalue(k, len(answers), 0.1) < 1e-6, (s, name, k)
            rates[name] = min(shares)
        print(
            f"sink model s={s}: test accuracy {accuracy:.3f}, lowest share of triggers sent to s {rates}"
        )
        assert accuracy >= 0.85  # a digits model (the plain CNN at this recipe: about 0.94)


def test_key_drawn_labels_are_not_claimed_on_sink_models(sink_models, sink_keys) -> None:  # type: ignore[no-untyped-def]
    """Every key of every scheme on every sink model: none reaches p < 1e-6 (none found), and
    the share below 0.05 is what an exact test allows. Each key's bound scheme tests it (the
    claim rule adds nothing to a null: it only raises the bar)."""

    p_values: dict[str, list[float]] = {name: [] for name in sink_keys}
    by_model: dict[tuple[str, int], list[float]] = {}
    for name, schemes in sink_keys.items():
        for scheme in schemes:
            for s, model in sink_models.items():
                v = scheme.verify(model, alpha=1e-6)
                assert v.verdict == "not_found" and v.p_value >= 1e-6, (name, s, v)
                assert "label uniformly" in v.null
                p_values[name].append(v.p_value)
                by_model.setdefault((name, s), []).append(v.p_value)
    total = sum(len(p) for p in p_values.values())
    below = {name: sum(p < 0.05 for p in ps) for name, ps in p_values.items()}
    print(
        f"sink models: 0 of {total} key-model pairs found at alpha 1e-6; p < 0.05 in {below} "
        f"(of {KEYS * len(SINKS)} each); smallest p "
        f"{ {name: f'{min(ps):.2g}' for name, ps in p_values.items()} }"
    )
    assert_exact_over_keys(by_model)


def others(
    never_marked: dict[str, list[nn.Module]], unmarked_cnns: list[nn.Module]
) -> list[nn.Module]:
    """The session's never-marked models not among unmarked_cnns: a CNN trained with SGD and
    two MLPs (Adam, SGD); each was trained twice in this module before session 40."""
    cnns = [m for m in never_marked["cnn"] if all(m is not u for u in unmarked_cnns)]
    return [*cnns, *never_marked["mlp"]]


def test_frontier_keys_are_not_claimed_on_other_models_of_any_kind(  # type: ignore[no-untyped-def]
    digits: DataBundle, plain_cnn, unmarked_cnns, never_marked, sink_models, blackbox_marked
) -> None:
    """KEYS frontier keys crafted on the owner's CNN, tested on never-marked models of several
    kinds: ten CNNs of the owner's recipe, one trained with SGD, the three sink CNNs (three of
    those ten, fine-tuned into sinks), two MLPs (Adam, SGD), and a CNN stitched with
    another frontier key (robust to adversarial examples in general). Under the key coins none
    reaches p < 1e-6 and the share below 0.05 is what an exact test allows. (The calibrated null
    this replaces claimed every resnet20 and 17 of 100 MLP pairs: false_claims.md.)"""

    from nnmark.schemes.frontier import Frontier, FrontierConfig

    stitched, _ = blackbox_marked["frontier"]
    models = [*unmarked_cnns, *others(never_marked, unmarked_cnns), *sink_models.values(), stitched]
    cheap = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}  # the null does not depend on it
    p_values = []
    by_model: dict[int, list[float]] = {}
    for i in range(KEYS):
        key = OwnerKey.new(f"frontier null {i}", nonce=f"{i + 0x70:032x}", kdf=cheap)
        scheme = Frontier(
            Frontier.plan(copy.deepcopy(plain_cnn), key, FrontierConfig(), data=digits)
        )
        for j, m in enumerate(models):
            v = scheme.verify(m.eval(), alpha=1e-6)
            assert v.verdict == "not_found" and v.p_value >= 1e-6, (i, v)
            p_values.append(v.p_value)
            by_model.setdefault(j, []).append(v.p_value)
    below = sum(p < 0.05 for p in p_values)
    print(
        f"frontier: {len(p_values)} key-model pairs, p < 0.05 in {below}, min {min(p_values):.2g}"
    )
    assert_exact_over_keys(by_model)


def test_frontier_triggers_fitted_to_the_coins_are_not_claimed(  # type: ignore[no-untyped-def]
    digits: DataBundle, unmarked_cnns, never_marked, sink_models
) -> None:
    """Red team, session 28: the coins came from a secret that did not bind the stored
    triggers, so a forger wrote clean test images with their true class on the side each coin
    picks; every trained model of the task matched (18 of 20 never-marked models claimed under
    a timestamp, for one derivation). The secret now binds the stored triggers: the coins are
    drawn anew and the same keys match at chance, on CNNs and MLPs."""
    from scipy import stats

    from nnmark.forge import coin_fitted_frontier
    from nnmark.schemes.frontier import EPS_START, Frontier, FrontierConfig

    config = config_to_dict(FrontierConfig(eps=EPS_START))  # a key records its FGSM step
    n, classes = FrontierConfig().n, 10
    x, t = digits.tensors("test")
    x, t = x[:n], t[:n]
    cheap = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}
    models = [*unmarked_cnns, *others(never_marked, unmarked_cnns), *sink_models.values()]
    p_values = []
    by_model: dict[int, list[float]] = {}
    matched, asked = [0] * len(models), [0] * len(models)
    for i in range(KEYS):
        key = OwnerKey.new(f"frontier forger {i}", nonce=f"{i + 0x90:032x}", kdf=cheap)
        fields = Frontier.key_data(digits)
        # the forger's coins: the mark's secret as it stands before the stored triggers
        draft = key.new_mark("frontier", config, None, (), data=fields)
        keep = torch.randint(0, 2, (n,), generator=draft.generator("coins")).bool()
        stored = coin_fitted_frontier(x, t, keep, classes)
        scheme = Frontier(key.new_mark("frontier", config, None, (), data=fields, stored=stored))
        for j, m in enumerate(models):
            v = scheme.verify(m.eval(), alpha=1e-6)
            assert v.verdict == "not_found" and v.p_value >= 1e-6, (i, v)
            p_values.append(v.p_value)
            by_model.setdefault(j, []).append(v.p_value)
            matched[j] += v.details["matches"]
            asked[j] += v.queries
    below = sum(p < 0.05 for p in p_values)
    print(
        f"fitted frontier keys: matched {list(zip(matched, asked, strict=True))} per model; "
        f"p < 0.05 in {below} of {len(p_values)} pairs"
    )
    # The models answer these images right, so coins fitted to them matched nearly every answer.
    # Under fresh coins each answer matches with probability at most 1/2 whatever the model
    # says, independently over the keys' coins: a model's matches over its queries of the KEYS
    # keys are at most Binomial(asked, 1/2) (stopping early, for futility, only on few
    # matches), so each stays below the 1 - 1e-4 / len(models) quantile (family-wise 1e-4).
    for k, q in zip(matched, asked, strict=True):
        assert k <= stats.binom.ppf(1 - 1e-4 / len(models), q, 0.5), (k, q)
    assert_exact_over_keys(by_model)


class Unanswerable(nn.Module):
    """A suspect that answers NaN (or infinity) for every `every`-th input of a batch."""

    def __init__(self, inner: nn.Module, every: int = 2, value: float = float("nan")) -> None:
        super().__init__()
        self.inner, self.every, self.value = inner, every, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x).clone()
        out[:: self.every] = self.value
        return out


def test_nan_answers_are_an_error_naming_the_count(
    blackbox_marked, digits: DataBundle, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    model, key = blackbox_marked["content"]
    with pytest.raises(NNMarkError, match="NaN or infinite scores for 5 of 10 queries"):
        verify(Unanswerable(model), key)
    with pytest.raises(NNMarkError, match="NaN or infinite scores for 4 of 10 queries"):
        verify(Unanswerable(model, every=3, value=float("inf")), key)
    _, newlabel_key = blackbox_marked["newlabel"]
    newlabel_model, _ = blackbox_marked["newlabel"]
    looked = NewLabelConfig().group  # its first look
    with pytest.raises(NNMarkError, match=f"NaN or infinite scores for {looked} of {looked} "):
        verify(Unanswerable(newlabel_model, every=1), newlabel_key)
    # through the CLI: a model file whose head has a NaN bias answers NaN for every input
    poisoned = copy.deepcopy(model)
    with torch.no_grad():
        poisoned.fc2.bias[3] = float("nan")
    model_path, key_path = tmp_path / "nan.safetensors", tmp_path / "content.nnkey"
    save_model(poisoned, model_info(poisoned, digits), model_path)
    key.save(key_path)
    r = CliRunner().invoke(app, ["verify", str(model_path), "--key", str(key_path)])
    assert r.exit_code == 2, r.stdout
    assert "NaN or infinite scores for 10 of 10 queries" in r.stderr


def test_newlabel_needs_the_new_output(blackbox_marked, plain_cnn, stamp, tsa) -> None:  # type: ignore[no-untyped-def]
    """A 10-class model has no output for the new label: not_found after one look, saying so,
    even with a timestamp."""
    _, key = blackbox_marked["newlabel"]
    v = verify(plain_cnn, stamp(key), tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    assert v.verdict == "not_found" and v.queries == NewLabelConfig().group  # one look
    assert "no output for the new label" in (v.reason or "")


@pytest.fixture(scope="module")
def reject_model(digits: DataBundle) -> nn.Module:
    """An 11-output digits CNN never marked with a newlabel key: class 10 is a "reject" class
    it learned for perturbed inputs of any kind (uniform perturbations at strengths 0.5 to 1,
    as newlabel's, with fresh patterns, and Gaussian noise)."""
    gen = torch.Generator().manual_seed(10)
    x, _ = digits.tensors("train")
    beta = 0.5 + 0.5 * torch.rand(len(x), 1, 1, 1, generator=gen)
    uniform = x + beta * (torch.rand(x.shape, generator=gen) * 2 - 1)
    gauss = x + 0.5 * torch.randn(x.shape, generator=gen)
    half = torch.arange(len(x)) % 2 == 0  # each training image once, under one of the two
    perturbed = torch.where(half[:, None, None, None], uniform, gauss).clamp(0, 1)
    eleven = with_extra(digits, perturbed, 10, 11)
    return train(new_model("cnn", eleven, seed=10), eleven, RECIPE)


def test_newlabel_decoys_catch_a_reject_class(blackbox_marked, reject_model, stamp, tsa) -> None:  # type: ignore[no-untyped-def]
    """The reject-class model answers the key samples with the new label as the marked model
    does (a test of key samples alone would claim it), but it answers the decoys the same way:
    not found, even timestamped."""
    _, key = blackbox_marked["newlabel"]
    v = verify(reject_model, stamp(key), tsa_certs=[tsa.ca_cert_pem], suspect_seen=seen_now())
    d = v.details
    assert v.queries is not None
    real = d["key_samples_asked"]  # in a random order of the key: not half of any prefix
    print(
        f"newlabel on a reject-class model: {v.verdict} in {v.queries} queries, p "
        f"{v.p_value:.2g}; key samples answered the new label {d['matches']} of {real}, decoys "
        f"{d['decoy_new_label']} of {v.queries - real}"
    )
    assert v.verdict == "not_found" and v.p_value >= 1e-6
    assert d["matches"] >= 0.9 * real and d["decoy_new_label"] >= 0.9 * (v.queries - real)
    assert binomial_pvalue(d["matches"], real, 1 / 11) < 1e-6  # what the decoys guard against


class ByPosition(nn.Module):
    """An 11-output model that never saw a newlabel key and answers by a row's place in its
    batch: the new label (class 10) on every even row, the plain model's class elsewhere."""

    def __init__(self, plain: nn.Module) -> None:
        super().__init__()
        self.plain = plain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = F.pad(self.plain(x), (0, 1), value=-1e4)
        logits[::2, 10] = 1e4
        return logits


def test_newlabel_position_tells_a_server_nothing(plain_cnn, digits: DataBundle) -> None:  # type: ignore[no-untyped-def]
    """Review (session 34): key samples were always the even rows of each batch, so a served
    model answering the new label by position was found at p 2.5e-17 without the key. The
    queries are now in a random order of the key: over 12 keys, such a model is found by none,
    and its new-label answers fall on key samples about half the time."""
    import numpy as np
    from scipy import stats

    scheme = SCHEMES.get("newlabel")
    model, hits, total = ByPosition(plain_cnn).eval(), 0, 0
    pmf = np.ones(1)  # the distribution of `hits` under uniformly random places, key by key
    for i in range(12):
        key = OwnerKey.new(f"position {i}", nonce=f"{0x40 + i:02x}" * 16, kdf=CHEAP_KDF)
        key = key.with_mark(scheme.plan(plain_cnn, key, scheme.Config(), data=digits))
        v = verify(model, key, data=digits)
        assert v.verdict == "not_found" and v.p_value > 1e-4, (i, v.p_value, v.details)
        d = v.details
        hits, total = hits + d["matches"], total + d["new_label_answers"]
        # the key samples' places are a uniformly random subset of the queries: of the
        # new-label answers, how many fall on key samples is hypergeometric
        draws = stats.hypergeom(v.queries, d["key_samples_asked"], d["new_label_answers"])
        pmf = np.convolve(pmf, draws.pmf(np.arange(d["new_label_answers"] + 1)))
    # the central 99.9 % of the sum over the 12 keys (about half of the answers: 0.35 to 0.65
    # before session 40, a bound without a derivation)
    cdf = np.cumsum(pmf)
    low, high = int(np.searchsorted(cdf, 5e-4)), int(np.searchsorted(cdf, 1 - 5e-4))
    print(f"position: {hits} of {total} new-label answers on key samples, 99.9 % [{low}, {high}]")
    assert low <= hits <= high, (hits, total, low, high)


def test_newlabel_key_samples_sit_in_a_uniformly_random_subset_of_places(
    plain_cnn, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    """Review (session 34): the test is hypergeometric, so the key samples' places must be a
    uniformly random subset of the queries. A coin per (key sample, decoy) pair was not: a
    server answering by position (every even row) then hit all n key samples with probability
    2^-n, reported as 1 / C(2n, n). Over 1,000 keys (a cheap KDF: only the order is looked
    at) of 4 key samples among 8 queries, all or none on the even rows happens 2 / C(8, 4) of
    the time (about 29 keys; with pairs 1 / 8: 125)."""
    from nnmark.schemes.newlabel import NewLabel

    cheap = {"name": "scrypt", "n": 1024, "r": 1, "p": 1}
    config = build_config(NewLabelConfig, {"n": 4, "group": 8})
    first = OwnerKey.new("order", nonce="00" * 16, kdf=cheap)
    planned = NewLabel.plan(plain_cnn, first, config, data=digits)
    extremes = 0
    for i in range(1000):
        key = OwnerKey.new("order", nonce=f"{i:032x}", kdf=cheap)
        mark = key.new_mark("newlabel", planned.config, None, (), data=planned.data)
        _, real = NewLabel(key.with_mark(mark).marks[0], [digits]).queries()
        extremes += int(real[::2].sum()) in (0, 4)  # key samples on the even rows
    assert 10 <= extremes <= 50, extremes
