"""Shared fixtures: digits data and tiny models trained once per test session."""

from __future__ import annotations

import pytest
import torch

from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model, train
from nnmark.data.base import DataBundle

torch.set_num_threads(2)

EPOCHS = 20


@pytest.fixture(scope="session")
def digits() -> DataBundle:
    return load_data("digits")


@pytest.fixture(scope="session")
def plain_cnn(digits: DataBundle) -> torch.nn.Module:
    """The digits CNN trained without a mark, seed 0."""
    return train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=EPOCHS, seed=0))


@pytest.fixture(scope="session")
def uchida_cnn(digits: DataBundle) -> tuple[torch.nn.Module, OwnerKey]:
    """The digits CNN trained with a 64-bit random-key Uchida mark, seed 0, same init as plain."""
    model = new_model("cnn", digits, seed=0)
    key = OwnerKey.new("test owner", nonce="00" * 16)
    return embed(
        model, digits, "uchida", key=key, bits=64, config=TrainConfig(epochs=EPOCHS, seed=0)
    )


@pytest.fixture(scope="session")
def unmarked_cnns(digits: DataBundle) -> list[torch.nn.Module]:
    """Ten digits CNNs trained without any mark, seeds 100..109 (the same recipe)."""
    return [
        train(new_model("cnn", digits, seed=s), digits, TrainConfig(epochs=EPOCHS, seed=s))
        for s in range(100, 110)
    ]
