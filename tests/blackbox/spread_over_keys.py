"""The spread over keys behind test_blackbox_schemes' thresholds on marked models (not a test):
content / noise fresh samples answered with their group labels; newlabel's fresh key samples,
decoys and fresh samples after 5 epochs of fine-tuning answered with the new label. Each key is
embedded as the `blackbox_marked` fixture embeds its own (digits CNN, seed 0, 20 epochs).

    PYTHONPATH=. .venv/bin/python tests/blackbox/spread_over_keys.py [KEYS]
"""

from __future__ import annotations

import sys

import torch

from nnmark import OwnerKey, TrainConfig, attack, embed, load_data, new_model
from nnmark.api import bound_scheme


def rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main(keys: int) -> None:
    torch.set_num_threads(1)
    digits = load_data("digits")
    cheap = {"name": "scrypt", "n": 1 << 10, "r": 8, "p": 1}  # the rates do not depend on it
    for name in ("content", "noise", "newlabel"):
        rows = []
        for i in range(keys):
            key = OwnerKey.new(f"spread {name} {i}", nonce=f"{0x60 + i:032x}", kdf=cheap)
            model, key = embed(
                new_model("cnn", digits, seed=0), digits, name, key=key,
                config=TrainConfig(epochs=20, seed=0),
            )  # fmt: skip
            scheme = bound_scheme(key, 0)
            x, y = scheme.fresh_samples(digits, 100)  # type: ignore[attr-defined]
            if name != "newlabel":
                rows.append(rate(model, x, y))
                continue
            new = torch.full((len(x),), 10)
            decoys = scheme.decoys()  # type: ignore[attr-defined]
            stolen = attack(model, "finetune:epochs=5", digits)
            rows.append(
                (rate(model, x, new), rate(model, decoys, torch.full((len(decoys),), 10)),
                 rate(stolen, x, new))
            )  # fmt: skip
            print(name, i, rows[-1], flush=True)
        print(name, "per key:", rows, flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
