"""Defenses a thief adds in front of a served model (`nnmark serve --defend NAME[:k=v]`).

Output side: `label` (labels only), `top1` (only the top probability survives), `round` (scores
rounded to `decimals`). Input side (every query is preprocessed): `quantize` (bits), `noise`
(sigma), `smooth` (mean filter of `size`), `median` (median filter of `size`), `flip`
(horizontal), `jpeg` (re-encoding at `quality` via Pillow), `occlude` (a random square of
`size` fraction set to 0). Query rejection (Hitaj & Mancini 2018): `reject` refuses queries
whose top softmax probability is below `threshold` (out-of-distribution looking inputs).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnmark.config import parse_sets
from nnmark.errors import NNMarkError


@dataclass
class Defense:
    name: str
    options: dict[str, float] = field(default_factory=dict)
    kind: str = "input"  # input | output | reject

    def opt(self, key: str, default: float) -> float:
        return float(self.options.get(key, default))


def _jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    out = []
    for img in x:
        arr = (img.clamp(0, 1) * 255).round().byte().numpy()
        pil = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        back = np.asarray(Image.open(buf), dtype=np.float32) / 255.0
        back = back[None] if back.ndim == 2 else back.transpose(2, 0, 1)
        out.append(torch.from_numpy(back.copy()))
    return torch.stack(out)


def _median(x: torch.Tensor, size: int) -> torch.Tensor:
    pad = size // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size)
    n, c, h, w = x.shape
    return patches.view(n, c, size * size, h * w).median(2).values.view(n, c, h, w)


def apply_input(d: Defense, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if d.name == "quantize":
        levels = 2 ** int(d.opt("bits", 4)) - 1
        return torch.round(x.clamp(0, 1) * levels) / levels
    if d.name == "noise":
        return x + d.opt("sigma", 0.05) * torch.randn(x.shape, generator=gen)
    if d.name == "smooth":
        k = int(d.opt("size", 3))
        return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    if d.name == "median":
        return _median(x, int(d.opt("size", 3)))
    if d.name == "flip":
        return x.flip(-1)
    if d.name == "jpeg":
        return _jpeg(x, int(d.opt("quality", 75)))
    if d.name == "occlude":
        side = max(1, int(d.opt("size", 0.25) * x.shape[-1]))
        out = x.clone()
        for i in range(len(out)):
            r, c = torch.randint(0, x.shape[-1] - side + 1, (2,), generator=gen).tolist()
            out[i, :, r : r + side, c : c + side] = 0
        return out
    raise AssertionError(d.name)


def apply_output(d: Defense, probs: torch.Tensor) -> torch.Tensor:
    if d.name == "top1":
        top = probs.max(1, keepdim=True)
        return torch.zeros_like(probs).scatter(1, top.indices, top.values)
    if d.name == "round":
        scale = 10 ** int(d.opt("decimals", 1))
        return torch.round(probs * scale) / scale
    raise AssertionError(d.name)


KINDS: dict[str, str] = {
    **{n: "input" for n in ("quantize", "noise", "smooth", "median", "flip", "jpeg", "occlude")},
    "top1": "output",
    "round": "output",
    "label": "output",
    "reject": "reject",
}


def parse_defense(spec: str) -> Defense:
    """`NAME[:k=v,k=v]` -> Defense, with a one-line error for unknown names or options."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    if name not in KINDS:
        raise NNMarkError(f"unknown defense {name!r} (known: {', '.join(sorted(KINDS))})")
    opts = parse_sets([t for t in rest.split(",") if t.strip()])
    try:
        values = {k: float(v) for k, v in opts.items()}
    except ValueError:
        raise NNMarkError(f"defense {spec!r}: options must be numbers") from None
    return Defense(name, values, KINDS[name])


Pipeline = Callable[[torch.Tensor], Any]
