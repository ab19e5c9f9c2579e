"""Fixtures of the integration tests, and the per-scheme settings of the framework tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from nnmark import TrainConfig, new_model, train
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle

FASHION = SHARED_DATA / "fashion-mnist"
#: Options a scheme cannot do without on digits: `unrelated` draws Fashion-MNIST items.
#: (Frontier took 60 key inputs here, 30 true adversaries: one bit each cannot reach the
#: search-cost bound that its timestamp no longer waives, so it runs at its default 200.)
SCHEME_OPTIONS: dict[str, dict[str, Any]] = {
    "unrelated": {"source": f"fashion-mnist:{FASHION}"},
}


@pytest.fixture(scope="session")
def scheme_options() -> dict[str, dict[str, Any]]:
    return SCHEME_OPTIONS


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread while a framework trains: on 2 shared cores, two OpenMP threads per
    process mostly wait for each other. Restored afterwards (other tests' results depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def plain_unet(seg32: DataBundle, once: Callable[..., Any]) -> torch.nn.Module:
    """A width-8 U-Net trained without a mark on seg32 (tests/conftest.py), 10 epochs: marks are
    fine-tuned into it."""
    recipe = TrainConfig(epochs=10, seed=0, lr=3e-3, batch_size=16)
    return once(  # type: ignore[no-any-return]
        "plain_unet", lambda: train(new_model("unet", seg32, seed=0, width=8), seg32, recipe)
    )
