"""What each key here reads on models no key marked (a digits CNN and a BBBC039 U-Net as
initialised from seed 0), with its z-score where it has one, and a digest of every tensor its
scheme derives from it. Run with the nnmark that made the keys (d9f8ea1) to write
readings.json; tests/test_old_keys.py runs the same function with today's nnmark and compares.
A derivation that changed since shows in the digests (inputs, labels, projections, units,
masks, dithers) or in the reading (the positions tartaglione and watermas read).

    cd /tmp && PYTHONPATH=OLD_CHECKOUT python WORK/tests/data/keys_d9f8ea1/readings.py SHARED_DATA
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from nnmark import OwnerKey, load_data, new_model, verify
from nnmark.api import bound_scheme

cached = functools.cached_property

HERE = Path(__file__).parent


#: Derivations a bound scheme makes on first use (trigger sets, ST-DM's segments and
#: projections), read besides the tensors it holds once bound.
LAZY = ("x", "y", "groups", "perm", "u")


def part(v: Any) -> dict[str, Any]:
    scores = v.details.get("scores") or {}
    return {
        "scheme": v.scheme,
        "verdict": v.verdict,
        "statistic": v.statistic,
        "p_value": v.p_value,
        "n": v.n,
        "ber": v.ber,
        "queries": v.queries,
        "z": scores.get("z"),
    }


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def derived(scheme: Any) -> dict[str, str]:
    """A digest of every tensor the bound scheme derived from the key: its inputs, labels,
    projections, units, masks and targets (an untrained model answers a trigger set with one
    class, so its reading alone would not show a changed trigger)."""
    out = {k: digest(v) for k, v in vars(scheme).items() if isinstance(v, torch.Tensor)}
    for name in LAZY:
        if name not in out and isinstance(getattr(type(scheme), name, None), property | cached):
            value = getattr(scheme, name)
            if isinstance(value, torch.Tensor):
                out[name] = digest(value)
    shape = scheme.mark.data.get("shape") if scheme.mark.scheme == "uchida" else None
    if shape:  # Uchida's projection, as large as the host: derived when the host is read
        out["projection"] = digest(scheme.matrix(math.prod(shape[1:])))
    return dict(sorted(out.items()))


def readings(shared: Path) -> dict[str, list[dict[str, Any]]]:
    """One thread, as the readings were written (sums in another order differ in their last
    bits); the caller's thread count comes back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _readings(shared)
    finally:
        torch.set_num_threads(threads)


def _readings(shared: Path) -> dict[str, list[dict[str, Any]]]:
    digits = load_data("digits")
    seg = load_data(f"seg:{shared / 'seg-bbbc039'}")
    data = [digits, load_data(f"fashion-mnist:{shared / 'fashion-mnist'}"), seg]
    cnn, unet = new_model("cnn", digits, seed=0), new_model("unet", seg, seed=0)
    out = {}
    for path in sorted(HERE.glob("*.nnkey")):
        key = OwnerKey.load(path)
        v = verify(unet if path.stem == "segtrigger" else cnn, key, data=data)
        parts = v.parts or (v,)
        out[path.stem] = [
            part(p) | {"derived": derived(bound_scheme(key, i, data))} for i, p in enumerate(parts)
        ]
    return out


if __name__ == "__main__":
    (HERE / "readings.json").write_text(json.dumps(readings(Path(sys.argv[1])), indent=1) + "\n")
