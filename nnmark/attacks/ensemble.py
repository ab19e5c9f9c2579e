"""Ensemble extraction (WRT; Lukas et al. 2022): surrogates on disjoint query sets, averaged.

Threat model: black-box query access and the thief's own unlabeled inputs. The query budget
(`queries` thief inputs, 0: all) is cut into `members` disjoint parts; a fresh surrogate (the
suspect's architecture, or zoo `arch`) is distilled on the suspect's soft outputs (or top-1
labels) over each part, so no surrogate has seen every query, and the returned model averages
their logits. Weight-space marks cannot survive (no weight is copied); function-space marks must
survive in every member's vote.

The result is an `Ensemble` module, registered in the model zoo as `ensemble` (kwargs `arch`,
`members` and the member's own kwargs), so `nnmark attack ensemble ... --out FILE` writes a
model file that loads like any zoo model; its tensors are named `members.<i>.<layer>`, so a
white-box verifier reading the owner's layer names finds no such tensor (nothing to read) and
each member can be checked on its own (`ensemble.members[i]`).

Trained long, as a competent thief would (issue 18): 300 epochs by default (the bench's ladder
20 / 300; no early stopping: a tenth of each member's share, some 20 images on digits, is too
few to stop on). Each member sees only its share of the queries, so the ensemble stays further
from the suspect than one student on all of them: on digits 14.3 / 6.2 / 3.6 points below a
plain cnn after 20 / 100 / 300 epochs (mean of 3 seeds; worst at 300: 5.0), where `distill`
is 1.0 below (`python benchmarks/extraction_epochs.py`).

Example: ``nnmark attack ensemble marked.safetensors --data digits --set members=3``
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import fresh_copy, predict, train_on
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.models import MAX_DEPTH, MODELS, STRUCTURAL, create_model, passes_kwargs
from nnmark.tasks import get_task


class Ensemble(nn.Module):
    """Averages the outputs (logits) of its members; any task whose outputs share one shape."""

    def __init__(self, members: Iterable[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


#: The most members an ensemble may have (a thief averaging more gains nothing measurable).
MAX_MEMBERS = 64


@MODELS.register("ensemble")
@passes_kwargs("arch")
def ensemble(arch: str = "cnn", members: int = 3, **kwargs: Any) -> nn.Module:
    """`members` zoo models `arch` built with `kwargs`, averaged (so ensembles can be saved).
    At most MAX_MEMBERS: a suspect file names its own `members`, and 200,000 of them took over
    300 s and 3 GB to build on the meta device before its size was checked (red team,
    session 27)."""
    if arch == "ensemble":
        raise ValueError("an ensemble's members cannot be ensembles")
    if type(members) is not int or not 1 <= members <= MAX_MEMBERS:
        raise ValueError(f"members must be an integer in [1, {MAX_MEMBERS}], got {members!r}")
    # the members' depth together within one model's bound: 64 mlps of depth 1,000 took 27 s
    # to count and 37 s to build (red team, session 27)
    depth = max((v for k, v in kwargs.items() if k in STRUCTURAL and type(v) is int), default=1)
    if members * depth > MAX_DEPTH:
        raise ValueError(
            f"members x depth must be at most {MAX_DEPTH}, got {members} x {depth} "
            "(an ensemble is bounded as one model of that depth)"
        )
    return Ensemble(create_model(arch, **kwargs) for _ in range(members))


@dataclass(frozen=True)
class EnsembleConfig:
    members: int = 3
    epochs: int = 300
    lr: float = 1e-3
    queries: int = 0
    labels_only: bool = False
    temperature: float = 2.0
    arch: str | None = None

    def __post_init__(self) -> None:
        check(
            1 <= self.members <= MAX_MEMBERS,
            f"members must be in [1, {MAX_MEMBERS}], got {self.members}",
        )
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.queries >= 0, f"queries must be >= 0, got {self.queries}")
        check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")


def _build(model: nn.Module, arch: str | None, members: int) -> nn.Module:
    name = arch or getattr(model, "nnmark_arch", None)
    if name is not None and name != "ensemble":
        kwargs = dict(getattr(model, "nnmark_kwargs", {}))
        return create_model("ensemble", arch=name, members=members, **kwargs)
    return Ensemble(fresh_copy(model) for _ in range(members))


@register("ensemble")
class EnsembleAttack(Attack):
    Config = EnsembleConfig
    config: EnsembleConfig
    needs_data = True
    summary = "distil surrogates on disjoint query subsets and average their logits"
    ladder = ("epochs", (20, 300))  # 300: the default

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        assert data is not None
        c = self.config
        x, _ = data.tensors("thief")
        order = torch.randperm(len(x), generator=generator)
        x = x[order[: c.queries] if c.queries else order]
        if len(x) < c.members:
            raise NNMarkError(f"ensemble: {len(x)} queries cannot feed {c.members} members")
        answers = predict(model, x)
        ens = _build(model, c.arch, c.members)
        task = get_task(data.task)
        if c.labels_only and data.task == "classification":
            targets = answers.argmax(1)
            loss = None
        else:
            targets = (answers > 0).float() * 20 - 10 if c.labels_only else answers

            def loss(m: nn.Module, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
                return task.distill_loss(m(xb), tb, c.temperature)

        for member, part in zip(
            ens.members,
            torch.arange(len(x)).chunk(c.members),
            strict=False,
        ):
            train_on(
                member,
                x[part],
                targets[part],
                task=data.task,
                epochs=c.epochs,
                lr=c.lr,
                generator=generator,
                loss=loss,
            )
        return ens
