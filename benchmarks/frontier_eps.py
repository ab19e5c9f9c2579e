"""How many true and false adversaries each step of frontier's FGSM ladder leaves, per model.

The digits CNN and MLP (seed 0, TrainConfig's default 20 epochs: the tests' plain_cnn is the
CNN) and the tiny ViT of tests/integrations/test_hf.py (5 epochs of the plain transformers
Trainer, as its plain_vit): FGSM at every step of nnmark.schemes.frontier's ladder on the
training images each model answers right, how many it fools (true adversaries) and how many it
leaves right (false ones); and the step a default frontier key (`eps` unset, 200 key inputs: 100
of each) records when planned on the model.

    python benchmarks/frontier_eps.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from nnmark import OwnerKey, TrainConfig, load_data, new_model, train
from nnmark.data.base import DataBundle
from nnmark.schemes.frontier import EPS_DOWN, EPS_START, EPS_UP, Frontier, FrontierConfig, fgsm

from _common import write_results

CREATED = "2026-01-01T00:00:00+00:00"  # fixed: a rerun plans the same keys
STEPS = sorted({*EPS_DOWN, EPS_START, *EPS_UP}, reverse=True)


def _vit(digits: DataBundle) -> nn.Module:
    """The test's plain ViT, on its scores (frontier is planned on `Logits`)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integrations"))
    import hf_user as hf

    hf.quiet()
    model = hf.tiny_vit()
    x, y = digits.tensors("train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.transformers.Trainer(
            model=model, args=hf.args(Path(tempfile.mkdtemp()), 5), train_dataset=hf.Images(x, y)
        ).train()
    return hf.Logits(model.eval())


def counts(model: nn.Module, digits: DataBundle) -> dict[str, object]:
    x, y = digits.tensors("train")
    with torch.no_grad():
        right = model(x).argmax(1) == y
    x, y = x[right], y[right]
    steps = []
    for eps in STEPS:
        adv = fgsm(model, x, y, eps)
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        steps.append({"eps": eps, "true": int(fooled.sum()), "false": int((~fooled).sum())})
    key = OwnerKey.new("frontier eps", nonce="4f" * 16, created=CREATED)
    mark = Frontier.plan(model, key, FrontierConfig(), data=digits)
    return {"images": len(right), "right": len(y), "steps": steps, "picked": mark.config["eps"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    digits = load_data("digits")
    models = {
        arch: train(new_model(arch, digits, seed=0), digits, TrainConfig(seed=0))
        for arch in ("cnn", "mlp")
    }
    models["tiny ViT"] = _vit(digits)
    rows = {}
    for name, model in models.items():
        model.eval()
        rows[name] = counts(model, digits)
        print(name, rows[name], flush=True)
    lines = [
        "FGSM at each step of nnmark.schemes.frontier's ladder on the digits training images each "
        "model answers right: true adversaries (fooled) / false ones (still right). A default key "
        "(200 inputs) needs 100 of each; `picked`: the step it records (planned on the model, "
        f"one key). {time.time() - start:.0f} s (1 torch thread).",
        "",
        "| model | right | " + " | ".join(f"{e}" for e in STEPS) + " | picked |",
        "|---|---|" + "---|" * len(STEPS) + "---|",
    ]
    for name, r in rows.items():
        cells = " | ".join(f"{s['true']} / {s['false']}" for s in r["steps"])  # type: ignore[attr-defined]
        lines.append(f"| {name} | {r['right']} of {r['images']} | {cells} | {r['picked']} |")
    write_results("frontier_eps", {"steps": STEPS, "models": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
