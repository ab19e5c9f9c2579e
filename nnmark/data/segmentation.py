"""Binary segmentation pairs `DIR/images/*` + `DIR/masks/<same stem>.png` (BBBC039's layout).

Images are min-max normalised per image, halved in resolution and cut into 128x128 tiles; a
mask pixel is foreground when its first channel is > 0. Splits are by image, never by tile, so
no image leaks from train into test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnmark.data import DATASETS
from nnmark.data.base import (
    MAX_DATA_VALUES,
    MAX_DECODED_PIXELS,
    SPLIT_SEED,
    DataBundle,
    decode_pixels,
    list_entries,
    open_image,
)
from nnmark.errors import NNMarkError

TILE = 128
DOWNSCALE = 2


def _tiles(t: torch.Tensor, tile: int) -> torch.Tensor:
    c, h, w = t.shape
    rows, cols = h // tile, w // tile
    t = t[:, : rows * tile, : cols * tile]
    t = t.reshape(c, rows, tile, cols, tile).permute(1, 3, 0, 2, 4)
    return t.reshape(rows * cols, c, tile, tile)


def _tiles_of(im: Any) -> int:
    """The tiles an image of this size gives."""
    side = TILE * DOWNSCALE
    return int((im.height // side) * (im.width // side))


def _normalised(img: np.ndarray, path: Path) -> np.ndarray:
    """`img` min-max normalised to 0..1. A float image (TIFF mode F) may hold NaN or inf, or
    span past float32's range: each made every tile NaN, and training then said "diverged ...
    lower --lr" (review); refused naming the file."""
    if not np.isfinite(img).all():
        raise NNMarkError(f"{path}: pixel values that are not finite numbers (NaN or inf)")
    with np.errstate(over="ignore", invalid="ignore"):
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
    if not np.isfinite(img).all():
        raise NNMarkError(f"{path}: pixel values spanning more than float32 holds")
    return img


@DATASETS.register("seg")
def load_segmentation(path: str | None) -> DataBundle:
    """Headers first (sizes checked, the tiles' values bounded before any pixel is decoded),
    then one pair at a time."""
    if not path:
        raise NNMarkError("seg needs a folder: --data seg:DIR (with images/ and masks/)")
    root = Path(path)
    img_dir, mask_dir = root / "images", root / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise NNMarkError(f"{root}: expected sub-folders images/ and masks/")
    # counted as they are listed: 100,000 links took 38 s and 528 MB (review, session 37)
    images = sorted(p for p in list_entries(img_dir, root, [0]) if p.is_file())
    if len(images) < 4:
        raise NNMarkError(f"{img_dir}: need at least 4 images, found {len(images)}")
    tiles, pixels = 0, 0
    for p in images:
        mask_path = mask_dir / (p.stem + ".png")
        if not mask_path.is_file():
            raise NNMarkError(f"{p.name}: no mask {mask_path.name} in {mask_dir}")
        with open_image(p) as im, open_image(mask_path) as mk:
            tiles += _tiles_of(im)
            pixels += decode_pixels(im) + decode_pixels(mk)  # as if decoded, tile or none
        if pixels > MAX_DECODED_PIXELS:  # as they come: opening a file costs too
            raise NNMarkError(
                f"{root}: decoding its images and masks takes more than "
                f"{MAX_DECODED_PIXELS:,} pixels (at {p.name})"
            )
    if 2 * tiles * TILE * TILE > MAX_DATA_VALUES:  # images and masks
        raise NNMarkError(
            f"{root}: {tiles:,} tiles of {TILE} x {TILE} make more than {MAX_DATA_VALUES:,} values"
        )
    decoded = 0
    xs, ys, owner = [], [], []
    for i, p in enumerate(images):
        mask_path = mask_dir / (p.stem + ".png")
        try:
            with open_image(p) as im, open_image(mask_path) as mk:
                if not _tiles_of(im):  # 1 x 1 was a RuntimeError from the pooling
                    continue
                decoded += decode_pixels(im) + decode_pixels(mk)  # replaced since?
                if decoded > MAX_DECODED_PIXELS:
                    raise NNMarkError(f"{root}: its images changed while they were read")
                img = np.asarray(im)
                mask = np.asarray(mk)
        except (OSError, ValueError):
            raise NNMarkError(f"{p.name}: unreadable image or mask") from None
        # the channels' mean straight from the decoded values: a float copy of every channel
        # first took 3 GB for one 8192 x 8192 RGBA image (review, session 36); the same sums
        img = img.mean(-1, dtype=np.float32) if img.ndim == 3 else img.astype(np.float32)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if img.shape != mask.shape:
            raise NNMarkError(f"{p.name}: image {img.shape} and mask {mask.shape} differ in size")
        img = _normalised(img, p)
        ti = F.avg_pool2d(torch.from_numpy(img)[None, None], DOWNSCALE)[0]
        tm = F.max_pool2d(torch.from_numpy((mask > 0).astype(np.float32))[None, None], DOWNSCALE)[0]
        xt, yt = _tiles(ti, TILE), _tiles(tm, TILE)
        xs.append(xt)
        ys.append(yt)
        owner.extend([i] * len(xt))
    if not xs:
        raise NNMarkError(f"{root}: images smaller than {TILE * DOWNSCALE} pixels")
    x, y = torch.cat(xs), torch.cat(ys)
    n_img = len(images)
    perm = torch.randperm(n_img, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    n_test, n_thief, n_val = max(1, n_img * 3 // 17), max(1, n_img * 3 // 17), max(1, n_img // 17)
    groups = {
        "test": perm[:n_test],
        "thief": perm[n_test : n_test + n_thief],
        "val": perm[n_test + n_thief : n_test + n_thief + n_val],
        "train": perm[n_test + n_thief + n_val :],
    }
    owner_t = torch.tensor(owner)
    splits = {
        k: torch.nonzero(torch.isin(owner_t, torch.tensor(v))).flatten() for k, v in groups.items()
    }
    return DataBundle(f"seg:{root.name}", "segmentation", x.contiguous(), y.contiguous(), splits, 1)
