"""Lightning: a user's tiny LightningModule trained through `Watermarked` on CPU takes, for
every scheme `supported_schemes()` claims, the very steps nnmark's own loop (nnmark.train.fit)
takes at the same recipe: the same weights, bit for bit, with the trigger sets chained, the
penalties added, tartaglione's custom step and newlabel's extra steps run under manual
optimization, and a key committed to the user's net. That is what the wrapper changes, so these
runs are short (SHORT); that each mark is found at its default recipe
(`nnmark.default_recipe`) is proved by the scheme tests (tests/schemes, and the black-box
fixtures of tests/conftest.py) through that loop, not again here (session 40: the runs here took
3 fine-tune epochs for the white-box marks, a count tuned until they passed). The rest checks
what only Lightning has: its schedulers, precision plugins and Trainer options."""

from __future__ import annotations

import copy
from types import ModuleType
from typing import NamedTuple

import pytest
import torch
from torch import nn

from nnmark import SCHEMES, OwnerKey, TrainConfig, new_model, verify
from nnmark.api import default_recipe
from nnmark.data.base import DataBundle
from nnmark.device import seeded
from nnmark.integrations.ddp import overrides
from nnmark.integrations.support import lightning_support
from nnmark.schemes.base import Scheme
from nnmark.schemes.tartaglione import Tartaglione, TartaglioneConfig
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.tasks import get_task
from nnmark.testing.tsa import seen_now
from nnmark.train import fit, make_loader
from nnmark.verdict import Verdict


def short(recipe: TrainConfig) -> TrainConfig:
    """`recipe` cut short, for a comparison of two paths through one loop (not a judgement of
    the mark): 2 epochs (the schedule's epoch step and each scheme's generators carried from one
    epoch to the next are compared too) on a quarter of the training split; no BatchNorm
    recalibration, a pass of fit's after training that a Lightning user does not have."""
    return TrainConfig(**{**vars(recipe), "epochs": 2, "fraction": 0.25, "recalibrate_bn": False})


#: Keys verified with a verified timestamp: it proves priority and waives no search cost
#: (nnmark.api.STAMP_WAIVES_NOTHING); verify needs it to judge the key before training.
STAMPED = {"frontier"}


@pytest.fixture(scope="module")
def lit() -> ModuleType:
    """The Lightning side (lightning_user.py), imported by the process that runs these tests."""
    import lightning_user

    return lightning_user


#: Trigger sets trained together, in one run: the wrapper chains every scheme's `batches` into
#: each batch (SchemeHooks), in the order nnmark.train.fit chains them for a combined scheme.
TOGETHER = ("adi", "content", "frontier", "noise", "unrelated")


#: Batches per epoch where a test counts scheduler steps (every 5 batches and per epoch): two
#: per-batch steps in each epoch; the whole split (17 of 64) only took longer.
BATCHES = 10


class Planned(NamedTuple):
    """A scheme planned on the plain model: its key (stamped where STAMPED), the TSA
    certificates that verify needs, and its verdict before any training."""

    cls: type[Scheme]
    key: OwnerKey
    certs: list[bytes]
    before: Verdict


def plan(name: str, net: nn.Module, data: DataBundle, sources, request) -> Planned:  # type: ignore[no-untyped-def]
    cls = SCHEMES.get(name)
    key = OwnerKey.new("lightning owner", nonce="1c" * 16).with_module(net)
    bits = 64 if cls.kind == "whitebox" else None
    config = cls.Config(**request.getfixturevalue("scheme_options").get(name, {}))
    key = key.with_mark(cls.plan(net, key, config, bits=bits, data=data))
    certs: list[bytes] = []
    if name in STAMPED:
        tsa = request.getfixturevalue("tsa")
        key, certs = request.getfixturevalue("stamp")(key), [tsa.ca_cert_pem]
    return Planned(
        cls, key, certs, verify(net, key, data=sources, tsa_certs=certs, suspect_seen=seen_now())
    )


def lightning_equals_fit(  # type: ignore[no-untyped-def]
    lit, start: nn.Module, data: DataBundle, planned, sources, recipe: TrainConfig
) -> nn.Module:
    """`start` trained with the planned schemes by nnmark.train.fit and, from a copy, through
    the wrapper around a user's module of the same recipe (lightning_user.LitRecipe: its loss
    the task's, its optimiser and schedule the recipe's, on the loader fit makes): asserts the
    two end with the same tensors, and returns the Lightning-trained net."""
    net = copy.deepcopy(start)
    reference = fit(
        copy.deepcopy(start), data, [p.cls(p.key.marks[0], sources) for p in planned], recipe
    )
    custom = any(overrides(p.cls, "step") for p in planned)
    loss = get_task(data.task).loss
    with seeded(recipe.seed):  # as fit: prepare (newlabel's grown head), loader and steps
        schemes = [p.cls(p.key.marks[0], sources) for p in planned]
        wrapped = lit.Watermarked(lit.LitRecipe(net, recipe, loss), schemes, target=net)
        several = wrapped.nnmark_hooks.steps_per_batch > 1  # newlabel's repeats: own steps
        assert wrapped.automatic_optimization == (not custom and not several)
        trainer = lit.fit_on(wrapped, make_loader(data, recipe), recipe.epochs)
    assert "task_loss" in trainer.callback_metrics  # the user's own logging works through it
    assert wrapped.target is net  # every hook worked on the user's own module
    got, want = net.state_dict(), reference.state_dict()
    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, different
    moved = [k for k, v in start.state_dict().items() if not torch.equal(v, got[k])]
    assert moved  # it trained
    return net


@pytest.mark.parametrize("name", sorted(set(lightning_support()) - set(TOGETHER)) + ["together"])
@pytest.mark.usefixtures("one_thread")
def test_every_supported_scheme_trains_as_nnmarks_own_loop(  # type: ignore[no-untyped-def]
    name: str, digits: DataBundle, plain_cnn, key_data, request, lit
) -> None:
    """Fine-tune-to-embed through the wrapper, the scheme's default recipe cut short: digits
    CNN (the U-Net of tests/conftest.py `seg_models` for segmentation schemes); the TOGETHER
    trigger sets in one run. No mark is there before training."""
    names = TOGETHER if name == "together" else (name,)
    if SCHEMES.get(names[0]).task == "segmentation":
        data, start = request.getfixturevalue("seg32"), request.getfixturevalue("seg_models")[0]
        sources = [data]
    else:
        data, start, sources = digits, plain_cnn, key_data
    planned = [plan(n, start, data, sources, request) for n in names]
    options = {n: o for n, o in request.getfixturevalue("scheme_options").items() if n in names}
    recipe = short(default_recipe("+".join(names), finetune=True, options=options))
    lightning_equals_fit(lit, start, data, planned, sources, recipe)
    for p in planned:
        assert not p.before.positive, p.before


@pytest.mark.parametrize(
    ("cls", "config"),
    [(Uchida, UchidaConfig()), (Tartaglione, TartaglioneConfig())],
    ids=["uchida-automatic", "tartaglione-manual"],
)
@pytest.mark.usefixtures("one_thread")
def test_a_lightning_module_trained_from_scratch_trains_as_nnmarks_own_loop(
    cls, config, digits: DataBundle, lit
) -> None:  # type: ignore[no-untyped-def]
    """Train-to-embed (a fresh net) at the default options and recipe, cut short: the same
    weights as fit's, every tensor trained (tartaglione's manual optimization too), the user's
    own logging kept, and the key's commitment to the user's net, not the LightningModule."""
    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1c" * 16).with_module(net)
    assert key.arch is not None and "conv3.weight" in key.arch["tensors"]
    key = key.with_mark(cls.plan(net, key, config, bits=64, data=digits))
    p = Planned(cls, key, [], verify(net, key))
    net = lightning_equals_fit(lit, net, digits, [p], [digits], short(TrainConfig()))
    init = new_model("cnn", digits, seed=0).state_dict()
    assert all(not torch.equal(init[k], v) for k, v in net.state_dict().items())  # all trained
    wrapped = lit.Watermarked(lit.LitClassifier(net), [cls(key.marks[0])], target=net)
    # the LightningModule holds the net under other names: not the module the key commits to
    v = verify(wrapped.inner, key)
    assert v.verdict == "not_found" and "holds tensors the model the key's" in (v.reason or "")


@pytest.mark.usefixtures("one_thread")
def test_a_several_step_scheme_steps_the_users_schedulers_as_configured(
    digits: DataBundle, lit
) -> None:  # type: ignore[no-untyped-def]
    """newlabel's repeats switch the wrapper to manual optimization, where Lightning steps no
    scheduler: the wrapper steps the user's, per batch and per epoch as configured."""
    from nnmark.schemes.newlabel import NewLabel, NewLabelConfig

    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1e" * 16)
    mark = NewLabel.plan(net, key, NewLabelConfig(), data=digits)
    wrapped = lit.Watermarked(lit.LitScheduled(net), [NewLabel(mark, [digits])], target=net)
    assert not wrapped.automatic_optimization
    trainer = lit.fit(wrapped, digits, 2, limit_train_batches=BATCHES)
    per_epoch = trainer.num_training_batches // 5
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(1e-3 * 0.5 ** (2 * per_epoch) * 0.1**2, rel=1e-9)
    # a plateau scheduler on the metric it monitors (which Lightning drops under manual
    # optimization): stepped once per epoch, not called without it
    wrapped = lit.Watermarked(lit.LitPlateau(net), [NewLabel(mark, [digits])], target=net)
    trainer = lit.fit(wrapped, digits, 2, limit_train_batches=BATCHES)
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 2
    # a scheduler of the user's own, configured "reduce_on_plateau": given the metric too
    user = lit.LitWatcher(net)
    wrapped = lit.Watermarked(user, [NewLabel(mark, [digits])], target=net)
    lit.fit(wrapped, digits, 2, limit_train_batches=BATCHES)
    assert len(user.watcher.seen) == 2 and all(m is not None for m in user.watcher.seen)


@pytest.mark.parametrize("scheme", ["uchida", "newlabel"])
@pytest.mark.usefixtures("one_thread")
def test_the_users_lr_scheduler_step_runs_in_either_mode(
    scheme: str, digits: DataBundle, lit
) -> None:  # type: ignore[no-untyped-def]
    """The wrapper passes `lr_scheduler_step` through: Lightning calls it under automatic
    optimization (uchida), the wrapper under manual (newlabel's steps); it was never called
    under automatic optimization before (review, session 30)."""
    from nnmark.schemes.newlabel import NewLabel, NewLabelConfig

    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1f" * 16)
    cls, config = (Uchida, UchidaConfig()) if scheme == "uchida" else (NewLabel, NewLabelConfig())
    mark = cls.plan(net, key, config, bits=64 if scheme == "uchida" else None, data=digits)
    user = lit.LitOwnStep(net)
    wrapped = lit.Watermarked(user, [cls(mark, [digits])], target=net)
    trainer = lit.fit(wrapped, digits, 1, limit_train_batches=BATCHES)
    assert wrapped.automatic_optimization == (scheme == "uchida")
    # per batch every 5 batches, and once at the epoch's end
    assert user.calls == trainer.num_training_batches // 5 + 1


@pytest.mark.parametrize(
    "options",
    [
        {"gradient_clip_val": 1.0},
        {"accumulate_grad_batches": 2},
        {"max_steps": 9},
        "accumulation scheduler",
    ],
    ids=["clipping", "accumulation", "max_steps", "accumulation-scheduler"],
)
@pytest.mark.usefixtures("one_thread")
def test_a_trainer_that_manual_optimization_cannot_serve_takes_one_step_per_batch(
    options, digits: DataBundle, lit
) -> None:  # type: ignore[no-untyped-def]
    """Gradient clipping or accumulation (which Lightning's manual optimization refuses) and
    max_steps (which would count newlabel's extra steps, not batches): the wrapper stays in
    automatic optimization, one step on the concatenated batches, and Lightning steps the
    schedulers itself."""
    from lightning.pytorch.callbacks import GradientAccumulationScheduler

    from nnmark.schemes.newlabel import NewLabel, NewLabelConfig

    if options == "accumulation scheduler":
        options = {"callbacks": [GradientAccumulationScheduler({0: 2})]}
    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1e" * 16)
    mark = NewLabel.plan(net, key, NewLabelConfig(), data=digits)
    wrapped = lit.Watermarked(lit.LitScheduled(net), [NewLabel(mark, [digits])], target=net)
    trainer = lit.fit(wrapped, digits, 1, **options)
    assert wrapped.automatic_optimization
    if "max_steps" in options:
        assert trainer.global_step == 9


@pytest.mark.usefixtures("one_thread")
def test_several_steps_go_through_the_precision_plugin(digits: DataBundle, lit) -> None:  # type: ignore[no-untyped-def]
    """Each of newlabel's steps is backpropagated with manual_backward, so a mixed-precision
    plugin with a gradient scaler scales and unscales it (loss.backward() left the scaler
    unused and Lightning's unscale failed: review, session 30)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from nnmark.schemes.newlabel import NewLabel, NewLabelConfig

    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1e" * 16)
    mark = NewLabel.plan(net, key, NewLabelConfig(), data=digits)
    wrapped = lit.Watermarked(lit.LitClassifier(net), [NewLabel(mark, [digits])], target=net)
    scaler = torch.amp.GradScaler("cpu")
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    lit.fit(wrapped, digits, 1, plugins=[plugin], limit_train_batches=2)  # float16 on CPU: slow
    assert not wrapped.automatic_optimization and scaler.get_scale() > 0


def test_supported_schemes_follow_the_registry() -> None:
    from nnmark.integrations import lightning

    assert lightning.supported_schemes is lightning_support
    table = lightning_support()
    assert set(table) == set(SCHEMES.names())
    assert table["uchida"] == "automatic optimization"
    assert table["tartaglione"] == "manual optimization, prepared before configure_optimizers"
    assert table["content"].startswith("automatic") and "trigger" in table["content"]
    assert table["newlabel"].startswith("manual") and "several optimiser steps" in table["newlabel"]


def test_a_target_the_trainer_does_not_train_is_refused(digits: DataBundle, lit) -> None:  # type: ignore[no-untyped-def]
    """A copy of the net as `target` trained the net unmarked with no error (red team, session
    26: BER 0.44 after 8 epochs); the target must be a submodule of the module trained."""
    from nnmark.errors import NNMarkError

    net = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("lightning owner", nonce="1d" * 16)
    mark = Uchida.plan(net, key, UchidaConfig(), bits=64, data=digits)
    with pytest.raises(NNMarkError, match="target is not a submodule"):
        lit.Watermarked(lit.LitClassifier(net), [Uchida(mark)], target=copy.deepcopy(net))
    assert lit.Watermarked(lit.LitClassifier(net), [Uchida(mark)], target=net).target is net
    # a key committed to the LightningModule's tensors ("net.conv3.weight") would never be read
    # from the net it marks: refused before training, not after
    key = OwnerKey.new("lightning owner", nonce="1d" * 16).with_module(lit.LitClassifier(net))
    mark = Uchida.plan(net, key, UchidaConfig(), bits=64, data=digits)
    with pytest.raises(NNMarkError, match="commits to another model than the one it marks"):
        lit.Watermarked(lit.LitClassifier(net), [Uchida(mark)], target=net)
    key = OwnerKey.new("lightning owner", nonce="1d" * 16).with_module(net)
    mark = Uchida.plan(net, key, UchidaConfig(), bits=64, data=digits)
    assert lit.Watermarked(lit.LitClassifier(net), [Uchida(mark)], target=net).target is net
