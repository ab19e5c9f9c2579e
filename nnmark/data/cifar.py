"""CIFAR-10 and CIFAR-100 from their standard "python version" batches (the seeds' data).

`--data cifar10:DIR` reads DIR/data_batch_1..5 and DIR/test_batch (the folder
`cifar-10-batches-py` of the official archive); `cifar100:DIR` reads DIR/train and DIR/test
(`cifar-100-python`, fine labels). The official test set is `test`; the 50,000 training images
are split into `train` (37,500), `val` (4,167) and `thief` (8,333), as MNIST's are.

The batches are pickles. A pickle can name any callable to run while loading, and a data folder
may come from anywhere, so they are read with an unpickler that builds only plain containers and
numpy arrays of numbers; anything else is refused with one line, never run.
"""

from __future__ import annotations

import functools
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnmark.data import DATASETS
from nnmark.data.base import MAX_DATA_VALUES, DataBundle, official_splits
from nnmark.errors import NNMarkError

#: What a CIFAR batch pickle may construct: numpy's array reconstruction and the text-to-bytes
#: codec a protocol-2 pickle written by Python 3 stores an array's raw bytes with; nothing else.
ALLOWED = {
    ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
MAX_BATCH_BYTES = 1 << 30  # a CIFAR-100 train file is 155 MB; nothing legitimate is near 1 GiB


class _DataOnly(pickle.Unpickler):
    def __init__(self, fh: Any, limit: int, **kwargs: Any) -> None:
        super().__init__(fh, **kwargs)
        self.limit = limit

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED:
            raise pickle.UnpicklingError(f"refused to construct {module}.{name}")
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return functools.partial(_bounded_reconstruct, found, self.limit)
        if name == "encode":
            return functools.partial(_latin1_encode, self.limit)
        return found


def _latin1_encode(limit: int, text: Any, encoding: Any = "latin1", *rest: Any) -> bytes:
    """`_codecs.encode` as numpy's pickles use it: text to bytes in latin1, no longer than the
    file. Any codec was allowed before, and each may grow its input: 20 chained `hex` encodings
    made a 1,291-byte batch file take 1.8 GB, and `punycode` takes quadratic time (review,
    session 34)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
        raise pickle.UnpicklingError(f"refused codec call encode({type(text).__name__}, ...)")
    if len(text) > limit:
        raise pickle.UnpicklingError("an encoded string is longer than the file")
    return text.encode("latin1")


def _bounded_reconstruct(reconstruct: Any, limit: int, subtype: Any, shape: Any, dtype: Any) -> Any:
    """numpy's `_reconstruct`, refused for an array larger than the file: a real batch
    reconstructs empty arrays and fills them from the file's bytes, while a 188-byte pickle
    that asked for 300,000 images made the loader allocate 7.4 GB (red team, session 31)."""
    dims = (shape,) if isinstance(shape, int) else shape
    if not isinstance(dims, tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
    ):
        raise pickle.UnpicklingError(f"array shape {shape!r} is not a shape")
    try:
        itemsize = np.dtype(dtype.decode() if isinstance(dtype, bytes) else dtype).itemsize
    except (TypeError, ValueError, UnicodeDecodeError):
        raise pickle.UnpicklingError(f"array dtype {dtype!r} is not a dtype") from None
    if math.prod(dims) * max(itemsize, 1) > limit:
        raise pickle.UnpicklingError(f"an array of shape {dims} is larger than the file")
    return reconstruct(subtype, shape, dtype)


def read_batch(path: Path) -> dict[bytes, Any]:
    """One batch file as its dict (keys are bytes, as Python 2 wrote them)."""
    if not path.is_file():
        raise NNMarkError(f"{path}: missing (the CIFAR python batches are expected)")
    if path.stat().st_size > MAX_BATCH_BYTES:
        raise NNMarkError(f"{path}: {path.stat().st_size} bytes, more than any CIFAR batch")
    try:
        with path.open("rb") as fh:
            doc = _DataOnly(fh, path.stat().st_size, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        RecursionError,
    ) as exc:
        raise NNMarkError(f"{path}: not a CIFAR batch ({exc})") from None
    if not isinstance(doc, dict) or b"data" not in doc:
        raise NNMarkError(f"{path}: not a CIFAR batch (no data array)")
    return doc


def _labels_ok(labels: list[Any] | np.ndarray, classes: int) -> bool:
    """Every label a whole number (not a bool) in 0..classes-1: checked before numpy converts
    them, which ended in its own OverflowError or ValueError text for a huge int, a string or a
    NaN (review)."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            return False
        return not len(labels) or (int(labels.min()) >= 0 and int(labels.max()) < classes)
    return all((type(v) is int or isinstance(v, np.integer)) and 0 <= v < classes for v in labels)


def _images_labels(
    doc: dict[bytes, Any], label_key: bytes, path: Path, classes: int
) -> tuple[Any, Any]:
    data = doc[b"data"]
    labels = doc.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise NNMarkError(f"{path}: data must be a uint8 array of N x 3072")
    if data.shape[1] != 3 * 32 * 32:
        raise NNMarkError(f"{path}: {data.shape[1]} values per image, CIFAR has 3072")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise NNMarkError(f"{path}: {label_key.decode()} must hold one label per image")
    if not _labels_ok(labels, classes):
        raise NNMarkError(f"{path}: {label_key.decode()} must be whole numbers in 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _load(
    name: str, path: str | None, train: list[str], test: str, key: bytes, classes: int
) -> DataBundle:
    if not path:
        raise NNMarkError(f"{name} needs a folder: --data {name}:DIR (the python batches)")
    root = Path(path)
    if not root.is_dir():
        raise NNMarkError(f"{name}: folder not found: {root}")
    parts: list[tuple[Any, Any]] = []
    seen: set[tuple[int, int]] = set()
    values = 0
    for f in [*train, test]:
        batch = root / f
        if batch.is_file():  # before its read (read_batch says why anything else is refused)
            st = batch.stat()
            if (st.st_dev, st.st_ino) in seen:  # a link to another batch
                raise NNMarkError(f"{batch}: the same file as another batch of {name}")
            seen.add((st.st_dev, st.st_ino))
        parts.append(_images_labels(read_batch(batch), key, batch, classes))
        # each batch may hold up to 1 GiB: counted as they come, before the float copy
        # (review, session 36: six batches made 24 GiB of floats, then another 24 with / 255)
        values += parts[-1][0].size
        if values > MAX_DATA_VALUES:
            raise NNMarkError(
                f"{root}: the batches hold more than {MAX_DATA_VALUES:,} values "
                f"({name} has {60_000 * 3072:,})"
            )
    x = np.concatenate([p[0] for p in parts]).astype(np.float32)
    x /= 255.0  # in place: one float copy
    y = np.concatenate([p[1] for p in parts])  # each batch's labels checked as it was read
    n_train = sum(len(p[1]) for p in parts[:-1])
    splits = official_splits(n_train, len(y))
    return DataBundle(
        name, "classification", torch.from_numpy(x), torch.from_numpy(y), splits, classes
    )


@DATASETS.register("cifar10")
def load_cifar10(path: str | None) -> DataBundle:
    batches = [f"data_batch_{i}" for i in range(1, 6)]
    return _load("cifar10", path, batches, "test_batch", b"labels", 10)


@DATASETS.register("cifar100")
def load_cifar100(path: str | None) -> DataBundle:
    return _load("cifar100", path, ["train"], "test", b"fine_labels", 100)
