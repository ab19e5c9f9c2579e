"""Fixtures of the fragile / deepsigns / actsign / ECC / fingerprint tests (helper D's area)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from nnmark import TrainConfig, new_model, train
from nnmark.data.base import DataBundle


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread than on two contended ones; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def base_cnn(digits: DataBundle) -> nn.Module:
    """An unmarked digits CNN (8 epochs, seed 0): the base every mark here is fine-tuned into."""
    return train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=8, seed=0))
