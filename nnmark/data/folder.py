"""An image folder: one sub-folder per class (the layout most users already have)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnmark.data import DATASETS
from nnmark.data.base import DataBundle, split_indices
from nnmark.errors import NNMarkError

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@DATASETS.register("folder")
def load_folder(path: str | None, size: int = 32) -> DataBundle:
    """Images resized to size x size; grayscale unless any image has colour."""
    from PIL import Image, UnidentifiedImageError

    if not path:
        raise NNMarkError("folder needs a path: --data folder:DIR")
    root = Path(path)
    if not root.is_dir():
        raise NNMarkError(f"folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise NNMarkError(f"{root}: expected one sub-folder per class (found {len(classes)})")
    files = [
        (f, label)
        for label, c in enumerate(classes)
        for f in sorted((root / c).iterdir())
        if f.suffix.lower() in EXTS
    ]
    if not files:
        raise NNMarkError(f"{root}: no images found")
    images = []
    for f, _ in files:
        try:
            images.append(Image.open(f))
        except (UnidentifiedImageError, OSError):
            raise NNMarkError(f"{f}: not a readable image") from None
    mode = "RGB" if any(im.mode not in ("L", "1", "I;16", "I") for im in images) else "L"
    arr = np.stack(
        [
            np.asarray(im.convert(mode).resize((size, size)), dtype=np.float32) / 255.0
            for im in images
        ]
    )
    x = torch.from_numpy(arr)
    x = x.unsqueeze(1) if mode == "L" else x.permute(0, 3, 1, 2)
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
