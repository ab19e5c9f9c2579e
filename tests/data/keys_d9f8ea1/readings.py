"""What each key here reads on models no key marked: a digits CNN and a BBBC039 U-Net as
initialised from seed 0. Run with the nnmark that made the keys (d9f8ea1) to write
readings.json; tests/test_old_keys.py runs the same function with today's nnmark and compares.
Every secret a key derives (projections, positions, masks, dithers, triggers and their labels)
enters what it reads, so a derivation that changed since reads otherwise.

    cd /tmp && PYTHONPATH=OLD_CHECKOUT python WORK/tests/data/keys_d9f8ea1/readings.py SHARED_DATA
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from nnmark import OwnerKey, load_data, new_model, verify

HERE = Path(__file__).parent


def part(v: Any) -> dict[str, Any]:
    return {
        "scheme": v.scheme,
        "verdict": v.verdict,
        "statistic": v.statistic,
        "p_value": v.p_value,
        "n": v.n,
        "ber": v.ber,
        "queries": v.queries,
    }


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
        out[path.stem] = [part(p) for p in (v.parts or (v,))]
    return out


if __name__ == "__main__":
    (HERE / "readings.json").write_text(json.dumps(readings(Path(sys.argv[1])), indent=1) + "\n")
