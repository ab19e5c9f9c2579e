"""MNIST and Fashion-MNIST from their standard IDX files (`.gz` or unpacked).

The official test set is `test`; the 60,000 training images are split into `train` (45,000),
`val` (5,000) and `thief` (10,000).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from nnmark.data import DATASETS
from nnmark.data.base import DataBundle, official_splits
from nnmark.errors import NNMarkError

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (magic 2049 labels or 2051 images)."""
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise NNMarkError(f"{path}: unreadable IDX file ({exc})") from None
    if len(raw) < 8 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8 or raw[3] not in (1, 3):
        raise NNMarkError(f"{path}: not an unsigned-byte IDX file")
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    offset = 4 + 4 * dims
    if len(raw) != offset + int(np.prod(shape)):
        raise NNMarkError(f"{path}: truncated IDX file")
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (
        stem + ".gz",
        stem,
        stem.replace("-idx", ".idx") + ".gz",
        stem.replace("-idx", ".idx"),
    ):
        if (root / name).is_file():
            return root / name
    raise NNMarkError(f"{root}: missing {stem}.gz (the standard IDX files are expected)")


def _load(name: str, path: str | None) -> DataBundle:
    if not path:
        raise NNMarkError(f"{name} needs a folder: --data {name}:DIR (with the IDX .gz files)")
    root = Path(path)
    if not root.is_dir():
        raise NNMarkError(f"{name}: folder not found: {root}")
    arr = {k: read_idx(_find(root, v)) for k, v in FILES.items()}
    x = np.concatenate([arr["train_x"], arr["test_x"]]).astype(np.float32) / 255.0
    y = np.concatenate([arr["train_y"], arr["test_y"]]).astype(np.int64)
    n_train = len(arr["train_y"])
    splits = official_splits(n_train, len(y))
    return DataBundle(
        name, "classification", torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y), splits, 10
    )


@DATASETS.register("mnist")
def load_mnist(path: str | None) -> DataBundle:
    return _load("mnist", path)


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(path: str | None) -> DataBundle:
    return _load("fashion-mnist", path)
