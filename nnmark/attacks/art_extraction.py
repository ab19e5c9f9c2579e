"""Off-the-shelf extraction: the Adversarial Robustness Toolbox's KnockoffNets and CopycatCNN.

Threat model: black-box query access and the thief's own inputs (the thief split), as a thief
who takes a published toolbox rather than writing a loop. The suspect is wrapped in ART's
`PyTorchClassifier`; a fresh student (the suspect's architecture, or zoo `arch`) is wrapped the
same way and handed to the attack's `extract`; the trained student comes back as a plain
`nn.Module`.

- `knockoff` (Orekondy, Schiele, Fritz, CVPR 2019): `sampling=random` queries a random subset
  of the thief inputs; `sampling=adaptive` picks queries by a bandit over the thief's classes
  (it reads the thief's own labels) with `reward` (`cert`, `div`, `loss` or `all`).
- `copycat` (Correia-Silva et al., IJCNN 2018): label the thief's (possibly non-problem-domain)
  inputs with the suspect's top-1 answers and train the copy on them.

`queries` is ART's `nb_stolen` (0: every thief input). ART trains the copy for a fixed
`epochs` (its fit has no early stopping), so the bench's ladder tries 15 and 150: on digits the
copy of a plain cnn is 6.6 points below it after 15 epochs (mean of 3 seeds, outside the bench's
5-point budget), 4.0 after 60 (worst seed 5.0) and 4.0 after 150 (worst 4.5;
`python benchmarks/extraction_epochs.py`). ART shuffles with numpy's global RNG: it is
seeded from the attack's generator and restored afterwards. Classification only. ART is an optional extra (`pip install 'nnmark[art]'`); without it both attacks
stop with a one-line error naming it.

Example: ``nnmark attack knockoff marked.safetensors --data digits --set queries=200``
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nnmark.attacks import register
from nnmark.attacks._training import fresh_copy, seed_of
from nnmark.attacks.base import Attack
from nnmark.config import check
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.layers import evaluating


def art(module: str, attack: str) -> Any:
    """An ART module (`art.attacks.extraction`, ...), or a clear error naming the extra."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "art":
            raise
        raise NNMarkError(
            f"{attack} needs the Adversarial Robustness Toolbox: pip install 'nnmark[art]'"
        ) from None


def _classifier(model: nn.Module, data: DataBundle, classes: int, lr: float | None) -> Any:
    PyTorchClassifier = art("art.estimators.classification", "ART extraction").PyTorchClassifier

    return PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        optimizer=torch.optim.Adam(model.parameters(), lr=lr) if lr else None,
        input_shape=data.input_shape,
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )


def steal(
    model: nn.Module,
    data: DataBundle,
    generator: torch.Generator,
    make: Any,
    *,
    arch: str | None,
    lr: float,
    with_labels: bool,
) -> nn.Module:
    """Run an ART extraction attack (built by `make(victim)`) and return the student module."""
    if data.task != "classification":
        raise NNMarkError("ART extraction attacks need a classification model")
    x, y = data.tensors("thief")
    student = fresh_copy(model, arch)
    # As many classes as the suspect answers: a new-label mark adds one past the task's, and a
    # victim declared with the task's count would fail on the first input answered with it.
    with torch.no_grad(), evaluating(model):
        classes = int(model(x[:1]).shape[1])
    victim = _classifier(model, data, classes, None)
    thieved = _classifier(student, data, classes, lr)
    state = np.random.get_state()
    np.random.seed(seed_of(generator))
    try:
        labels = np.eye(classes, dtype=np.float32)[y.numpy()] if with_labels else None
        make(victim).extract(x.numpy(), labels, thieved_classifier=thieved)
    finally:
        np.random.set_state(state)
    return student


@dataclass(frozen=True)
class StealConfig:
    """What both ART extraction attacks take: the query budget and the copy's training."""

    queries: int = 0  # 0, or more than there are: the whole thief split
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    use_probability: bool = False
    arch: str | None = None  # the copy's architecture; None: the suspect's

    def __post_init__(self) -> None:
        check(self.queries >= 0, f"queries must be >= 0, got {self.queries}")
        check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class KnockoffConfig(StealConfig):
    sampling: Literal["random", "adaptive"] = "random"
    reward: Literal["cert", "div", "loss", "all"] = "all"


@register("knockoff")
class Knockoff(Attack):
    Config = KnockoffConfig
    config: KnockoffConfig
    needs_data = True
    summary = "ART KnockoffNets: train a copy on the suspect's answers (random / adaptive)"
    ladder = ("epochs", (15, 150))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        KnockoffNets = art("art.attacks.extraction", self.name).KnockoffNets
        assert data is not None
        c = self.config
        n = thief_queries(c.queries, data)

        def make(victim: Any) -> Any:
            return KnockoffNets(
                classifier=victim,
                batch_size_fit=c.batch_size,
                batch_size_query=c.batch_size,
                nb_epochs=c.epochs,
                nb_stolen=n,
                sampling_strategy=c.sampling,
                reward=c.reward,
                verbose=False,
                use_probability=c.use_probability,
            )

        return steal(
            model,
            data,
            generator,
            make,
            arch=c.arch,
            lr=c.lr,
            with_labels=c.sampling == "adaptive",
        )


def thief_queries(queries: int, data: DataBundle) -> int:
    """ART's `nb_stolen`: `queries` of the thief's inputs, at most all of them (0: all). Its
    adaptive sampling runs a query and a fit per stolen input, so `queries=10**12` looped
    without end (review, session 36)."""
    thief = len(data.splits["thief"])
    return min(queries, thief) if queries else thief


@dataclass(frozen=True)
class CopycatConfig(StealConfig):
    """Knockoff's options (the sampling is Copycat's own: no labels)."""


@register("copycat")
class Copycat(Attack):
    Config = CopycatConfig
    config: CopycatConfig
    needs_data = True
    summary = "ART CopycatCNN: label the thief's inputs with the suspect's answers, train a copy"
    ladder = ("epochs", (15, 150))

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        CopycatCNN = art("art.attacks.extraction", self.name).CopycatCNN
        assert data is not None
        c = self.config
        n = thief_queries(c.queries, data)

        def make(victim: Any) -> Any:
            return CopycatCNN(
                classifier=victim,
                batch_size_fit=c.batch_size,
                batch_size_query=c.batch_size,
                nb_epochs=c.epochs,
                nb_stolen=n,
                use_probability=c.use_probability,
            )

        return steal(model, data, generator, make, arch=c.arch, lr=c.lr, with_labels=False)
