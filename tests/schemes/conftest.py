"""Fixtures of the white-box and integrity scheme tests: one thread, a base CNN, and every
such scheme of the registry embedded once (recipes in scheme_recipes.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from scheme_recipes import embed_recipe
from torch import nn

from nnmark import OwnerKey, TrainConfig, new_model, train
from nnmark.data.base import DataBundle


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread than on two contended ones; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def base_cnn(digits: DataBundle, once: Callable[..., Any]) -> nn.Module:
    """An unmarked digits CNN (8 epochs, seed 0): the base every mark here is fine-tuned into."""
    return once(  # type: ignore[no-any-return]
        "base_cnn",
        lambda: train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=8, seed=0)),
    )


@pytest.fixture(scope="package")
def marked(
    base_cnn: nn.Module, digits: DataBundle, once: Callable[..., Any]
) -> Callable[[str], tuple[nn.Module, OwnerKey]]:
    """marked(name): the scheme embedded by its recipe, once per test session."""
    cache: dict[str, tuple[nn.Module, OwnerKey]] = {}

    def get(name: str) -> tuple[nn.Module, OwnerKey]:
        if name not in cache:
            cache[name] = once(f"scheme_{name}", lambda: embed_recipe(name, base_cnn, digits))
        return cache[name]

    return get
