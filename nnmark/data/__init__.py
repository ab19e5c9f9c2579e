"""Data sources, one file each, registered by name; `load_data("NAME[:PATH]")` picks one.

Every source yields a `DataBundle` with fixed, seeded splits: `train`, `val`, `test` and a
disjoint `thief` split that the owner's training never reads (the attacker's own data).

>>> d = load_data("digits")
>>> d.task, d.num_classes, tuple(d.x.shape[1:]), sorted(d.splits)
('classification', 10, (1, 8, 8), ['test', 'thief', 'train', 'val'])
"""

from __future__ import annotations

from collections.abc import Callable

from nnmark.data.base import SPLITS, DataBundle, split_indices
from nnmark.errors import NNMarkError
from nnmark.registry import Registry

DATASETS: Registry[Callable[[str | None], DataBundle]] = Registry("dataset")


def load_data(spec: str) -> DataBundle:
    """Load `NAME` or `NAME:PATH` (e.g. `digits`, `mnist:../shared/data/mnist`)."""
    name, sep, path = spec.partition(":")
    loader = DATASETS.get(name.strip())
    return loader(path.strip() if sep else None)


def list_datasets() -> list[str]:
    return DATASETS.names()


from nnmark.data import digits, folder, idx, segmentation  # noqa: E402, F401

__all__ = ["DATASETS", "SPLITS", "DataBundle", "NNMarkError", "load_data", "split_indices"]
