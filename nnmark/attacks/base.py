"""The attack protocol: a model in, a new model out; the input is never modified.

The base `__call__` runs the fixed sequence (copy, seed, run, eval mode); a subclass writes
only `run`. Attacks never see the owner's key. One attack object serves many models: the model
and the data are passed on each call, the options live in the frozen config.

What an attack learns about the model on its way (Neural Cleanse's flagged class) goes on the
returned module with `note(model, name=value)`, and `findings(model)` reads it back: the CLI
prints it and keeps it in the output file's metadata; a chain keeps every step's findings.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar, final

import torch
from torch import nn

from nnmark.config import MAX_EPOCHS, build_config
from nnmark.data.base import DataBundle
from nnmark.device import device_of, seeded
from nnmark.errors import NNMarkError

FINDINGS = "nnmark_findings"
#: The most optimisation steps per batch or per class an attack option may ask for.
MAX_STEPS = 10_000
#: Bounds on every attack's options, by the option's name (its own or its suffix): an attack
#: that checked `>= 1` alone trained until killed at epochs=10**15 (review, session 36).
TRAINING_BOUNDS = {"epochs": MAX_EPOCHS, "steps": MAX_STEPS, "rounds": MAX_EPOCHS}


def check_training_bounds(config: Any) -> None:
    """Refuse an attack config whose epochs, steps or rounds (any `*_epochs`, ...) exceed the
    bounds, whichever attack it is for, so a new attack is bounded without a line of its own."""
    for f in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        value = getattr(config, f.name)
        for suffix, bound in TRAINING_BOUNDS.items():
            named = f.name == suffix or f.name.endswith("_" + suffix)
            if named and isinstance(value, int | float) and value > bound:
                raise NNMarkError(
                    f"{f.name} must be at most {bound:,} for the attack, got {value:,}"
                )


def note(model: nn.Module, **found: Any) -> None:
    """Record what an attack found about `model` (JSON-serialisable values) on the module."""
    setattr(model, FINDINGS, {**findings(model), **found})


def findings(model: nn.Module) -> dict[str, Any]:
    """What the attacks that produced `model` found (empty when none noted anything)."""
    return dict(getattr(model, FINDINGS, {}))


class Attack:
    """Base class of every removal attack; subclasses live one per file in this package."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    needs_data: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    #: (option, weak / medium / strong values) that the bench sweeps, or None (run once with the
    #: defaults): the attack states how its strength is turned up.
    ladder: ClassVar[tuple[str, tuple[float, ...]] | None] = None
    #: The attack knows how marks are read and targets that (structural obfuscation against
    #: the layer shapes white-box keys name), where a generic attack does not look for the mark;
    #: the report's headline counts these apart ("robust to adaptive attacks", issue 18).
    adaptive: ClassVar[bool] = False
    config: Any

    def __init__(self, config: Any = None, /, **options: Any) -> None:
        if config is not None and not isinstance(config, dict):
            self.config = config
        else:
            self.config = build_config(self.Config, config or {}, **options)
        check_training_bounds(self.config)

    @final
    def __call__(
        self, model: nn.Module, data: DataBundle | None = None, *, seed: int = 0
    ) -> nn.Module:
        if self.needs_data and data is None:
            raise NNMarkError(f"attack {self.name} needs data (--data NAME[:PATH])")
        attacked = copy.deepcopy(model)
        gen = torch.Generator().manual_seed(seed)
        with seeded(seed, device_of(attacked)):
            out = self.run(attacked, data, gen)
        out.eval()
        return out

    def run(
        self, model: nn.Module, data: DataBundle | None, generator: torch.Generator
    ) -> nn.Module:
        """Modify `model` (already a private copy) and return it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"

    def describe(self) -> str:
        """The attack and its options as a reader wants them: `prune (fraction=0.5, ...)`."""
        fields = dataclasses.fields(self.config) if dataclasses.is_dataclass(self.config) else ()
        options = ", ".join(f"{f.name}={getattr(self.config, f.name)}" for f in fields)
        return f"{self.name} ({options})" if options else self.name
