"""Shared by the black-box benchmarks: the digits suite (a plain CNN, unmarked CNNs of other
seeds, one marked CNN per black-box scheme) and the small segmentation pair, cached on disk so
the scripts train each model once.

Recipe (the tests' recipe, tests/conftest.py): digits CNN, 20 epochs, Adam 1e-3, seed 0; the
frontier mark is fine-tuned into the plain model instead (the paper's setting); its key
also carries a calibration on the unmarked CNNs, which no verdict reads since frontier's labels
are key coins (an exact null without calibration). Segmentation: BBBC039
tiles averaged down to 32 x 32, a width-8 U-Net, 20 epochs, lr 3e-3, batch 16.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model, train, verify
from nnmark.bench.cache import ModelCache
from nnmark.calibrate import calibrate
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle
from nnmark.provenance import fetch_timestamp
from nnmark.schemes import SCHEMES
from nnmark.schemes._trigger import black_box_schemes
from nnmark.testing.tsa import seen_now
from nnmark.verdict import Verdict

SHARED = SHARED_DATA
RECIPE = TrainConfig(epochs=20, seed=0)
SEG_RECIPE = TrainConfig(epochs=20, seed=0, lr=3e-3, batch_size=16)
OPTIONS = {"unrelated": {"source": f"fashion-mnist:{SHARED / 'fashion-mnist'}"}}
DEFAULT_CACHE = Path("/tmp/nnmark-blackbox-bench")


@dataclass
class Suite:
    data: DataBundle
    plain: nn.Module
    unmarked: list[nn.Module]
    marked: dict[str, tuple[nn.Module, OwnerKey]]
    #: the data sets the keys re-derive their inputs from (digits, and unrelated's source)
    key_data: tuple[DataBundle, ...] = ()
    #: a timestamp authority (nnmark.testing.tsa.LoopbackTSA): keys are stamped as owners would
    #: (it proves priority; the claims rest on the search cost either way)
    tsa: Any = None
    _stamped: dict[str, OwnerKey] = field(default_factory=dict)

    def verify(self, suspect: Any, key: OwnerKey) -> Verdict:
        """nnmark's verify with the suite's key data and, where a TSA is given, the key stamped."""
        if self.tsa is None:
            return verify(suspect, key, data=self.key_data)
        if key.commitment not in self._stamped:
            token = fetch_timestamp(key.commitment, self.tsa.url)
            self._stamped[key.commitment] = dataclasses.replace(key, timestamp=token)
        stamped = self._stamped[key.commitment]
        return verify(  # the suspect is seen now, after the owner stamped the key
            suspect,
            stamped,
            data=self.key_data,
            tsa_certs=[self.tsa.ca_cert_pem],
            suspect_seen=seen_now(),
        )


def cached(cache: Path, name: str, data: DataBundle, build: Callable[[], nn.Module]) -> nn.Module:
    """The model `name` from the bench's model cache (named by `name` and the nnmark version,
    `nnmark.bench.cache`), or built and stored there."""
    return ModelCache(cache).get(name, name, lambda: (build(), None, data))[0]


def cached_mark(
    cache: Path, name: str, data: DataBundle, build: Callable[[], tuple[nn.Module, OwnerKey]]
) -> tuple[nn.Module, OwnerKey]:
    """A marked model and its key, cached as `cached` does."""
    model, key = ModelCache(cache).get(name, name, lambda: (*build(), data), keyed=True)
    assert key is not None
    return model, key


def digits_suite(cache: Path = DEFAULT_CACHE, unmarked: int = 10, tsa: Any = None) -> Suite:
    data = load_data("digits")
    plain = cached(
        cache, "plain", data, lambda: train(new_model("cnn", data, seed=0), data, RECIPE)
    )
    others = [
        cached(
            cache,
            f"unmarked{s}",
            data,
            lambda s=s: train(  # type: ignore[misc]
                new_model("cnn", data, seed=s), data, TrainConfig(epochs=20, seed=s)
            ),
        )
        for s in range(100, 100 + unmarked)
    ]
    marked = {}
    for name in black_box_schemes("classification"):
        stitch = SCHEMES.get(name).needs_trained

        def build(name: str = name, stitch: bool = stitch) -> tuple[nn.Module, OwnerKey]:
            key = OwnerKey.new(f"owner {name}", nonce=f"{len(name):032x}")
            start = plain if stitch else new_model("cnn", data, seed=0)
            model, key = embed(
                start,
                data,
                name,
                options=OPTIONS.get(name),
                key=key,
                config=RECIPE,
            )
            return model, calibrate(key, others) if stitch else key

        marked[name] = cached_mark(cache, name, data, build)
    fashion = load_data(OPTIONS["unrelated"]["source"])
    return Suite(data, plain, others, marked, (data, fashion), tsa)


def seg32() -> DataBundle:
    full = load_data(f"seg:{SHARED / 'seg-bbbc039'}")
    x = F.avg_pool2d(full.x, 4)
    y = (F.avg_pool2d(full.y, 4) > 0.5).float()
    return DataBundle("seg32", "segmentation", x, y, full.splits, 1)


def seg_pair(cache: Path = DEFAULT_CACHE) -> tuple[DataBundle, nn.Module, nn.Module, OwnerKey]:
    """(seg32 data, plain U-Net, segtrigger-marked U-Net, key), as in the tests."""
    data = seg32()
    plain = cached(
        cache,
        "seg_plain",
        data,
        lambda: train(new_model("unet", data, seed=0, width=8), data, SEG_RECIPE),
    )

    def build() -> tuple[nn.Module, OwnerKey]:
        key = OwnerKey.new("seg owner", nonce="5e" * 16)
        return embed(
            new_model("unet", data, seed=0, width=8),
            data,
            "segtrigger",
            key=key,
            config=SEG_RECIPE,
        )

    marked, key = cached_mark(cache, "seg_segtrigger", data, build)
    return data, plain, marked, key


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())
