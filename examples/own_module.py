"""Verify a mark in your own `nn.Module` class and in a plain weights-only state dict.

    python examples/own_module.py --out /tmp/own
    nnmark verify /tmp/own/weights.pt --key /tmp/own/owner.nnkey

White-box verification reads named tensors only, so any module whose marked layer has the name
(and shape) recorded in the key works, whatever its class. This trains a marked zoo CNN on
digits (a few seconds), copies its marked layer into a class of your own, verifies both that
and a fresh (unmarked) instance, then saves the marked weights as a plain `torch.save` state
dict, which `nnmark verify` reads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import nnmark
from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model


class MyNet(nn.Module):  # your own class: only the marked layer's name and shape matter
    def __init__(self) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)


def main(out: Path) -> dict[str, str]:
    data = load_data("digits")
    marked, key = embed(
        new_model("cnn", data, seed=0),
        data,
        "uchida",
        bits=64,
        # a fixed nonce keeps this example's key the same every run; a real key draws it at
        # random (OwnerKey.new("me")): the nonce is the key's only secret
        key=OwnerKey.new("me", nonce="00" * 16),
        config=TrainConfig(epochs=5),
    )
    layer = key.marks[0].layer  # "conv3"

    mine = MyNet()
    mine.get_submodule(layer).load_state_dict(marked.get_submodule(layer).state_dict())
    verdicts = {
        "own class": nnmark.verify(mine, key).verdict,  # found
        "fresh weights": nnmark.verify(MyNet(), key).verdict,  # not_found
    }
    out.mkdir(parents=True, exist_ok=True)
    torch.save(marked.state_dict(), out / "weights.pt")  # a plain weights-only state dict
    key.save(out / "owner.nnkey")
    for what, verdict in verdicts.items():
        print(f"{what}: {verdict}")
    return verdicts


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/own"))
    main(ap.parse_args().out)
