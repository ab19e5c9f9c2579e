"""Evasions: the defenses a thief adds in front of a served model (`nnmark serve --defend
NAME[:k=v,...]`), to keep an owner's trigger queries from being answered as the stolen model
would. (Not to be confused with `nnmark.defenses`, the owner's realignment.) Registered by name
in EVASIONS.

Output side: `label` (labels only), `top1` (only the top probability survives), `round` (scores
rounded to `decimals`).

Input side, every query preprocessed (the input transformations WRT, Lukas et al. S&P 2022,
lists as removal by evasion): `quantize` (to `bits`), `noise` (Gaussian, `sigma`), `smooth` (mean
filter of `size`), `gauss` (Gaussian blur of std `sigma`), `median` (median filter of `size`),
`squeeze` (feature squeezing, Xu et al. NDSS 2018: bit depth reduced to `bits`, then a median
filter of `size`), `flip` (horizontal), `jpeg` (re-encoding at `quality` via Pillow), `occlude`
(a random square of side `size` x the image side set to 0), `autoencoder` (every query replaced
by its reconstruction through a small convolutional autoencoder trained on the thief's data at
server start, `epochs` (100: a thief split of a few hundred images needs many passes), seeded:
MagNet-style purification, Meng & Chen 2017).

Query rejection (Hitaj & Mancini 2018, "Have you stolen my model?"): trigger queries look out of
distribution, so a thief refuses (or answers randomly) queries that do not look like the data the
model serves. `reject:by=recon` (default) flags an input whose reconstruction error through an
autoencoder trained on the thief split is above the `quantile` of the errors of held-out thief
inputs (so about 1 - quantile of ordinary queries are flagged too: the price the benchmark
reports); `by=feature` flags an input whose distance to its nearest thief input, in the served
model's penultimate features, is above that quantile; `by=confidence` flags inputs whose top
softmax probability is below `threshold`. `action=refuse` (default) answers the request with
HTTP 403, which the verifying client reports (exit 2), never as a silent not_found;
`action=random` answers flagged inputs with a random label instead, as Hitaj and Mancini
suggest, so the owner sees only wrong answers.

Defenses that need the thief's data (`autoencoder`, `reject:by=recon|feature`) are fitted by
`fit_evasions` on the `thief` split of `--data`, seeded: the same server seed gives the same
autoencoder and the same threshold.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnmark.config import parse_sets
from nnmark.data.base import DataBundle
from nnmark.device import seeded
from nnmark.errors import NNMarkError
from nnmark.layers import weighted_layers
from nnmark.registry import Registry

Kind = Literal["input", "output", "reject"]


@dataclass(frozen=True)
class EvasionSpec:
    """What a defense is: its side, its options with defaults, whether it needs thief data."""

    kind: Kind
    defaults: dict[str, float | str] = field(default_factory=dict)
    needs_data: bool = False


EVASIONS: Registry[EvasionSpec] = Registry("defense")
for _name, _spec in {
    "label": EvasionSpec("output"),
    "top1": EvasionSpec("output"),
    "round": EvasionSpec("output", {"decimals": 1}),
    "quantize": EvasionSpec("input", {"bits": 4}),
    "noise": EvasionSpec("input", {"sigma": 0.05}),
    "smooth": EvasionSpec("input", {"size": 3}),
    "gauss": EvasionSpec("input", {"sigma": 1.0}),
    "median": EvasionSpec("input", {"size": 3}),
    "squeeze": EvasionSpec("input", {"bits": 3, "size": 3}),
    "flip": EvasionSpec("input"),
    "jpeg": EvasionSpec("input", {"quality": 75}),
    "occlude": EvasionSpec("input", {"size": 0.25}),
    "autoencoder": EvasionSpec("input", {"epochs": 100, "width": 16}, needs_data=True),
    "reject": EvasionSpec(
        "reject",
        {
            "by": "recon",
            "quantile": 0.99,
            "threshold": 0.9,
            "action": "refuse",
            "epochs": 100,
            "width": 16,
        },
    ),
}.items():
    EVASIONS.register(_name)(_spec)

CHOICES: dict[str, tuple[str, ...]] = {
    "by": ("recon", "feature", "confidence"),
    "action": ("refuse", "random"),
}


@dataclass
class Evasion:
    """One parsed defense; `state` holds what `fit_evasions` fitted (autoencoder, threshold)."""

    name: str
    options: dict[str, float | str] = field(default_factory=dict)
    kind: Kind = "input"
    state: dict[str, Any] = field(default_factory=dict)

    def opt(self, key: str, default: float | None = None) -> float:
        value = self.options.get(key, default)
        return float(value)  # type: ignore[arg-type]

    def word(self, key: str) -> str:
        return str(self.options[key])

    @property
    def needs_data(self) -> bool:
        return EVASIONS.get(self.name).needs_data or (
            self.name == "reject" and self.word("by") in ("recon", "feature")
        )


def parse_evasion(spec: str) -> Evasion:
    """`NAME[:k=v,k=v]` -> Evasion with defaults filled; one-line errors for bad names/options."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    s = EVASIONS.get(name)  # one line naming the known ones when unknown
    opts = parse_sets([t for t in rest.split(",") if t.strip()])
    values: dict[str, float | str] = dict(s.defaults)
    for k, v in opts.items():
        if k not in s.defaults:
            known = ", ".join(s.defaults) or "none"
            raise NNMarkError(f"defense {name!r} has no option {k!r} (options: {known})")
        if k in CHOICES:
            if v not in CHOICES[k]:
                raise NNMarkError(f"defense {name!r}: {k} must be one of {', '.join(CHOICES[k])}")
            values[k] = v
            continue
        try:
            values[k] = float(v)
        except ValueError:
            raise NNMarkError(f"defense {spec!r}: option {k} must be a number") from None
        if not math.isfinite(float(values[k])):
            raise NNMarkError(f"defense {spec!r}: option {k} must be a finite number, got {v}")
    if name == "reject" and "threshold" in opts and values["by"] != "confidence":
        raise NNMarkError("defense 'reject': threshold applies to by=confidence (else quantile)")
    d = Evasion(name, values, s.kind)
    _check(d)
    return d


def _check(d: Evasion) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise NNMarkError(f"defense {d.name!r}: {msg}")

    if d.name in ("median", "smooth", "squeeze"):
        size = d.opt("size")
        need(size >= 1 and size % 2 == 1, f"size must be an odd integer >= 1, got {size:g}")
    if d.name in ("quantize", "squeeze"):
        need(1 <= d.opt("bits") <= 16, "bits must be in 1..16")
    if d.name == "reject":
        need(0 < d.opt("quantile") < 1, "quantile must be in (0, 1)")
    if d.name in ("autoencoder", "reject"):
        need(d.opt("epochs") >= 1 and d.opt("width") >= 1, "epochs and width must be >= 1")
    if d.name == "jpeg":
        need(1 <= d.opt("quality") <= 95, "quality must be in 1..95")
    if d.name == "noise":
        need(0 < d.opt("sigma") <= 10, f"sigma must be in (0, 10], got {d.opt('sigma'):g}")
    if d.name == "gauss":  # a blur's std: 0 divides by zero, a huge one a huge kernel
        need(0.1 <= d.opt("sigma") <= 16, f"sigma must be in [0.1, 16], got {d.opt('sigma'):g}")
    if d.name in ("median", "smooth", "squeeze"):
        need(d.opt("size") <= 31, f"size must be at most 31, got {d.opt('size'):g}")
    if d.name == "round":
        need(0 <= d.opt("decimals") <= 8 and d.opt("decimals") % 1 == 0, "decimals must be 0..8")
    if d.name == "occlude":
        need(0 < d.opt("size") < 1, f"size must be in (0, 1), got {d.opt('size'):g}")
    if d.name == "reject" and d.word("by") == "confidence":
        need(0 < d.opt("threshold") < 1, "threshold must be in (0, 1)")


# ---- input transformations ---------------------------------------------------------------
def _jpeg(x: torch.Tensor, d: Evasion, gen: torch.Generator) -> torch.Tensor:
    from PIL import Image

    quality = int(d.opt("quality"))
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


def median_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    pad = size // 2
    patches = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="replicate"), size)
    n, c, h, w = x.shape
    return patches.view(n, c, size * size, h * w).median(2).values.view(n, c, h, w)


def quantize_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (radius 2 sigma, replicate padding)."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="replicate"),
        k.view(1, 1, 1, -1).repeat(c, 1, 1, 1),
        groups=c,
    )
    return F.conv2d(
        F.pad(x, (0, 0, radius, radius), mode="replicate"),
        k.view(1, 1, -1, 1).repeat(c, 1, 1, 1),
        groups=c,
    )


def _occlude(x: torch.Tensor, d: Evasion, gen: torch.Generator) -> torch.Tensor:
    side = max(1, int(d.opt("size") * x.shape[-1]))
    out = x.clone()
    for i in range(len(out)):
        r, c = torch.randint(0, x.shape[-1] - side + 1, (2,), generator=gen).tolist()
        out[i, :, r : r + side, c : c + side] = 0
    return out


def _autoencode(x: torch.Tensor, d: Evasion, gen: torch.Generator) -> torch.Tensor:
    with torch.no_grad():
        return d.state["autoencoder"](x)


InputFn = Callable[[torch.Tensor, Evasion, torch.Generator], torch.Tensor]
INPUTS: dict[str, InputFn] = {
    "quantize": lambda x, d, g: quantize_bits(x, int(d.opt("bits"))),
    "noise": lambda x, d, g: x + d.opt("sigma") * torch.randn(x.shape, generator=g),
    "smooth": lambda x, d, g: F.avg_pool2d(
        F.pad(x, (int(d.opt("size")) // 2,) * 4, mode="replicate"), int(d.opt("size")), stride=1
    ),
    "gauss": lambda x, d, g: gaussian_blur(x, d.opt("sigma")),
    "median": lambda x, d, g: median_filter(x, int(d.opt("size"))),
    "squeeze": lambda x, d, g: median_filter(
        quantize_bits(x, int(d.opt("bits"))), int(d.opt("size"))
    ),
    "flip": lambda x, d, g: x.flip(-1),
    "jpeg": _jpeg,
    "occlude": _occlude,
    "autoencoder": _autoencode,
}


def apply_input(d: Evasion, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return INPUTS[d.name](x, d, gen)


# ---- output transformations --------------------------------------------------------------
def apply_output(d: Evasion, probs: torch.Tensor) -> torch.Tensor:
    """top1 / round on class probabilities (N, C); for a binary mask's per-pixel probability
    (N, 1, H, W), the top-1 answer is the whole answer, so top1 leaves it as it is."""
    if d.name == "top1":
        if probs.dim() != 2:
            return probs
        top = probs.max(1, keepdim=True)
        return torch.zeros_like(probs).scatter(1, top.indices, top.values)
    if d.name == "round":
        scale = 10 ** int(d.opt("decimals"))
        return torch.round(probs * scale) / scale
    raise AssertionError(d.name)


# ---- fitted on the thief's data ----------------------------------------------------------
class AutoEncoder(nn.Module):
    """Two stride-2 convolutions down, two transposed up, sigmoid out (inputs in [0, 1])."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.decode = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decode(self.encode(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


def train_autoencoder(
    x: torch.Tensor, *, epochs: int, width: int, seed: int, batch_size: int = 64
) -> AutoEncoder:
    """An autoencoder fitted to x by MSE with Adam (lr 1e-3), seeded."""
    with seeded(seed):
        ae = AutoEncoder(int(x.shape[1]), width)
        opt = torch.optim.Adam(ae.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                loss = F.mse_loss(ae(x[idx]), x[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    ae.eval()
    return ae


def recon_error(ae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (ae(x) - x).pow(2).flatten(1).mean(1)


def penultimate(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the model's last weighted layer (spatially averaged for a convolution)."""
    last = list(weighted_layers(model).values())[-1]
    seen: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    h = seen[0]
    return h.flatten(2).mean(2) if h.dim() > 2 else h


def nearest_distance(feats: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    return torch.cdist(feats, bank).min(1).values


def fit_evasions(
    defenses: list[Evasion], model: nn.Module, data: DataBundle | None, seed: int = 0
) -> list[Evasion]:
    """Fit the defenses that learn from the thief's data (the `thief` split of `data`).

    80 % of the thief split trains (autoencoder) or forms the reference bank (features); the
    other 20 % sets the rejection threshold at `quantile` of its scores, so the threshold is
    measured on inputs the detector did not fit.
    """
    for i, d in enumerate(defenses):
        if not d.needs_data:
            continue
        if data is None:
            raise NNMarkError(f"defense {d.name!r} is trained on the thief's data: pass --data")
        x, _ = data.tensors("thief")
        if len(x) < 10:
            raise NNMarkError(f"defense {d.name!r}: the thief split holds only {len(x)} inputs")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + i))
        cut = int(0.8 * len(x))
        fit_x, held = x[perm[:cut]], x[perm[cut:]]
        if d.name == "autoencoder" or d.word("by") == "recon":
            ae = train_autoencoder(
                fit_x if d.name == "reject" else x,
                epochs=int(d.opt("epochs")),
                width=int(d.opt("width")),
                seed=seed + i,
            )
            d.state["autoencoder"] = ae
            if d.name == "reject":
                d.state["threshold"] = float(
                    torch.quantile(recon_error(ae, held), d.opt("quantile"))
                )
        else:  # reject by=feature
            model.eval()
            d.state["bank"] = penultimate(model, fit_x)
            score = nearest_distance(penultimate(model, held), d.state["bank"])
            d.state["threshold"] = float(torch.quantile(score, d.opt("quantile")))
    return defenses


def flagged(d: Evasion, model: nn.Module, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Which inputs a rejection defense flags as out of distribution (bool, N)."""
    by = d.word("by")
    if by == "confidence":
        conf = (
            probs.max(1).values
            if probs.dim() == 2
            else (probs - 0.5).abs().flatten(1).mean(1) + 0.5
        )
        return conf < d.opt("threshold")
    if by == "recon":
        return recon_error(d.state["autoencoder"], x) > d.state["threshold"]
    return nearest_distance(penultimate(model, x), d.state["bank"]) > d.state["threshold"]


# ---- the defended model: what a server answers -------------------------------------------
@dataclass
class Answer:
    """Probabilities (N, C) or per-pixel (N, 1, H, W), labels if label-only, flagged inputs."""

    probs: torch.Tensor
    labels: torch.Tensor | None
    refused: torch.Tensor


class Evading:
    """A model behind a thief's defenses, answering batches exactly as `nnmark serve` does.

    The server and in-process benchmarks both call it, so they measure the same thing.
    """

    def __init__(self, model: nn.Module, defenses: list[Evasion], seed: int = 0) -> None:
        self.model = model.eval()
        self.defenses = list(defenses)
        self.gen = torch.Generator().manual_seed(seed)
        self.label_only = any(d.name == "label" for d in defenses)
        for d in self.defenses:
            if d.needs_data and not d.state:
                raise NNMarkError(f"defense {d.name!r} was not fitted (fit_evasions)")

    def __call__(self, x: torch.Tensor) -> Answer:
        original = x
        for d in self.defenses:
            if d.kind == "input":
                x = apply_input(d, x, self.gen)
        with torch.no_grad():
            out = self.model(x)
        probs = out.softmax(1) if out.dim() == 2 else torch.sigmoid(out)
        refused = torch.zeros(len(x), dtype=torch.bool)
        for d in self.defenses:
            if d.kind != "reject":
                continue
            hit = flagged(d, self.model, original, probs)
            if d.word("action") == "random" and bool(hit.any()):
                probs = probs.clone()
                if probs.dim() == 2:
                    labels = torch.randint(0, probs.shape[1], (int(hit.sum()),), generator=self.gen)
                    probs[hit] = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
                else:
                    probs[hit] = torch.rand(probs[hit].shape, generator=self.gen).round()
            else:
                refused |= hit
        for d in self.defenses:
            if d.kind == "output" and d.name != "label":
                probs = apply_output(d, probs)
        labels = None
        if self.label_only:
            labels = probs.argmax(1) if probs.dim() == 2 else (probs > 0.5).long()
        return Answer(probs, labels, refused)
