"""Fixtures of the integration tests, and the per-scheme settings of the framework tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from nnmark.data import SHARED_DATA

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
