"""Tiny CIFAR-10 folders in the official python-batches format (protocol-2 pickles of dicts with
bytes keys, as the archive ships them), for tests that read `--data cifar10:DIR` without the
real data set."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

__all__ = ["write_batch", "write_cifar10"]


def write_batch(path: Path, n: int, seed: int, label_key: bytes, classes: int) -> np.ndarray:
    """One batch file of `n` random 32x32x3 images (rows of 3072 bytes); returns the images."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, classes, size=n)]
    doc = {
        b"batch_label": b"testing batch",
        label_key: labels,
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }
    path.write_bytes(pickle.dumps(doc, protocol=2))
    return data


def write_cifar10(root: Path, per_batch: int = 12) -> list[np.ndarray]:
    """data_batch_1..5 and test_batch under `root`; returns their images in that order."""
    root.mkdir(parents=True, exist_ok=True)
    out = [write_batch(root / f"data_batch_{i}", per_batch, i, b"labels", 10) for i in range(1, 6)]
    return [*out, write_batch(root / "test_batch", 10, 9, b"labels", 10)]
