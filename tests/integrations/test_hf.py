"""Hugging Face: a tiny randomly initialised ViT (8x8 digits, no hub download) trained with
`WatermarkTrainer` carries an Uchida mark in the MLP's output projection with BER 0
(train-to-embed), and every scheme `supported_schemes()` claims is found when fine-tuned into a
plainly trained ViT (newlabel trains, and its key samples are learnt, but it is not reliably
claimed on this ViT: NOT_CLAIMED); the schemes it refuses are refused with a clear message."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest
import torch

from nnmark import SCHEMES, OwnerKey, TrainConfig, verify
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.integrations.ddp import overrides
from nnmark.integrations.support import hf_support
from nnmark.schemes.base import Scheme
from nnmark.schemes.tartaglione import Tartaglione, TartaglioneConfig
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.testing.tsa import seen_now
from nnmark.verdict import Verdict

LAYER = "vit.layers.0.attention.q_proj"  # the query projection (transformers 5 names)
#: Uchida's host: the MLP's output projection, whose 64 filter-averaged values hold 48 bits
#: (the query projection's 32 reach p 2^-32 = 2.3e-10 at best, short of the search-cost bound,
#: about 1.6e-12, which a timestamp no longer waives).
UCHIDA_LAYER = "vit.layers.0.mlp.fc2"
#: Options on the ViT: stdm's bits go in the query projection, uchida's in UCHIDA_LAYER (the
#: default host, the widest convolution, is the patch embedding: 16 values), at its default
#: lam. Uchida's lam 0.5 (session 28, for 3 epochs) is gone: at the default lam and 20 epochs
#: the mark was found with BER 0 on 20 of 20 keys, fine-tuned or from scratch. HF's init std
#: (0.02) does not make this host small: its filter mean's std is 0.0039 (the digits cnn's
#: host, 0.0030), and the default penalty's gradient there is 1.05x the task's at init, 1.8x
#: after 5 plain epochs (the cnn's 8.5x, the mlp's 0.89x, resnet20's 0.29x): `python
#: benchmarks/uchida_vit.py`, benchmarks/results/uchida_vit.md. Frontier runs at its default
#: recipe: its FGSM step adapts to the model it marks (the ladder of nnmark.schemes.frontier;
#: `python benchmarks/frontier_eps.py` counts its adversaries here).
VIT_OPTIONS = {
    "uchida": {"layer": UCHIDA_LAYER},
    "stdm": {"layer": LAYER},
}
BITS = {"uchida": 48}
#: Fine-tune-to-embed epochs: the library's default training length (TrainConfig().epochs, 20)
#: for every scheme, at the Trainer's default schedule (linear decay from lr 1e-2: hf_user.args).
#: Over 5 keys every mark but newlabel was found, the bit marks at BER 0
#: (`python benchmarks/hf_keys.py`). At a constant lr 1e-2 (the schedule here until session
#: 37) a loss spike in the last epoch of one key's run left one of deepsigns' 64 bits wrong
#: (found, p 3.5e-18) on an AMD EPYC, where an Intel Xeon's run had none, and actsign's units
#: could end a step across zero (1 wrong bit of 64 at 8 % of epoch ends, 8 keys).
DEFAULT_EPOCHS = TrainConfig().epochs
#: Keys verified with a verified timestamp: it proves priority and waives no search cost
#: (nnmark.api.STAMP_WAIVES_NOTHING; frontier: 90 queries, p 2.2e-18).
STAMPED = {"frontier"}
#: Supported by the Trainer, not reliably claimed on the tiny ViT: it answers the key samples with
#: the new label (0.91 to 1.0) but the decoys too (0.16 to 0.31 over 5 keys), so the exact test
#: against the decoys (nnmark.schemes.newlabel) claims 1 of 5 keys (p 7.1e-13) and leaves the
#: others at p 6.1e-11 to 2.2e-3, this test's key (nonce 4f) at 2.1e-9: `python
#: benchmarks/hf_keys.py`, benchmarks/results/hf_keys.md (Intel Xeon). nnmark.train.fit on the
#: same ViT did alike (decoys 0.28 to 0.44, before session 42). Before session 42 the Trainer
#: took newlabel's repeats as one step and grew the head unseeded: none of 5 claimed. More
#: training on the key (`--set newlabel.repeats=4`, `negatives=64`, both) claimed 2, 2 and 1 of
#: 5, the key samples' hinge off (`margin_weight=0`) none (decoys 0.03 to 0.25 in each):
#: benchmarks/results/hf_keys_newlabel_exp_*.md. The ViT (one layer of width 32, 9,674
#: weights) tells the key's 32 perturbations from fresh ones only in part; one perturbation
#: shared by the key samples would be learned more easily, but key samples that move together
#: are not exchangeable with the decoys one by one, and the exact test's null would not hold.
#: test_newlabel_head_grows_and_learns_the_key_samples checks what the trainer does for it.
NOT_CLAIMED = {
    "newlabel": "the tiny ViT answers newlabel's decoys with the new label too (0.16 to 0.31)",
}
SUPPORTED = sorted(n for n, how in hf_support().items() if how.startswith("supported"))
#: Schemes fine-tuned together, a group per run of DEFAULT_EPOCHS: the Trainer's hooks chain
#: every trigger set's `batches` into each batch and add every penalty, and each mark, under its
#: own key, is verified alone. stdm (in LAYER) trains in a run of its own;
#: so do frontier and content: grouped with adi, noise and unrelated, content was claimed on 3 of
#: 6 runs whose unrelated key differed only by its data path (a fresh clone's ../shared made one:
#: p 1.2e-13 to 9.5e-8 at 40 queries; session 28; keys commit no path since session 29), alone on 6 of 6 keys (p 5e-16 at 20). Alone, each of the grouped schemes was a run of 7 to 12 s on 2 cores
#: (`--durations`; a group, about 13 s). Grouped over 5 keys (this one and 4 more nonces,
#: `python benchmarks/hf_keys.py`): every mark found, the bit marks at BER 0, fragile intact.
GROUPS = (("adi", "noise", "unrelated"), ("actsign", "deepsigns", "fragile", "uchida"))
GROUP_OF = {name: group for group in GROUPS for name in group}
#: Every supported scheme; newlabel's case is a strict xfail (NOT_CLAIMED), judged on the run
#: test_newlabel_head_grows_and_learns_the_key_samples checks: it turns into a failure the day
#: the tiny ViT's newlabel mark is claimed, and the note above must then go.
CASES = [
    pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOT_CLAIMED[n]))
    if n in NOT_CLAIMED
    else n
    for n in SUPPORTED
]


@pytest.fixture(scope="module")
def hf() -> ModuleType:
    """The transformers side (hf_user.py), imported by the process that runs these tests."""
    import hf_user

    return hf_user


@pytest.fixture(scope="module")
def plain_vit(
    digits: DataBundle, tmp_path_factory: pytest.TempPathFactory, hf: ModuleType
) -> torch.nn.Module:
    """The tiny ViT trained without a mark, 5 epochs of the plain `transformers.Trainer`."""
    model = hf.tiny_vit()
    x, y = digits.tensors("train")
    hf.quiet()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = tmp_path_factory.mktemp("plain-vit")
            hf.transformers.Trainer(
                model=model, args=hf.args(out, 5), train_dataset=hf.Images(x, y)
            ).train()
    finally:
        torch.set_num_threads(before)
    return model.eval()


class Planned(NamedTuple):
    """A scheme planned on the plain ViT: its key (stamped where STAMPED), the TSA certificates
    that verify needs, and its verdict before any training."""

    cls: type[Scheme]
    key: OwnerKey
    certs: list[bytes]
    before: Verdict


def plan(name: str, model: torch.nn.Module, digits: DataBundle, request, hf) -> Planned:  # type: ignore[no-untyped-def]
    cls = SCHEMES.get(name)
    key = OwnerKey.new("hf owner", nonce="4f" * 16)
    options = request.getfixturevalue("scheme_options").get(name, {})
    config = cls.Config(**{**options, **VIT_OPTIONS.get(name, {})})
    bits = BITS.get(name, 64) if cls.kind == "whitebox" else None
    # black-box marks are planned on the logits (frontier runs the model) and name no layer
    planned_on = hf.Logits(model) if cls.kind == "blackbox" else model
    key = key.with_mark(cls.plan(planned_on, key, config, bits=bits, data=digits))
    certs: list[bytes] = []
    if name in STAMPED:
        tsa = request.getfixturevalue("tsa")
        key, certs = request.getfixturevalue("stamp")(key), [tsa.ca_cert_pem]
    key_data = request.getfixturevalue("key_data")
    return Planned(
        cls,
        key,
        certs,
        verify(hf.HFSuspect(model), key, data=key_data, tsa_certs=certs, suspect_seen=seen_now()),
    )


def fine_tune(model, planned, digits: DataBundle, key_data, out: Path, hf) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    """DEFAULT_EPOCHS of WatermarkTrainer with every planned scheme, on one intra-op thread:
    (the model's num_labels once the trainer was built, how many times the schemes' batch
    chain was started afresh, the optimiser steps taken)."""
    x, y = digits.tensors("train")
    hf.quiet()
    trainer = hf.WatermarkTrainer(
        model=model,
        args=hf.args(out, DEFAULT_EPOCHS),
        train_dataset=hf.Images(x, y),
        schemes=[p.cls(p.key.marks[0], key_data) for p in planned],
    )
    labels = model.config.num_labels
    starts = []
    restart = trainer.nnmark_hooks.new_epoch

    def counted() -> None:
        starts.append(1)
        restart()

    trainer.nnmark_hooks.new_epoch = counted  # type: ignore[method-assign]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
    finally:
        torch.set_num_threads(before)
    assert trainer.mark_target is model
    return labels, len(starts), trainer.state.global_step


@pytest.fixture(scope="module")
def grouped(digits: DataBundle, plain_vit, key_data, request, hf, tmp_path_factory):  # type: ignore[no-untyped-def]
    """group -> (the plain ViT fine-tuned with the group's schemes, name -> Planned), each
    group trained the first time a test asks for it."""
    done: dict[tuple[str, ...], tuple[torch.nn.Module, dict[str, Planned]]] = {}

    def get(group: tuple[str, ...]) -> tuple[torch.nn.Module, dict[str, Planned]]:
        if group not in done:
            model = copy.deepcopy(plain_vit)
            planned = {name: plan(name, model, digits, request, hf) for name in group}
            fine_tune(model, planned.values(), digits, key_data, tmp_path_factory.mktemp("hf"), hf)
            done[group] = model, planned
        return done[group]

    return get


@pytest.fixture(scope="module")
def newlabel_run(digits: DataBundle, plain_vit, key_data, request, hf, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The plain ViT fine-tuned with newlabel through WatermarkTrainer, DEFAULT_EPOCHS, once for
    both tests that judge it: (model, Planned, num_labels once the trainer was built, how many
    times the schemes' batch chain was started afresh, the optimiser steps taken)."""
    model = copy.deepcopy(plain_vit)
    p = plan("newlabel", model, digits, request, hf)
    out = tmp_path_factory.mktemp("hf-newlabel")
    labels, starts, steps = fine_tune(model, [p], digits, key_data, out, hf)
    return model.eval(), p, labels, starts, steps


@pytest.mark.parametrize("name", CASES)
def test_every_supported_scheme_is_embedded(  # type: ignore[no-untyped-def]
    name: str, digits: DataBundle, plain_vit, key_data, request, tmp_path: Path, hf: ModuleType
) -> None:
    if name in GROUP_OF:
        model, planned = request.getfixturevalue("grouped")(GROUP_OF[name])
        p = planned[name]
    elif name == "newlabel":
        model, p, _, _, _ = request.getfixturevalue("newlabel_run")
    else:
        model = copy.deepcopy(plain_vit)
        p = plan(name, model, digits, request, hf)
        fine_tune(model, [p], digits, key_data, tmp_path, hf)
    v = verify(
        hf.HFSuspect(model), p.key, data=key_data, tsa_certs=p.certs, suspect_seen=seen_now()
    )
    print(
        f"hf {name}: before {p.before.verdict}, after {v.verdict}, BER {v.ber}, "
        f"p {v.p_value:.1e}, queries {v.queries}"
    )
    assert not p.before.positive and v.positive
    if p.cls.kind == "whitebox":
        assert v.ber == 0


def test_newlabel_head_grows_and_learns_the_key_samples(  # type: ignore[no-untyped-def]
    digits: DataBundle, newlabel_run, key_data, hf: ModuleType
) -> None:
    """What WatermarkTrainer does for newlabel, claimed or not: the head and `num_labels` grow by
    one before the optimizer is built, the key samples (mixed in as 1 + repeats batches of each
    one, each an optimiser step of its own, as under fit) are answered with the new label, more
    often than the decoys, and the task is kept."""
    model, p, labels, starts, steps = newlabel_run
    # each epoch starts the key samples' chain afresh, as fit does (diff review, session 40)
    assert starts == DEFAULT_EPOCHS
    scheme = p.cls(p.key.marks[0], key_data)
    batches = -(-len(digits.tensors("train")[0]) // 32)  # hf_user.args: 32 a batch
    assert steps == DEFAULT_EPOCHS * batches * (1 + scheme.config.repeats)
    classes = digits.num_classes
    assert labels == classes + 1
    logits = hf.Logits(model)
    xt, yt = digits.tensors("test")
    with torch.no_grad():
        assert logits(xt[:1]).shape[1] == classes + 1
        keys = float((logits(scheme.x).argmax(1) == classes).float().mean())
        decoys = float((logits(scheme.decoys()).argmax(1) == classes).float().mean())
        acc = float((logits(xt).argmax(1) == yt).float().mean())
    print(f"hf newlabel: key samples {keys:.2f}, decoys {decoys:.2f}, test accuracy {acc:.3f}")
    assert keys >= 0.75 and keys > decoys and acc > 0.8


def test_newlabel_grows_the_same_head_whatever_the_process_drew_before(  # type: ignore[no-untyped-def]
    digits: DataBundle, plain_vit, key_data, request, tmp_path: Path, hf: ModuleType
) -> None:
    """The grown head's new row comes from the run's seed (TrainingArguments.seed), as fit's
    from its own: drawn from torch's global RNG before the Trainer seeds it, the same key and
    arguments gave another mark in a process that had trained something before (session 42:
    benchmarks/hf_keys.py's first key, alone and after other runs)."""
    p = plan("newlabel", copy.deepcopy(plain_vit), digits, request, hf)
    x, y = digits.tensors("train")
    rows = []
    for state in (1, 2):
        torch.manual_seed(state)  # what the process happened to draw before
        model = copy.deepcopy(plain_vit)
        hf.WatermarkTrainer(
            model=model,
            args=hf.args(tmp_path / str(state), DEFAULT_EPOCHS),
            train_dataset=hf.Images(x, y),
            schemes=[p.cls(p.key.marks[0], key_data)],
        )
        head = model.classifier
        rows.append(torch.cat([head.weight[-1], head.bias[-1:]]).detach().clone())
    assert torch.equal(rows[0], rows[1])


def test_a_stepwise_run_is_not_resumed_from_a_checkpoint(  # type: ignore[no-untyped-def]
    digits: DataBundle, plain_vit, key_data, request, tmp_path: Path, hf: ModuleType
) -> None:
    """Resumed, the Trainer skips the first steps as whole batches of a plain loader, which
    lost 8 of 12 steps of a newlabel run without a word (review, session 42): refused."""
    p = plan("newlabel", copy.deepcopy(plain_vit), digits, request, hf)
    x, y = digits.tensors("train")
    trainer = hf.WatermarkTrainer(
        model=copy.deepcopy(plain_vit),
        args=hf.args(tmp_path, DEFAULT_EPOCHS),
        train_dataset=hf.Images(x, y),
        schemes=[p.cls(p.key.marks[0], key_data)],
    )
    for how in ({"resume_from_checkpoint": True}, {"resume_from_checkpoint": str(tmp_path)}):
        with pytest.raises(NNMarkError, match="cannot resume from a checkpoint"):
            trainer.train(**how)


@pytest.mark.usefixtures("one_thread")
def test_vit_trained_with_watermark_trainer_carries_the_mark(  # type: ignore[no-untyped-def]
    digits: DataBundle, tmp_path: Path, stamp, tsa, hf: ModuleType
) -> None:
    model = hf.tiny_vit()
    key = OwnerKey.new("hf owner", nonce="4f" * 16).with_module(model)
    assert key.arch is not None and f"{UCHIDA_LAYER}.weight" in key.arch["tensors"]
    mark = Uchida.plan(model, key, UchidaConfig(layer=UCHIDA_LAYER), bits=48)
    # stamped: it proves priority; the claim rests on the search cost (48 bits: p 3.6e-15)
    key, certs = stamp(key.with_mark(mark)), [tsa.ca_cert_pem]
    assert (
        verify(model, key, tsa_certs=certs, suspect_seen=seen_now()).ber > 0.2
    )  # not there before training
    x, y = digits.tensors("train")
    hf.quiet()
    # the library's training length (TrainConfig().epochs): at 3 epochs, a count picked for
    # speed until session 42, the default lam left 2 of this key's 48 bits wrong (not found)
    # and a bit wrong on 8 of 20 keys, lam 0.5 on 1 of 20 (benchmarks/results/uchida_vit.md)
    trainer = hf.WatermarkTrainer(
        model=model,
        args=hf.args(tmp_path, DEFAULT_EPOCHS),
        train_dataset=hf.Images(x, y),
        schemes=[Uchida(mark)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    v = verify(model, key, tsa_certs=certs, suspect_seen=seen_now())
    assert v.verdict == "found" and v.ber == 0.0
    # the same weights under a wrapper's names: not the module the key commits to
    v = verify(hf.Logits(model), key, tsa_certs=certs, suspect_seen=seen_now())
    assert v.verdict == "not_found" and "holds tensors the model the key's" in (v.reason or "")
    xt, yt = digits.tensors("test")
    model.eval()
    with torch.no_grad():
        acc = float((model(pixel_values=xt).logits.argmax(1) == yt).float().mean())
    # it learns the task too. An answer independent of the image is right on each of the 359
    # test images (10 balanced classes) with probability about 0.1: above 0.2 (72 or more) with
    # probability 9.4e-9 (`scipy.stats.binom.sf(71, 359, 0.1)`).
    assert acc > 0.2, acc


def test_newlabel_repeats_are_steps_unless_accumulated_or_counted(  # type: ignore[no-untyped-def]
    digits: DataBundle, key_data, tmp_path: Path, hf: ModuleType
) -> None:
    """The Trainer's loader hands each batch over once per step newlabel makes of it (its length
    counts them, for the schedule); with gradient accumulation or max_steps, which would sum or
    count those steps, one step on their concatenation instead."""
    model = hf.tiny_vit()
    key = OwnerKey.new("o", nonce="53" * 16)
    cls = SCHEMES.get("newlabel")
    mark = cls.plan(hf.Logits(model), key, cls.Config(), data=digits)
    x, y = digits.tensors("train")
    times = 1 + cls.Config().repeats
    cases = (({}, True), ({"gradient_accumulation_steps": 2}, False), ({"max_steps": 9}, False))
    for extra, stepwise in cases:
        args = hf.args(tmp_path, 1)
        for name, value in extra.items():
            setattr(args, name, value)
        trainer = hf.WatermarkTrainer(
            model=copy.deepcopy(model),
            args=args,
            train_dataset=hf.Images(x, y),
            schemes=[cls(mark, key_data)],
        )
        loader = trainer.get_train_dataloader()
        plain = -(-len(x) // 32)
        assert len(loader) == plain * (times if stepwise else 1)
        batch = next(iter(loader))
        mixed = trainer._mix(dict(batch))["pixel_values"]
        per_step = 32 + cls.Config().per_batch + cls.Config().negatives
        assert len(mixed) == per_step * (1 if stepwise else times)


def test_custom_step_and_segmentation_schemes_are_refused_with_a_clear_message(
    tmp_path: Path, request: pytest.FixtureRequest, hf: ModuleType
) -> None:
    model = hf.tiny_vit()
    key = OwnerKey.new("o", nonce="50" * 16)
    mark = Tartaglione.plan(model, key, TartaglioneConfig(), bits=0)
    with pytest.raises(NNMarkError, match="tartaglione replaces the optimiser step"):
        hf.WatermarkTrainer(model=model, args=hf.args(tmp_path, 1), schemes=[Tartaglione(mark)])
    # a target the Trainer does not train would be marked by nothing (red team, session 26)
    uchida = Uchida(Uchida.plan(model, key, UchidaConfig(), bits=16))
    with pytest.raises(NNMarkError, match="target is not a submodule"):
        hf.WatermarkTrainer(
            model=model, args=hf.args(tmp_path, 1), schemes=[uchida], target=copy.deepcopy(model)
        )
    # a key committed to a wrapper's tensors ("model.vit...") would never be read from the
    # model it marks: refused before training
    wrapped = OwnerKey.new("o", nonce="52" * 16).with_module(hf.Logits(model))
    uchida = Uchida(Uchida.plan(model, wrapped, UchidaConfig(), bits=16))
    with pytest.raises(NNMarkError, match="commits to another model than the one it marks"):
        hf.WatermarkTrainer(model=model, args=hf.args(tmp_path, 1), schemes=[uchida])
    assert hf.supported_schemes is hf_support
    table = hf_support()
    assert set(table) == set(SCHEMES.names())
    for name, how in table.items():
        cls = SCHEMES.get(name)
        refused = cls.task == "segmentation" or overrides(cls, "step")
        assert how.startswith("unsupported") == refused, (name, how)
    assert table["uchida"] == "supported: penalty added in compute_loss"
    seg = [n for n in table if SCHEMES.get(n).task == "segmentation"]
    assert seg  # segtrigger
    for name in seg:
        cls = SCHEMES.get(name)
        key = OwnerKey.new("o", nonce="51" * 16)
        scheme = cls(cls.plan(model, key, cls.Config(), data=request.getfixturevalue("seg32")))
        with pytest.raises(NNMarkError, match="segmentation"):
            hf.WatermarkTrainer(model=model, args=hf.args(tmp_path, 1), schemes=[scheme])
