"""Frontier's FGSM step adapts to the model it marks: with `eps` unset, `plan` takes the first
step of its ladder that leaves enough true and false adversaries, and the key records it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from nnmark import OwnerKey
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark
from nnmark.schemes.frontier import (
    EPS_DOWN,
    EPS_START,
    EPS_UP,
    Frontier,
    FrontierConfig,
    fgsm,
)


class NearestMean(nn.Module):
    """Nearest class mean of the training images (Euclidean): a model FGSM fools less often than
    the digits CNN at the same step, so that 0.15 leaves it too few true adversaries for 720 key
    inputs. No training: the same on every machine."""

    def __init__(self, data: DataBundle) -> None:
        super().__init__()
        x, y = data.tensors("train")
        means = [x[y == c].mean(0).flatten() for c in range(data.num_classes)]
        self.register_buffer("means", torch.stack(means))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x.flatten(1), self.means)


def kinds(model: nn.Module, data: DataBundle, eps: float) -> tuple[int, int]:
    """(true, false) adversaries FGSM at `eps` leaves among the training images answered right."""
    x, y = data.tensors("train")
    with torch.no_grad():
        right = model(x).argmax(1) == y
    adv = fgsm(model, x[right], y[right], eps)
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y[right]
    return int(fooled.sum()), int((~fooled).sum())


#: The ladder does not depend on the key derivation's cost: a cheap one keeps the tests fast.
CHEAP_KDF = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}


def plan(model: nn.Module, data: DataBundle, nonce: str, **options: float) -> Mark:
    key = OwnerKey.new("frontier eps", nonce=nonce * 16, kdf=CHEAP_KDF)
    return Frontier.plan(model, key, FrontierConfig(**options), data=data)  # type: ignore[arg-type]


def test_the_digits_cnn_keeps_the_first_step(plain_cnn: nn.Module, digits: DataBundle) -> None:
    """A default key on the digits CNN is made at 0.15, and is the key an explicit eps=0.15
    makes: the key it was before the ladder (whose figures the scheme's docstring gives)."""
    print(f"digits CNN, eps {EPS_START}: (true, false) {kinds(plain_cnn, digits, EPS_START)}")
    default = plan(plain_cnn, digits, "e1")
    assert FrontierConfig().eps is None and default.config["eps"] == EPS_START == 0.15
    assert default == plan(plain_cnn, digits, "e1", eps=0.15)
    assert Frontier(default).verify(plain_cnn).details["eps"] == 0.15  # the verdict shows it


def test_too_few_false_adversaries_lower_the_step(plain_cnn: nn.Module, digits: DataBundle) -> None:
    """800 key inputs need 400 false adversaries: 0.15 leaves the digits CNN fewer, so the key is
    made at the ladder's next step down, and is the key eps set to that step makes. An eps the
    user sets is used as given: short, it is the error that says which way to move it."""
    mark = plan(plain_cnn, digits, "e2", n=800)
    assert mark.config["eps"] == EPS_DOWN[0] < EPS_START
    assert sum(mark.stored["adversarial"]) == 400
    assert mark == plan(plain_cnn, digits, "e2", n=800, eps=EPS_DOWN[0])
    with pytest.raises(NNMarkError, match=r"eps=0\.15 gave \d+ true and \d+ false .*lower eps"):
        plan(plain_cnn, digits, "e2", n=800, eps=0.15)


def test_too_few_true_adversaries_raise_the_step(digits: DataBundle) -> None:
    """The nearest-mean model: 0.15 leaves it too few true adversaries for 720 key inputs, so
    the key is made at the ladder's next step up, and the verdict shows it. With 800 the step up
    leaves too few false ones: no step of the ladder leaves both, and the error says so."""
    model = NearestMean(digits).eval()
    print(
        f"nearest mean: (true, false) at {EPS_START} {kinds(model, digits, EPS_START)}, "
        f"at {EPS_UP[0]} {kinds(model, digits, EPS_UP[0])}"
    )
    mark = plan(model, digits, "e3", n=720)
    assert mark.config["eps"] == EPS_UP[0] > EPS_START
    assert Frontier(mark).verify(model).details["eps"] == EPS_UP[0]
    with pytest.raises(NNMarkError, match=r"eps=0\.2121 gave .*lower eps \(eps unset: the steps"):
        plan(model, digits, "e3", n=800)
    # more key inputs than right training images: no step helps, and the error says what does
    with pytest.raises(NNMarkError, match=r"eps=0\.15 gave .*; lower n \(the model answers"):
        plan(model, digits, "e3", n=2000)


def test_a_key_without_its_step_is_refused(plain_cnn: nn.Module, digits: DataBundle) -> None:
    """A key records the step it was made with: one whose eps is null is refused."""
    mark = plan(plain_cnn, digits, "e4", n=20)
    forged = dataclasses.replace(mark, config={**mark.config, "eps": None})
    with pytest.raises(NNMarkError, match="config.eps must be the FGSM step"):
        Frontier(forged)
