"""The loss-landscape marks (every PositionScheme: tartaglione, watermas): truly frozen key
values, a step that follows the stated objective exactly, replicas that leave BatchNorm
statistics alone; ST-DM's capacity limit; bad options exit 2 with one line."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from scheme_recipes import POSITION_SCHEMES, embed_recipe, owner_key, start
from torch import nn
from torch.func import functional_call
from typer.testing import CliRunner

from nnmark import TrainConfig, embed, new_model, verify
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.schemes import SCHEMES, scheme_for
from nnmark.schemes._positions import POSITION_NULL, replica_step
from nnmark.schemes.tartaglione import PAPER_OBJECTIVE, Tartaglione, TartaglioneConfig


@pytest.mark.parametrize("decay", [False, True])
@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_key_values_frozen_bit_identical(name: str, decay: bool, marked, base_cnn, digits) -> None:  # type: ignore[no-untyped-def]
    """At the default recipe, and under SGD momentum with strong weight decay (one short epoch:
    the optimiser, not the length, is what could move a frozen value)."""
    if decay:
        config = TrainConfig(
            epochs=1, seed=3, fraction=0.25, optimizer="sgd", momentum=0.9, weight_decay=1e-2
        )
        model, key = embed_recipe(name, base_cnn, digits, key=owner_key(name, "d8"), config=config)
    else:
        model, key = marked(name)
    scheme = scheme_for(key.marks[0])
    scheme.prepare(start(name, base_cnn, digits))  # the key values, as set when it was embedded
    params = dict(model.named_parameters())
    for tensor, idx in scheme.index.items():
        # the values written at prepare, bit for bit after training, with the signs of payload
        # XOR mask
        values = params[tensor].detach().view(-1)[idx]
        assert torch.equal(values, scheme.positions.values[tensor].to(values.dtype))
        assert torch.equal(values > 0, scheme.positions.signs[tensor] > 0)
        if scheme.draws_magnitudes:
            continue  # tartaglione: below
        # watermas: +-2 std of the tensor, one magnitude per tensor
        assert torch.equal(values.abs(), values.abs()[0].expand_as(values))
    v = verify(model, key)
    assert v.ber == 0.0 and v.null == POSITION_NULL
    # every layer carries marked entries, the output layer included (Tartaglione et al.)
    assert len(scheme.index) == 5 and "fc2.weight" in scheme.index


def test_tartaglione_values_are_drawn_from_the_layers_own_magnitudes(
    base_cnn: nn.Module, digits: DataBundle
) -> None:
    """Issue 16: not one magnitude per layer (+-2 std, easy to spot) but magnitudes of the
    trained layer itself, between its 98th and 99.9th percentiles (the seed's "no outliers";
    none near zero, where a fine-tune flips signs); the same key gives the same values."""
    key = owner_key("tartaglione")
    config = TartaglioneConfig()
    mark = Tartaglione.plan(base_cnn, key, config, data=digits)
    scheme, again = Tartaglione(mark), Tartaglione(mark)
    model = scheme.prepare(copy.deepcopy(base_cnn))
    again.prepare(copy.deepcopy(base_cnn))
    trained = dict(base_cnn.named_parameters())
    for tensor, values in scheme.positions.values.items():
        assert torch.equal(values, again.positions.values[tensor])
        mags = trained[tensor].detach().abs().flatten()
        # the band starts at the sorted magnitude int(0.98 n): at or above quantile 0.98 - 1/n
        lo, hi = (
            mags.quantile(config.magnitude_low - 1 / len(mags)),
            mags.quantile(config.magnitude_high),
        )
        assert bool(((values.abs() >= lo - 1e-7) & (values.abs() <= hi + 1e-7)).all()), tensor
        assert len(values.abs().unique()) > len(values) // 2, tensor  # not one magnitude
        assert torch.equal(
            dict(model.named_parameters())[tensor].detach().flatten()[scheme.index[tensor]], values
        )


def _batch(digits: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits.tensors("train")
    return x[:64], y[:64]


def _task_loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(m(b[0]), b[1])


Params = dict[str, torch.Tensor]


def _explicit_loss(
    model: nn.Module, params: Params, batch: tuple[torch.Tensor, torch.Tensor]
) -> Callable[..., torch.Tensor]:
    """The loss at `params` + `delta` placed at the entries `at` of each tensor, on an explicit
    functional copy (the reference construction: nothing moved in place)."""

    def loss_at(delta: Params, at: Params) -> torch.Tensor:
        p = dict(params)
        for name, d in delta.items():
            flat = torch.zeros(p[name].numel()).index_add(0, at[name], d)
            p[name] = p[name] + flat.view_as(p[name])
        return F.cross_entropy(functional_call(model, p, (batch[0],)), batch[1])

    return loss_at


def _step_and_compare(
    scheme: Tartaglione,
    model: nn.Module,
    params: Params,
    batch: tuple[torch.Tensor, torch.Tensor],
    deltas: list[Params],
    lam: float,
    cap: float,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    **options: Any,
) -> None:
    """One SGD step (lr 1) of replica_step moves every unmarked entry by minus the gradient
    already accumulated in `params` (the explicit objective's), and no marked one."""
    before = {n: p.detach().clone() for n, p in params.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    replica_step(
        scheme.positions,
        model,
        batch,
        _task_loss,
        optimizer,
        lambda: iter(deltas),
        lam,
        len(deltas),
        cap,
        **options,
    )
    for name, p in model.named_parameters():
        expected = before[name] - params[name].grad
        if name in scheme.index:  # frozen: the key values, not moved
            expected.view(-1)[scheme.index[name]] = scheme.values[name]
        torch.testing.assert_close(p.detach(), expected, rtol=rtol, atol=atol)


def _on_resnet20(
    digits: DataBundle, config: TartaglioneConfig
) -> tuple[Tartaglione, nn.Module, nn.Module, Any, torch.Generator, list[Params]]:
    """A marked resnet20 (BatchNorm) in train mode, an explicit copy of it, a batch and R
    replicas' perturbations (sigma 3) from a seeded generator."""
    model = new_model("resnet20", digits, seed=0)
    scheme = Tartaglione(Tartaglione.plan(model, owner_key("t"), config))
    model = scheme.prepare(model).train()
    gen = torch.Generator().manual_seed(0)
    deltas = [scheme.positions.gaussian(3.0, gen) for _ in range(config.R)]
    return scheme, model, copy.deepcopy(model), _batch(digits), gen, deltas


@pytest.mark.parametrize("anchor", [0.0, 20.0])
@pytest.mark.parametrize("capped", [False, True])  # every replica counted; some over the cap
def test_replica_step_follows_the_stated_objective(
    capped: bool, anchor: float, digits: DataBundle
) -> None:
    """One SGD step (lr 1) of replica_step moves the unmarked entries by exactly the gradient of
    (1 + lam) L(w) - (lam / R) sum_r min(L(w + d_r), L(w) + cap)
    + anchor * mean_i relu(dL/dv_i sign(v_i)), computed here on explicit perturbed copies of
    the weights (the reference construction), and the marked ones not at all. The landscape
    effect itself is measured in benchmarks/seed003_tartaglione.py."""
    lam, count = 0.5, 3
    model = new_model("cnn", digits, seed=0)
    scheme = Tartaglione(Tartaglione.plan(model, owner_key("t"), TartaglioneConfig(R=count)))
    model = scheme.prepare(model)
    batch = _batch(digits)
    gen = torch.Generator().manual_seed(0)
    deltas = [scheme.positions.gaussian(3.0, gen) for _ in range(count)]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    loss_at = _explicit_loss(model, params, batch)
    base = loss_at({}, {})
    replicas = [loss_at(d, scheme.index) for d in deltas]
    rise = sorted(float(r.detach() - base.detach()) for r in replicas)
    cap = (rise[0] + rise[-1]) / 2 if capped else 5.0
    total, counted = (1 + lam) * base, 0
    for replica in replicas:
        if float(replica.detach()) < float(base.detach()) + cap:
            total, counted = total - lam / count * replica, counted + 1
    assert 0 < counted < count if capped else counted == count
    if anchor:
        names = list(scheme.index)
        grads = torch.autograd.grad(base, [params[n] for n in names], create_graph=True)
        inward = torch.cat(
            [g.flatten()[scheme.index[n]] * scheme.positions.signs[n] for n, g in zip(names, grads)]
        )
        assert 0 < int((inward > 0).sum()) < len(inward)  # the hinge is active on some entries
        total = total + anchor * torch.relu(inward).mean()
    total.backward()
    _step_and_compare(scheme, model, params, batch, deltas, lam, cap, anchor=anchor)


@pytest.mark.parametrize("capped", [False, True])
def test_replica_step_with_running_norm_follows_the_stated_objective(
    capped: bool, digits: DataBundle
) -> None:
    """replica_norm="running" on a BatchNorm model: one SGD step (lr 1) moves the unmarked
    entries by the gradient of L_train(w) + lam * L_eval(w)
    - (lam / R) sum_r min(L_eval(w + d_r), L_eval(w) + cap), where L_train normalises with the
    batch's statistics (and updates the running ones, once) and every L_eval with the running
    statistics that update left: the landscape is shaped in the mode the model is verified and
    deployed in. Computed here on explicit perturbed copies of the weights."""
    lam, count = 0.5, 3
    config = TartaglioneConfig(R=count, replica_norm="running")
    scheme, model, reference, batch, gen, deltas = _on_resnet20(digits, config)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in reference.named_parameters()}
    loss_at = _explicit_loss(reference, params, batch)
    train_loss = loss_at({}, {})  # train mode: updates the reference's running statistics
    reference.eval()
    base = loss_at({}, {})
    replicas = [loss_at(d, scheme.index) for d in deltas]
    rise = sorted(float(r.detach() - base.detach()) for r in replicas)
    cap = (rise[0] + rise[-1]) / 2 if capped else 50.0
    total, counted = train_loss + lam * base, 0
    for replica in replicas:
        if float(replica.detach()) < float(base.detach()) + cap:
            total, counted = total - lam / count * replica, counted + 1
    assert 0 < counted < count if capped else counted == count
    total.backward()
    _step_and_compare(scheme, model, params, batch, deltas, lam, cap, 1e-4, 1e-5, running_norm=True)
    assert model.training  # back in train mode after the eval-mode passes
    buffers, expected_buffers = dict(model.named_buffers()), dict(reference.named_buffers())
    assert all(torch.equal(buffers[n], expected_buffers[n]) for n in expected_buffers)


@pytest.mark.parametrize("capped", [False, True])
def test_replica_step_with_contrast_follows_the_stated_objective(
    capped: bool, digits: DataBundle
) -> None:
    """contrast=true: each replica's reference is the same move made on unmarked entries, so one
    SGD step (lr 1) moves the unmarked entries by the gradient of L(w)
    + (lam / R) sum_r [L(w + u_r) - min(L(w + d_r), L(w + u_r) + cap)], computed here on
    explicit perturbed copies; u_r moves as many entries as d_r, none of them marked, by the
    same norm per tensor."""
    lam, count = 0.5, 3
    model = new_model("cnn", digits, seed=0)
    config = TartaglioneConfig(R=count, contrast=True)
    scheme = Tartaglione(Tartaglione.plan(model, owner_key("t"), config))
    model = scheme.prepare(model)
    batch = _batch(digits)
    gen = torch.Generator().manual_seed(0)
    deltas = [scheme.positions.gaussian(3.0, gen) for _ in range(count)]
    elsewhere = [scheme.positions.unmarked_like(d, gen) for d in deltas]
    for delta, (at, move) in zip(deltas, elsewhere):
        for name, idx in at.items():
            assert len(idx) == len(delta[name]) == len(idx.unique())
            assert not torch.isin(idx, scheme.index[name]).any()
            assert float(move[name].norm()) == pytest.approx(float(delta[name].norm()), rel=1e-5)
    params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
    loss_at = _explicit_loss(model, params, batch)

    total, counted = loss_at({}, {}), 0
    rises = []
    for delta, (at, move) in zip(deltas, elsewhere):
        reference, replica = loss_at(move, at), loss_at(delta, scheme.index)
        rises.append(float(replica.detach() - reference.detach()))
    cap = sorted(rises)[1] if capped else 50.0
    for delta, (at, move), rise in zip(deltas, elsewhere, rises):
        total = total + lam / count * loss_at(move, at)
        if rise < cap:
            total, counted = total - lam / count * loss_at(delta, scheme.index), counted + 1
    assert 0 < counted < count if capped else counted == count
    total.backward()
    moves = iter(elsewhere)
    _step_and_compare(
        scheme, model, params, batch, deltas, lam, cap, contrast=lambda delta: next(moves)
    )


def test_default_replica_step_follows_the_stated_objective(digits: DataBundle) -> None:
    """The default objective (contrast, replica_norm=running, lam 3) on a BatchNorm model: one
    SGD step (lr 1) moves the unmarked entries by the gradient of L_train(w)
    + (lam / R) sum_r [L_eval(w + u_r) - min(L_eval(w + d_r), L_eval(w + u_r) + cap)], where
    L_train normalises with the batch's statistics (updating the running ones, once) and every
    L_eval with the running statistics that update left; computed on explicit copies."""
    config = TartaglioneConfig(R=3)
    defaults = {k: getattr(config, k) for k in PAPER_OBJECTIVE}
    assert defaults == {"lam": 3.0, "replica_norm": "running", "contrast": True}
    assert config.anchor == 0
    lam, count = config.lam, config.R
    scheme, model, reference, batch, gen, deltas = _on_resnet20(digits, config)
    elsewhere = [scheme.positions.unmarked_like(d, gen) for d in deltas]
    params = {n: p.detach().clone().requires_grad_(True) for n, p in reference.named_parameters()}
    loss_at = _explicit_loss(reference, params, batch)
    total = loss_at({}, {})  # train mode: updates the reference's running statistics
    reference.eval()
    pairs = [
        (loss_at(move, at), loss_at(d, scheme.index)) for d, (at, move) in zip(deltas, elsewhere)
    ]
    rises = sorted(float(r.detach() - e.detach()) for e, r in pairs)
    cap, counted = (rises[0] + rises[-1]) / 2, 0
    for there, replica in pairs:
        total = total + lam / count * there
        if float(replica.detach()) < float(there.detach()) + cap:
            total, counted = total - lam / count * replica, counted + 1
    assert 0 < counted < count
    total.backward()
    moves = iter(elsewhere)
    _step_and_compare(
        scheme,
        model,
        params,
        batch,
        deltas,
        lam,
        cap,
        1e-4,
        1e-5,
        running_norm=True,
        contrast=lambda delta: next(moves),
    )
    buffers, expected_buffers = dict(model.named_buffers()), dict(reference.named_buffers())
    assert all(torch.equal(buffers[n], expected_buffers[n]) for n in expected_buffers)


FORMER = {
    "replica_norm": "batch",
    "contrast": False,
    "magnitude_low": 0.95,
    "magnitude_high": 0.995,
}


@pytest.mark.parametrize(
    "held",
    [
        {},
        {"contrast": True},
        {"replica_norm": "running"},
        {"contrast": True, "replica_norm": "running"},
        {"magnitude_low": 0.98},
        {"contrast": True, "magnitude_low": 0.98, "magnitude_high": 0.999},
    ],
)
def test_tartaglione_keys_read_an_absent_former_option_as_its_former_default(
    held: dict[str, Any], base_cnn: nn.Module
) -> None:
    """`replica_norm` and `contrast` were left out of a key while at their former defaults
    (batch, false), each could be set on its own, and the magnitude band did not exist (keys
    were embedded at 0.95 / 0.995): a key issued then lacks them, was embedded with those
    values, reads as them and stays canonical. Each option is read on its own. New keys write
    each one that differs from its former value (the defaults all do); `anchor`, still off
    by default, is left out until set."""
    key = owner_key("tartaglione")
    new = Tartaglione.plan(base_cnn, key, TartaglioneConfig())
    assert Tartaglione.former_defaults == FORMER
    assert {k: new.config[k] for k in FORMER} == {
        "replica_norm": "running",
        "contrast": True,
        "magnitude_low": 0.98,
        "magnitude_high": 0.999,
    }
    # a key as issued before: none of them, lam 1 (the seed's form), plus what it held
    old_config = {k: v for k, v in new.config.items() if k not in FORMER} | {"lam": 1.0} | held
    config = Tartaglione(dataclasses.replace(new, config=old_config)).config
    assert {k: getattr(config, k) for k in FORMER} == FORMER | held
    assert config.lam == 1.0
    paper = Tartaglione.plan(base_cnn, key, TartaglioneConfig(**PAPER_OBJECTIVE))
    assert {k: v for k, v in PAPER_OBJECTIVE.items() if k in paper.config} == {"lam": 1.0}
    assert {k: getattr(Tartaglione(paper).config, k) for k in PAPER_OBJECTIVE} == PAPER_OBJECTIVE
    assert "anchor" not in new.config
    anchored = Tartaglione.plan(base_cnn, key, TartaglioneConfig(anchor=30.0))
    assert Tartaglione(anchored).config.anchor == anchored.config["anchor"] == 30.0


@pytest.mark.parametrize("spelled", [{"contrast": False}, {"magnitude_low": 0.95}])
def test_tartaglione_refuses_a_former_value_spelled_out(
    spelled: dict[str, Any], base_cnn: nn.Module
) -> None:
    """A former value has one spelling, its absence: a key that writes it out is another key
    for the same config (every secret is derived from the key), so it is refused."""
    key = owner_key("tartaglione")
    new = Tartaglione.plan(base_cnn, key, TartaglioneConfig())
    old_config = {k: v for k, v in new.config.items() if k not in FORMER} | spelled
    with pytest.raises(NNMarkError, match="not complete and canonical"):
        Tartaglione(dataclasses.replace(new, config=old_config))


def test_tartaglione_draws_its_band_and_refuses_a_band_out_of_range(base_cnn: nn.Module) -> None:
    """The band's quantiles: new keys hold them; 0.5 <= low < high < 1 (the largest weights,
    outliers, stay out)."""
    mark = Tartaglione.plan(base_cnn, owner_key("tartaglione"), TartaglioneConfig())
    assert (mark.config["magnitude_low"], mark.config["magnitude_high"]) == (0.98, 0.999)
    for low, high in [(0.99, 0.98), (0.3, 0.9), (0.98, 1.0)]:
        with pytest.raises(ValueError, match="magnitude_low"):
            TartaglioneConfig(magnitude_low=low, magnitude_high=high)


def test_watermas_adversarial_point_is_rho_stds_down_the_gradient(digits: DataBundle) -> None:
    """Step 2 of WaterMAS: per tensor, eps = -rho * std * sqrt(k) * g_M / |g_M|."""
    model = new_model("cnn", digits, seed=0)
    cls = SCHEMES.get("watermas")
    scheme = cls(cls.plan(model, owner_key("w"), cls.Config(rho=0.7)))
    model = scheme.prepare(model)
    _task_loss(model, _batch(digits)).backward()
    grads = scheme.positions.grads(model)
    (eps,) = list(scheme._adversarial(model))
    for layer in scheme.layers:
        e, g = eps[layer["name"]], grads[layer["name"]]
        assert float(e.norm()) == pytest.approx(0.7 * layer["std"] * layer["k"] ** 0.5, rel=1e-5)
        assert float(F.cosine_similarity(e, -g, dim=0)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", POSITION_SCHEMES)
def test_replicas_leave_batchnorm_running_statistics_alone(name: str, digits: DataBundle) -> None:
    """After one step, the running statistics are those of the model's own forward pass only (as
    in the reference code, whose replicas are separate models), not also the replicas'."""
    model = new_model("resnet20", digits, seed=0)
    cls = SCHEMES.get(name)
    options = {"R": 3} if name == "tartaglione" else {}
    key = owner_key(name)
    scheme = cls(cls.plan(model, key, cls.Config(**options)))
    model = scheme.prepare(model).train()
    reference = copy.deepcopy(model)
    x, y = digits.tensors("train")
    batch = (x[:32], y[:32])
    with torch.no_grad():
        reference(batch[0])  # one train-mode forward: what the statistics should see
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: only the buffers may move
    scheme.step(model, batch, lambda m, b: F.cross_entropy(m(b[0]), b[1]), optimizer)
    buffers, expected = dict(model.named_buffers()), dict(reference.named_buffers())
    assert buffers and all(torch.equal(buffers[n], expected[n]) for n in expected)
    assert all(m.track_running_stats for m in model.modules() if hasattr(m, "track_running_stats"))


def test_stdm_capacity_error_names_the_limit(digits: DataBundle) -> None:
    with pytest.raises(NNMarkError, match="holds at most 36864 bits"):
        embed(
            new_model("cnn", digits, seed=0),
            digits,
            "stdm",
            bits=40000,
            key=owner_key("stdm", "d8"),
            config=TrainConfig(epochs=0),
        )


@pytest.mark.parametrize(
    ("scheme", "option", "text"),
    [
        ("tartaglione", "R=-1", "R must be in [0, 64]"),
        ("tartaglione", "anchor=-1", "anchor must be in [0, 10000]"),
        ("tartaglione", "replica_norm=eval", "replica_norm must be one of batch, running"),
        ("tartaglione", "contrast=maybe", "contrast must be true or false"),
        ("tartaglione", "magnitude_high=1", "need 0.5 <= magnitude_low < magnitude_high < 1"),
        ("watermas", "fraction=0.9", "fraction must be in (0, 0.5]"),
        ("stdm", "delta=0", "delta must be in [0.1, 64]"),
        ("uchida", "nope=1", "nope"),
    ],
)
def test_cli_rejects_bad_options_with_one_line(
    scheme: str, option: str, text: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    args = ["train", "--scheme", scheme, "--set", option, "--epochs", "0"]
    args += ["--out", str(tmp_path / "m.safetensors"), "--key-out", str(tmp_path / "k.nnkey")]
    r = CliRunner().invoke(app, args)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and text in lines[0], r.stderr
    assert not list(tmp_path.iterdir())
