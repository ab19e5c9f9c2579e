"""scikit-learn's bundled `digits` (1,797 8x8 images): the built-in default, no download."""

from __future__ import annotations

import torch

from nnmark.data import DATASETS
from nnmark.data.base import DataBundle, split_indices
from nnmark.errors import NNMarkError


@DATASETS.register("digits")
def load_digits(path: str | None = None) -> DataBundle:
    if path:
        raise NNMarkError("digits is built in and takes no path")
    from sklearn.datasets import load_digits as _load

    raw = _load()
    x = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(raw.target, dtype=torch.long)
    splits = split_indices(len(y), {"test": 0.2, "thief": 0.15, "val": 0.05})
    return DataBundle("digits", "classification", x, y, splits, num_classes=10)
