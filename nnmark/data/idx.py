"""MNIST and Fashion-MNIST from their standard IDX files (`.gz` or unpacked).

The official test set is `test`; the 60,000 training images are split into `train` (45,000),
`val` (5,000) and `thief` (10,000).
"""

from __future__ import annotations

import gzip
import math
import time
import zlib
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


#: The most bytes an IDX file may hold (MNIST's training images: 47 MB): a header is read
#: before the data, and no more than it declares is ever decompressed.
MAX_IDX_BYTES = 1 << 27
#: The most pixels train and test images may hold together (MNIST: 55 million), checked before
#: they become float32: at most 512 MiB of images. Two files at the old per-file bound made
#: 2 GiB of floats and peaked at 3.6 GB (red team, session 27).
MAX_IDX_PIXELS = 1 << 27
#: The most images train and test may hold together (MNIST: 70,000): each costs a label, split
#: indices and a row of floats whatever its size (134 million 1 x 1 images from 396 KB of gzip
#: peaked at 3 GB: red team, session 27).
MAX_IDX_IMAGES = 1 << 20


#: Parsed IDX files kept per process, keyed by the file's identity and state (path, device,
#: inode, size, modification and status-change times in ns: a rewrite whose modification time
#: was set back still changes the second, which no user can set; stat'ed before and after the
#: read, and a file changed
#: meanwhile is not kept): the same data set loaded again (the `unrelated` scheme's source, on
#: every plan and verification) skips the decompression. Read-only arrays, at most this many
#: bytes in all.
MAX_CACHED_IDX_BYTES = 1 << 27
#: A file modified (or its status changed) less than this long before it is read is not kept:
#: the clock that stamps those times ticks coarsely, and a rewrite in the same tick at the same
#: size would look unchanged (git's "racy" entries).
RACY_NS = 2_000_000_000
_parsed: dict[tuple[str, int, int, int, int, int], np.ndarray] = {}


def _file_state(path: Path) -> tuple[str, int, int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
        return None
    return (
        str(path.resolve()),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
    )


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (magic 2049 labels or 2051 images): a read-only array, taken from
    the per-process cache when the file is unchanged since it was parsed."""
    before = _file_state(path)
    if before is not None and before in _parsed:
        return _parsed[before]
    out = _read_idx(path)
    if before is not None and before == _file_state(path):
        while _parsed and sum(a.nbytes for a in _parsed.values()) + out.nbytes > (
            MAX_CACHED_IDX_BYTES
        ):
            del _parsed[next(iter(_parsed))]  # the oldest first
        if out.nbytes <= MAX_CACHED_IDX_BYTES:
            _parsed[before] = out
    return out


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08" or head[3] not in (1, 3):
                raise NNMarkError(f"{path}: not an unsigned-byte IDX file")
            dims = f.read(4 * head[3])
            shape = [int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3])]
            # Python ints: int64 wraps (2^31 x 2^31 x 4 is 0, review), these do not
            size = math.prod(shape) if len(dims) == 4 * head[3] else -1
            if not 0 <= size <= MAX_IDX_BYTES:
                raise NNMarkError(f"{path}: an IDX header of {shape} (at most 2^27 bytes)")
            raw = f.read(size + 1)  # one more: trailing data is an error too
    except (OSError, EOFError, zlib.error) as exc:  # a corrupt deflate stream is zlib's
        raise NNMarkError(f"{path}: unreadable IDX file ({exc})") from None
    if len(raw) != size:
        raise NNMarkError(f"{path}: truncated IDX file (or data after it)")
    return np.frombuffer(raw, np.uint8).reshape(shape)


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
    for part in ("train", "test"):
        x, y = arr[f"{part}_x"], arr[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or not len(y):
            raise NNMarkError(f"{name}: {part} has {len(x)} images and {len(y)} labels")
        if x.shape[1:] != arr["train_x"].shape[1:]:
            raise NNMarkError(f"{name}: train and test images differ in size")
        if int(y.max()) > 9:
            raise NNMarkError(f"{name}: {part} labels must be 0 to 9, found {int(y.max())}")
    images = len(arr["train_y"]) + len(arr["test_y"])
    if images > MAX_IDX_IMAGES:
        raise NNMarkError(f"{name}: {images:,} images (at most {MAX_IDX_IMAGES:,})")
    pixels = arr["train_x"].size + arr["test_x"].size
    if pixels > MAX_IDX_PIXELS:
        raise NNMarkError(f"{name}: {pixels:,} pixels of images (at most {MAX_IDX_PIXELS:,})")
    x = np.concatenate([arr["train_x"], arr["test_x"]], dtype=np.float32)  # one copy, no more
    x /= 255.0
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
