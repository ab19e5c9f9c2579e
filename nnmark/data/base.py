"""The in-memory dataset bundle every source returns, and its seeded splits."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from nnmark.errors import NNMarkError

SPLITS = ("train", "val", "test", "thief")


def check_split(split: str) -> None:
    """A config's split, checked as it is built (a ValueError, one line through build_config)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


SPLIT_SEED = 20170606  # fixed: the same test set for every training seed
#: The most values a loader decodes into a data set's inputs (2 GiB of float32; CIFAR-10 is
#: 184 M), counted from file headers before any image is decoded: a folder of small files
#: can declare gigapixels.
MAX_DATA_VALUES = 1 << 29
#: The most pixels one image file may declare (8192 x 8192), checked from its header.
MAX_IMAGE_PIXELS = 1 << 26
#: The most pixels a data set's images may take to decode, from their headers (2^34: minutes).
MAX_DECODED_PIXELS = 1 << 34
#: The most scans a JPEG may hold: libjpeg-turbo's own guard for security-critical callers
#: (TurboJPEG's scan limit) stops at 500. Each scan of a progressive JPEG is decoded over the
#: whole image at full size, whatever the draft scale: 2,000 repeated scans of 14 bytes each
#: kept a 1024 x 1024 JPEG of 28 KB decoding for 1.1 s (review, session 37), and an 8192 x
#: 8192 one as long per scan as 64 of those.
MAX_JPEG_SCANS = 500
#: What one scan costs, in decoded pixels per pixel of the full image: decoding a JPEG at its
#: draft scale took 0.4 (flat) to 1 ns (a photo) per pixel of the full image and scan, against
#: 7.4 ns per pixel to decode, convert and resize a PNG (AMD EPYC, session 37), so a photo's
#: JPEG was counted 85 times short by its drafted pixels alone.
SCAN_COST = 1 / 8
_SOS = re.compile(rb"\xff\xda")
#: What opening a file costs before any pixel, in decoded pixels: its bytes (read, and a JPEG's
#: header segments kept), and a compressed text chunk of a PNG, which Pillow inflates when it
#: opens the file (63 of them in a 66 KB PNG took 0.24 s an open, counted as 4 pixels; review,
#: session 37). Each is inflated here first, to Pillow's limit of 1 MiB, and counted by what it
#: gave: a colour profile of 588 bytes counts as its own size, not as a full chunk (diff
#: review, session 37). An inflated byte costs 3.6 ns, half a decoded pixel's 7.4, and a loader
#: inflates it four times (here and in Pillow, at each of its two passes: 52 such PNGs took
#: 36 s), so it counts as PNG_TEXT_COST pixels.
BYTE_COST = 1
PNG_TEXT_LIMIT = 1 << 20
PNG_TEXT_COST = 2
#: A PNG chunk's header, walked here and by Pillow (about 1 us each: 16 decoded pixels), and
#: the most a PNG may hold (the largest image here, split in 8 KiB chunks, takes 65,536).
PNG_CHUNK_COST = 16
MAX_PNG_CHUNKS = 1 << 18
#: The most Exif segments a JPEG may hold (the standard has one): Pillow joins them by
#: repeated copies, in time that grows with their square (65 MB of them: 27 s an open).
MAX_EXIF_SEGMENTS = 64
_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_COMPRESSED = {b"zTXt", b"iTXt", b"iCCP"}
_EXIF = re.compile(rb"\xff\xe1..Exif\x00\x00", re.DOTALL)


def open_image(path: Any) -> Any:
    """A PIL image, its header read and its size checked (nothing decoded yet); a file that is
    not an image, or declares more than MAX_IMAGE_PIXELS, is a one-line error."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    if not Path(path).is_file():  # a FIFO named x.png blocked the loader forever (review)
        raise NNMarkError(f"{path}: not a regular file")
    cost, scans = _opening_cost(Path(path))  # before Pillow reads a byte: it inflates at open
    try:
        with warnings.catch_warnings():  # PIL warns, then raises, at its own bomb limits
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, Warning):
        raise NNMarkError(f"{path}: not a readable image (or a decompression bomb)") from None
    if im.width * im.height > MAX_IMAGE_PIXELS:
        im.close()
        raise NNMarkError(
            f"{path}: {im.width} x {im.height} pixels is more than an image may hold here "
            f"({MAX_IMAGE_PIXELS:,})"
        )
    im.nnmark_opening, im.nnmark_scans = cost, scans  # type: ignore[attr-defined]
    return im


def _opening_cost(path: Path) -> tuple[int, int]:
    """(what opening `path` costs before any pixel: BYTE_COST, PNG_TEXT_COST; a JPEG's scans)
    from its chunk or segment headers, before Pillow reads it. A JPEG of more than
    MAX_JPEG_SCANS scans or MAX_EXIF_SEGMENTS Exif segments is refused."""
    try:
        with open(path, "rb") as f:
            cost = os.fstat(f.fileno()).st_size * BYTE_COST
            head = f.read(8)
            if head == _PNG:
                texts, chunks = _png_chunks(f)
                if chunks > MAX_PNG_CHUNKS:
                    raise NNMarkError(f"{path}: a PNG of more than {MAX_PNG_CHUNKS:,} chunks")
                return cost + texts + chunks * PNG_CHUNK_COST, 0
            if head[:2] != b"\xff\xd8":
                return cost, 0
            scans, exif = jpeg_markers(f)
    except OSError as exc:  # unreadable (permissions, a file gone since it was listed)
        raise NNMarkError(f"{path}: not a readable image ({exc.strerror or exc})") from None
    if scans > MAX_JPEG_SCANS:
        raise NNMarkError(
            f"{path}: a JPEG of more than {MAX_JPEG_SCANS} scans (each is decoded over the "
            "whole image: re-encode it)"
        )
    if exif > MAX_EXIF_SEGMENTS:
        raise NNMarkError(
            f"{path}: a JPEG of more than {MAX_EXIF_SEGMENTS} Exif segments (the standard "
            "has one; joining them takes time that grows with their square)"
        )
    return cost, scans


def _png_chunks(f: Any) -> tuple[int, int]:
    """(what inflating its compressed chunks costs: zTXt, iCCP, a compressed iTXt; its chunks)
    for the PNG `f` is past the signature of: the chunks' headers walked, the compressed
    ones read and inflated to PNG_TEXT_LIMIT, as Pillow will."""
    texts = chunks = 0
    while chunks <= MAX_PNG_CHUNKS and len(head := f.read(8)) == 8:
        size, kind = struct.unpack(">I4s", head)
        chunks += 1
        if kind == b"IEND":
            break
        if kind in _PNG_COMPRESSED and size <= 2 * PNG_TEXT_LIMIT:
            texts += _inflated(kind, f.read(size)) * PNG_TEXT_COST
            f.seek(4, 1)  # the CRC
        else:  # a larger one is counted as a full one, and its bytes cost more still
            texts += PNG_TEXT_LIMIT * PNG_TEXT_COST if kind in _PNG_COMPRESSED else 0
            f.seek(size + 4, 1)  # the data and its CRC
    return texts, chunks


def _inflated(kind: bytes, body: bytes) -> int:
    """The bytes a PNG text or profile chunk inflates to (at most PNG_TEXT_LIMIT; 0 for an
    uncompressed iTXt or one that is not deflate)."""
    import zlib

    name, _, rest = body.partition(b"\x00")  # keyword (zTXt, iTXt) or profile name (iCCP)
    if kind == b"iTXt":
        if rest[:1] != b"\x01":  # the compression flag
            return 0
        rest = rest[2:].partition(b"\x00")[2].partition(b"\x00")[2]  # language, translation
    else:
        rest = rest[1:]  # the compression method
    try:
        return len(zlib.decompressobj().decompress(rest, PNG_TEXT_LIMIT))
    except zlib.error:
        return 0


def jpeg_markers(f: Any) -> tuple[int, int]:
    """(scans, Exif segments) of the JPEG `f` reads: upper bounds, counted in its raw bytes in
    one pass, stopping past MAX_JPEG_SCANS or MAX_EXIF_SEGMENTS. A scan starts with FF DA, and
    in entropy-coded data an FF is always followed by 00 or a restart marker, so every scan is
    counted; an Exif segment starts with FF E1, a length, "Exif" and two zeros, and Pillow
    skips junk between segments, so a walk from segment to segment would stop where it goes
    on. Bytes elsewhere (a thumbnail, a comment) can only add."""
    f.seek(0)
    scans = exif = 0
    tail = b""
    while scans <= MAX_JPEG_SCANS and exif <= MAX_EXIF_SEGMENTS and (chunk := f.read(1 << 20)):
        data = tail + chunk
        old = len(tail)  # a marker ending in the tail was counted with the chunk before
        scans += sum(m.end() > old for m in _SOS.finditer(data))
        exif += sum(m.end() > old for m in _EXIF.finditer(data))
        tail = data[-9:]  # the longest marker's length less one
    return scans, exif


def decode_pixels(im: Any, drafted: Any = None) -> int:
    """What `im` (from open_image) takes to open and decode, in decoded pixels: the opening's
    cost, a JPEG's scans at full size (SCAN_COST each), and the boxes of its tiles (a TIFF naming
    one strip 200,000 times decodes it as often: 43 s for an image that declared 4 M pixels;
    review, session 37), or its size where it declares none. `drafted`: the draft to apply
    first (a JPEG then decodes at that scale), as `draft(mode, size)` arguments."""
    scans = int(im.nnmark_scans * im.width * im.height * SCAN_COST)  # before any draft
    cost = im.nnmark_opening + scans
    if drafted is not None:
        with contextlib.suppress(OSError, ValueError):  # a mode the draft cannot reach: full
            im.draft(*drafted)
    boxes = sum(
        max(0, t[1][2] - t[1][0]) * max(0, t[1][3] - t[1][1])
        for t in (im.tile or ())
        if t[1] is not None
    )
    return cost + max(boxes, im.width * im.height)


#: The most entries a data folder and its sub-folders may list, in all: more images than
#: MAX_DATA_VALUES holds at any size, and a bound on the listing itself (millions of names were
#: listed and sorted before any check; review, session 36).
MAX_FOLDER_ENTRIES = 1 << 20


def list_entries(folder: Path, root: Path, listed: list[int]) -> list[Path]:
    """The entries of `folder`; `listed[0]` counts every folder's of one data set, refused
    past MAX_FOLDER_ENTRIES while they are listed."""
    out = []
    for entry in folder.iterdir():
        out.append(entry)
        listed[0] += 1
        if listed[0] > MAX_FOLDER_ENTRIES:
            raise NNMarkError(f"{root}: more than {MAX_FOLDER_ENTRIES:,} entries in its folders")
    return out


def split_indices(
    n: int, fractions: dict[str, float], seed: int = SPLIT_SEED
) -> dict[str, torch.Tensor]:
    """Disjoint index sets of a seeded permutation; `train` takes what the others leave."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name in ("test", "thief", "val"):
        k = int(round(fractions.get(name, 0.0) * n))
        out[name] = perm[start : start + k]
        start += k
    out["train"] = perm[start:]
    return out


def official_splits(n_train: int, n_total: int, seed: int = SPLIT_SEED) -> dict[str, torch.Tensor]:
    """Splits of a data set that ships a training and a test set (MNIST, CIFAR): the official
    test set is `test`; of the n_train training items, a seeded sixth is the `thief` split, a
    twelfth `val`, and the rest `train`."""
    perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    n_thief, n_val = n_train // 6, n_train // 12
    return {
        "thief": perm[:n_thief],
        "val": perm[n_thief : n_thief + n_val],
        "train": perm[n_thief + n_val :],
        "test": torch.arange(n_train, n_total),
    }


@dataclass
class DataBundle:
    """Tensors of a whole dataset plus index sets per split.

    x: float (N, C, H, W); y: long class labels (N,) for classification, or float masks
    (N, 1, H, W) in {0, 1} for segmentation.
    """

    name: str
    task: str
    x: torch.Tensor
    y: torch.Tensor
    splits: dict[str, torch.Tensor]
    num_classes: int
    meta: dict[str, str] = field(default_factory=dict)
    _hash: str | None = field(default=None, init=False, repr=False, compare=False)

    def __repr__(self) -> str:
        """The shape of the data, not its values (the default printed thousands of indices)."""
        sizes = ", ".join(f"{k} {len(v)}" for k, v in self.splits.items())
        return (
            f"DataBundle({self.name!r}, {self.task}, {len(self.x)} x "
            f"{tuple(self.x.shape[1:])}, {self.num_classes} classes, splits: {sizes})"
        )

    def content_hash(self, fresh: bool = False) -> str:
        """SHA-256 of the data itself (task, classes, every tensor, the splits): what a key
        records so that a verifier who re-derives key inputs from the data can check it holds
        the same data. Computed once per bundle; `fresh`: again, from the tensors as they are
        now (verification: a bundle changed in place after its first hash kept the old one,
        and a key's triggers were re-derived from images chosen for a never-marked model;
        review, session 35)."""
        if self._hash is None or fresh:
            h = hashlib.sha256(f"{self.task}|{self.num_classes}|".encode())
            for t in (self.x, self.y, *(self.splits[s] for s in sorted(self.splits))):
                h.update(f"{t.dtype}|{list(t.shape)}|".encode())
                # the array's own buffer: .tobytes() copied it whole first (2 GiB of a data set
                # at the loaders' bound took 4 GiB: red team, session 27); the same bytes
                h.update(np.ascontiguousarray(t.detach().cpu().numpy()).data)
            self._hash = h.hexdigest()
        return self._hash

    def ref(self) -> dict[str, str]:
        """What a key records of this data set: its kind (`folder`, not `folder:NAME`) and its
        content hash. A folder's name fed the key's secrets: the same images under two names
        made two marks from one key and seed, and a key told where the owner's data lay
        (determinism review, session 37); verification finds the data by its hash."""
        return {"name": self.name.partition(":")[0], "sha256": self.content_hash()}

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.x.shape[-1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    def indices(self, split: str, fraction: float = 1.0) -> torch.Tensor:
        """The items of a split (indices into x and y), optionally a seeded leading fraction: a
        view of the bundle's own index set, to read, not to modify."""
        if split not in self.splits:
            raise NNMarkError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        if not 0.0 < fraction <= 1.0:
            raise NNMarkError(f"data fraction must be in (0, 1], got {fraction}")
        idx = self.splits[split]
        return idx[: max(1, int(round(fraction * len(idx))))]

    def tensors(self, split: str, fraction: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) of a split, optionally a seeded leading fraction of it (a copy)."""
        idx = self.indices(split, fraction)
        return self.x[idx], self.y[idx]

    def loader(
        self,
        split: str,
        batch_size: int = 64,
        shuffle: bool = False,
        seed: int = 0,
        fraction: float = 1.0,
    ) -> DataLoader:
        x, y = self.tensors(split, fraction)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(
            TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=gen
        )

    def model_kwargs(self) -> dict[str, int]:
        """What a zoo model needs to fit this data."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
        }
