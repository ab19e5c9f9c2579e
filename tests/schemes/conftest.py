"""Fixtures of the white-box and integrity scheme tests: one thread, a base CNN, and every
such scheme of the registry embedded once (recipes in scheme_recipes.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from scheme_recipes import embed_recipe
from torch import nn

from nnmark import OwnerKey
from nnmark.data.base import DataBundle


@pytest.fixture(scope="package", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models train faster on one thread than on two contended ones; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def base_cnn(plain_cnn: nn.Module) -> nn.Module:
    """The unmarked digits CNN at the default recipe (seed 0, tests/conftest's plain_cnn): what
    fine-tune-to-embed marks start from, and train-to-embed's plain twin (the same initial
    weights and batches, no mark)."""
    return plain_cnn


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
