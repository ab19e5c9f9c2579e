"""An image folder: one sub-folder per class (the layout most users already have)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnmark.data import DATASETS
from nnmark.data.base import (
    MAX_DATA_VALUES,
    MAX_DECODED_PIXELS,
    DataBundle,
    decode_pixels,
    list_entries,
    open_image,
    split_indices,
)
from nnmark.errors import NNMarkError

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@DATASETS.register("folder")
def load_folder(path: str | None, size: int = 32) -> DataBundle:
    """Images resized to size x size; grayscale unless any image has colour. Headers are read
    first (sizes and modes checked, the data's size bounded), then one image is decoded at a
    time: each decoded image was kept until the end (16 PNGs of 2 MB took 3.5 GB)."""

    if not path:
        raise NNMarkError("folder needs a path: --data folder:DIR")
    root = Path(path)
    if not root.is_dir():
        raise NNMarkError(f"folder not found: {root}")
    listed = [0]
    classes = sorted(p.name for p in list_entries(root, root, listed) if p.is_dir())
    if len(classes) < 2:
        raise NNMarkError(f"{root}: expected one sub-folder per class (found {len(classes)})")
    files = [
        (f, label)
        for label, c in enumerate(classes)
        for f in sorted(list_entries(root / c, root, listed))
        if f.suffix.lower() in EXTS
    ]
    if not files:
        raise NNMarkError(f"{root}: no images found")
    # one pass over the headers: each image's mode, and the pixels decoding it takes (a JPEG's
    # at the scale its draft decodes, and its scans at full size): ten thousand links to one
    # 355 KB PNG of 8192 x 8192 were hours of decoding (review, session 36)
    modes, pixels = [], 0
    for f, _ in files:
        with open_image(f) as im:  # the opening's cost is counted before Pillow reads it
            modes.append(im.mode)
            pixels += decode_pixels(im, (None, (size, size)))
        if pixels > MAX_DECODED_PIXELS:  # as they come: opening a file costs too
            raise NNMarkError(
                f"{root}: decoding its images takes more than {MAX_DECODED_PIXELS:,} pixels "
                f"(at {f.name}); resize them to about {size} x {size} first"
            )
    mode = "RGB" if any(m not in ("L", "1", "I;16", "I") for m in modes) else "L"
    values = len(files) * (3 if mode == "RGB" else 1) * size * size
    if values > MAX_DATA_VALUES:
        raise NNMarkError(
            f"{root}: {len(files):,} images make {values:,} values (at most {MAX_DATA_VALUES:,})"
        )
    channels = 3 if mode == "RGB" else 1
    # filled channels first: a channels-last array made contiguous after was a second copy
    arr = np.empty((len(files), channels, size, size), np.float32)
    decoded = 0
    for i, (f, _) in enumerate(files):
        with open_image(f) as im:
            # again: a file replaced since its header was read
            decoded += decode_pixels(im, (mode, (size, size)))
            if decoded > MAX_DECODED_PIXELS:
                raise NNMarkError(f"{root}: its images changed while they were read")
            try:
                img = np.asarray(im.convert(mode).resize((size, size)), dtype=np.float32)
            except (OSError, ValueError):
                raise NNMarkError(f"{f}: not a readable image") from None
            arr[i] = img.transpose(2, 0, 1) if mode == "RGB" else img
    arr /= 255.0
    x = torch.from_numpy(arr)
    y = torch.tensor([label for _, label in files], dtype=torch.long)
    splits = split_indices(len(y), {"test": 0.2, "thief": 0.15, "val": 0.05})
    return DataBundle(
        f"folder:{root.name}",
        "classification",
        x.contiguous(),
        y,
        splits,
        len(classes),
        meta={"classes": ",".join(classes)},
    )
