"""Every hook of the scheme protocol is reachable: throwaway schemes, one per hook, plus a
user's own training loop driving Uchida with the documented three lines."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from nnmark import NNMarkError, OwnerKey, TrainConfig, new_model, verify
from nnmark.data.base import DataBundle
from nnmark.schemes.base import Batch, LossFn, Scheme
from nnmark.schemes.uchida import Uchida, UchidaConfig
from nnmark.train import fit


@dataclass(frozen=True)
class NoConfig:
    label = "test"


def bind(cls: type[Scheme], owner: str = "hooks") -> Scheme:
    key = OwnerKey.new(owner, nonce="22" * 16)
    return cls(key.new_mark("test", {}, None, ()))


class GrowHead(Scheme):
    """prepare: replace the head by one with an extra output (as Zhong's new label does)."""

    Config = NoConfig

    def prepare(self, model: nn.Module) -> nn.Module:
        old = model.fc2
        new = nn.Linear(old.in_features, old.out_features + 1)
        with torch.no_grad():
            new.weight[:-1] = old.weight
            new.bias[:-1] = old.bias
        model.fc2 = new
        return model


class MixTriggers(Scheme):
    """batches: append 8 key-derived noise images labelled 3 to every batch."""

    Config = NoConfig

    def __init__(self, mark):  # type: ignore[no-untyped-def]
        super().__init__(mark)
        self.x = torch.rand(8, 1, 8, 8, generator=mark.generator("triggers"))
        self.seen = 0

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for x, y in batches:
            self.seen += 1
            yield torch.cat([x, self.x]), torch.cat([y, torch.full((8,), 3)])


class CountingStep(Scheme):
    """step: a custom step (two half-steps) that still sees the other schemes' penalties."""

    Config = NoConfig

    def __init__(self, mark):  # type: ignore[no-untyped-def]
        super().__init__(mark)
        self.calls = 0

    def step(self, model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer) -> float:  # type: ignore[no-untyped-def]
        self.calls += 1
        total = 0.0
        for xs, ys in zip(batch[0].chunk(2), batch[1].chunk(2)):
            optimizer.zero_grad()
            loss = loss_fn(model, (xs, ys))
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        return total / 2


class WriteAfter(Scheme):
    """finalize: write a signature into the model after training (as the fragile mark does)."""

    Config = NoConfig

    def finalize(self, model: nn.Module) -> nn.Module:
        model.register_buffer("signature", torch.tensor([1234.5]))
        return model


def test_prepare_batches_step_finalize(digits: DataBundle) -> None:
    grow, mix, step, write = (bind(c) for c in (GrowHead, MixTriggers, CountingStep, WriteAfter))
    key = OwnerKey.new("hooks", nonce="33" * 16)
    model = new_model("cnn", digits, seed=0)
    mark = Uchida.plan(model, key, UchidaConfig(), bits=16)
    uchida = Uchida(mark)
    model = fit(model, digits, [grow, mix, step, uchida, write], TrainConfig(epochs=6, seed=0))
    assert model.fc2.out_features == 11  # prepare ran
    assert mix.seen == 6 * len(digits.loader("train"))  # batches wrapped every epoch
    assert step.calls == mix.seen  # the custom step replaced the plain one
    with torch.no_grad():
        assert (model(mix.x).argmax(1) == 3).float().mean() == 1.0  # triggers were learned
    assert model.signature.item() == 1234.5  # finalize ran
    assert verify(model, key.with_mark(mark)).ber == 0.0  # penalty reached the custom step


def test_two_custom_steps_are_refused(digits: DataBundle) -> None:
    with pytest.raises(NNMarkError, match="replace the training step"):
        fit(
            new_model("cnn", digits),
            digits,
            [bind(CountingStep), bind(CountingStep)],
            TrainConfig(epochs=1),
        )


def test_users_own_loop_with_three_lines(digits: DataBundle) -> None:
    """The loop documented in nnmark/train.py, written by hand."""
    torch.manual_seed(0)
    model = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("own loop", nonce="44" * 16)
    mark = Uchida.plan(model, key, UchidaConfig(), bits=64)
    scheme = Uchida(mark)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    model = scheme.prepare(model)
    for _ in range(5):
        for x, y in scheme.batches(iter(digits.loader("train", 64, shuffle=True))):
            loss = criterion(model(x), y) + scheme.penalty(model, (x, y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model = scheme.finalize(model)
    v = verify(model, key.with_mark(mark))
    assert v.verdict == "found" and v.ber == 0.0
