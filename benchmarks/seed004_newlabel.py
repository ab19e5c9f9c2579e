"""Seed 004 (Zhong et al., PAKDD 2020) on MNIST: a new label (newlabel) vs Zhang et al.'s
trigger sets (content, noise), key accuracy after fine-tuning, on freshly made key samples, and a
beta sweep; plus, on digits, why the quick bench saw newlabel's key accuracy fall to 0.

CPU protocol (stated, not the paper's): MNIST, the zoo CNN, the owner trains on a seeded 10 %
of the training split (4,500 images) for `--epochs` epochs (Adam 1e-3, cosine, seed 0); the
thief fine-tunes with the attack suite's `finetune` (all layers, Adam 1e-3, the thief split,
never seen by the owner) on 10 % of it (1,000 images) for 5 epochs, and, as a gentler thief,
with SGD (lr 0.01, momentum 0.9). Accuracies are on the first 2,000 test images; key accuracy
on the 50 committed triggers and on 500 *fresh* key samples made with the same key from test
images (the paper's "newly generated key samples"). Seed 004's MNIST figures (their protocol,
full data): newlabel normal 99.09 % (97.94 before fine-tuning), key samples 99.92 % (99.89);
Zhang et al. 99.07 % (97.88), key 99.88 % (99.61).

    .venv/bin/python benchmarks/seed004_newlabel.py [--epochs 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _blackbox import DEFAULT_CACHE, cached_mark
from torch import nn

from nnmark import OwnerKey, TrainConfig, attack, embed, load_data, new_model, train, verify
from nnmark.api import bound_scheme
from nnmark.data import SHARED_DATA
from nnmark.data.base import DataBundle
from nnmark.schemes._trigger import TriggerScheme
from nnmark.schemes.newlabel import NewLabel, NewLabelConfig
from nnmark.train import fit

from _common import write_results

MNIST = SHARED_DATA / "mnist"
ATTACKS = {
    "adam": "finetune:epochs=5,fraction=0.1",
    "sgd": "finetune:epochs=5,fraction=0.1,optimizer=sgd,lr=0.01",
}
BETAS = (0.1, 0.25, 0.5, 1.0)
SEED = {"newlabel": (99.92, 99.89, 99.09, 97.94), "zhang": (99.88, 99.61, 99.07, 97.88)}


@torch.no_grad()
def share(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def measure(
    model: nn.Module, key: OwnerKey, data: DataBundle, test: tuple[torch.Tensor, torch.Tensor]
) -> dict[str, Any]:
    scheme = bound_scheme(key, 0, data)
    assert isinstance(scheme, TriggerScheme)
    fx, fy = scheme.fresh_samples(data, 500, seed=7)
    v = verify(model, key, data=data)
    return {
        "normal": share(model, *test),
        "key": share(model, scheme.x, scheme.y),
        "fresh": share(model, fx, fy),
        "verdict": v.verdict,
        "p_value": v.p_value,
        "queries": v.queries,
    }


def mnist_part(epochs: int, cache: Path) -> dict[str, Any]:
    data = load_data(f"mnist:{MNIST}")
    xt, yt = data.tensors("test")
    test = (xt[:2000], yt[:2000])
    recipe = TrainConfig(epochs=epochs, seed=0, fraction=0.1)
    runs: dict[str, Any] = {}
    marks = [("content", {}), ("noise", {})] + [("newlabel", {"beta": b}) for b in BETAS]
    for name, opts in marks:
        label = name + "".join(f"_{k}{v}" for k, v in opts.items())
        t0 = time.perf_counter()

        def build(name: str = name, opts: dict[str, float] = opts) -> tuple[nn.Module, OwnerKey]:
            key = OwnerKey.new("seed004 owner", nonce="04" * 16)
            return embed(
                new_model("cnn", data, seed=0), data, name, options=opts, key=key, config=recipe
            )

        model, key = cached_mark(cache, f"mnist_e{epochs}_{label}", data, build)
        row: dict[str, Any] = {
            "scheme": name,
            "options": opts,
            "before": measure(model, key, data, test),
        }
        for thief, spec in ATTACKS.items():
            row[thief] = measure(attack(model, spec, data, seed=1), key, data, test)
        row["seconds"] = time.perf_counter() - t0
        runs[label] = row
        print(label, {k: row[k] for k in ("before", "adam")}, flush=True)
    plain = train(new_model("cnn", data, seed=0), data, recipe)
    return {"runs": runs, "plain_normal": share(plain, *test)}


def head_and_features(model: nn.Module, stolen: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Margin of the extra class on key samples, with the thief's features or head swapped in:
    which part of the fine-tune lowered it."""

    def feats(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(m.conv1(x))
        h = F.max_pool2d(F.relu(m.conv2(h)), 2)
        h = F.max_pool2d(F.relu(m.conv3(h)), 2)
        return F.relu(m.fc1(h.flatten(1)))

    out = {}
    with torch.no_grad():
        for label, fm, hm in [
            ("owner features, owner head", model, model),
            ("thief features, owner head", stolen, model),
            ("owner features, thief head", model, stolen),
            ("thief features, thief head", stolen, stolen),
        ]:
            logits = hm.fc2(feats(fm, x))
            out[label] = float((logits[:, -1] - logits[:, :-1].max(1).values).mean())
        out["extra row weight change (mean)"] = float(
            (stolen.fc2.weight[-1] - model.fc2.weight[-1]).mean()
        )
        out["other rows |change| (mean)"] = float(
            (stolen.fc2.weight[:-1] - model.fc2.weight[:-1]).abs().mean()
        )
        out["key-sample feature L1 (owner)"] = float(feats(model, x).sum(1).mean())
    return out


class FixedSetNewLabel(NewLabel):
    """newlabel as it was before this benchmark: a fixed set of key samples mixed in."""

    batches = TriggerScheme.batches  # type: ignore[assignment]


def digits_part() -> dict[str, Any]:
    data = load_data("digits")
    recipe = TrainConfig(epochs=10, seed=0)  # the quick bench's recipe
    out: dict[str, Any] = {}
    variants = {
        "before: fixed 50 key samples, beta 0.5, 4 per batch": (FixedSetNewLabel, 0.5, 4),
        "fixed 50 key samples, beta 1.0, 8 per batch": (FixedSetNewLabel, 1.0, 8),
        "fresh key samples per batch, beta 0.5, 8 per batch": (NewLabel, 0.5, 8),
        "now: fresh key samples per batch, beta 1.0, 8 per batch": (NewLabel, 1.0, 8),
    }
    for label, (cls, beta, per_batch) in variants.items():
        key = OwnerKey.new("quick owner", nonce="0b" * 16)
        base = new_model("cnn", data, seed=0)
        mark = NewLabel.plan(base, key, NewLabelConfig(beta=beta, per_batch=per_batch), data=data)
        key = key.with_mark(mark)
        model = fit(copy.deepcopy(base), data, [cls(mark)], recipe)
        scheme = NewLabel(mark)
        fx, fy = scheme.fresh_samples(data, 200)
        row: dict[str, Any] = {
            "committed": share(model, scheme.x, scheme.y),
            "fresh": share(model, fx, fy),
        }
        for ep in (1, 5, 10):
            stolen = attack(model, f"finetune:epochs={ep}", data, seed=1)
            row[f"finetune {ep}"] = {
                "committed": share(stolen, scheme.x, scheme.y),
                "fresh": share(stolen, fx, fy),
                "verdict": verify(stolen, key).verdict,
            }
            if ep == 5:
                row["diagnosis"] = head_and_features(model, stolen, scheme.x)
        out[label] = row
        print(label, row["finetune 5"], flush=True)
    return out


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def run(epochs: int, cache: Path) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    digits = digits_part()
    mnist = mnist_part(epochs, cache)
    seconds = time.perf_counter() - t0
    runs = mnist["runs"]

    def row(label: str, shown: str) -> str:
        r = runs[label]
        b, a, s = r["before"], r["adam"], r["sgd"]
        return (
            f"| {shown} | {pct(a['normal'])} ({pct(b['normal'])}) | {pct(a['fresh'])} "
            f"({pct(b['fresh'])}) | {pct(s['fresh'])} | {pct(a['key'])} ({pct(b['key'])}) | "
            f"{a['verdict']} ({a['queries']} q, p {a['p_value']:.0e}) |"
        )

    side = [
        "| mark | normal after Adam FT (before) | fresh key samples after Adam FT (before) | "
        "fresh after SGD FT | committed triggers after Adam FT (before) | verdict after Adam FT |",
        "|---|---|---|---|---|---|",
        "| seed 004: new label (MNIST) | 99.09 (97.94) | 99.92 (99.89) | | | |",
        "| seed 004: Zhang et al. (MNIST) | 99.07 (97.88) | 99.88 (99.61) | | | |",
        row("newlabel_beta1.0", "newlabel, beta 1.0 (default)"),
        row("content", "Zhang content"),
        row("noise", "Zhang noise"),
    ]
    sweep = ["| beta | " + " | ".join(side[0].split(" | ")[1:]), side[1]]
    sweep += [row(f"newlabel_beta{b}", f"{b}") for b in BETAS]
    dig = [
        "| newlabel variant (digits, 10 epochs) | committed / fresh | after FT 1 ep | after FT 5 | after FT 10 |",
        "|---|---|---|---|---|",
    ]
    for label, r in digits.items():
        cells = [
            f"{r[f'finetune {e}']['committed']:.2f} / {r[f'finetune {e}']['fresh']:.2f} "
            f"({r[f'finetune {e}']['verdict']})"
            for e in (1, 5, 10)
        ]
        dig.append(
            f"| {label} | {r['committed']:.2f} / {r['fresh']:.2f} | " + " | ".join(cells) + " |"
        )
    diag_before = next(iter(digits.values()))["diagnosis"]
    diag_now = list(digits.values())[-1]["diagnosis"]
    diag = ["| quantity (after 5 epochs of Adam fine-tuning) | before | now |", "|---|---|---|"]
    diag += [f"| {k} | {diag_before[k]:.4f} | {diag_now[k]:.4f} |" for k in diag_before]
    body = f"""
Protocol: see the script's docstring (MNIST, zoo CNN, owner on 10 % of the training split for
{epochs} epochs; the thief's fine-tune on 1,000 thief images for 5 epochs, Adam 1e-3 as in the
attack suite, or SGD lr 0.01; 2,000 test images; 500 fresh key samples from test images).
Percentages. Plain model's normal accuracy: {pct(mnist["plain_normal"])}. {seconds:.0f} s wall.

## Zhong vs Zhang, side by side with seed 004

{chr(10).join(side)}

The seed's figures come from full MNIST training and the paper's own fine-tune; ours from the
CPU protocol above, so compare the pattern, not the decimals.

## Beta sweep (newlabel, MNIST)

{chr(10).join(sweep)}

## Why the quick bench saw newlabel's key accuracy fall to 0 (digits)

The quick bench (benchmarks/quick/summary.md) trained newlabel with beta 0.5 and a fixed set of
50 key samples mixed in, 4 per batch. Committed / fresh key accuracy, and the verdict, after the
attack suite's fine-tune (Adam 1e-3, thief split):

{chr(10).join(dig)}

Margin of the extra class over the best digit on the committed key samples, with the owner's or
the thief's features and head (first variant vs the current default):

{chr(10).join(diag)}

Reading: fine-tuning on data that never holds the extra class lowers its logit everywhere: with
Adam every weight of the extra row moves by about lr per step in the same direction (its gradient
always says "less of class 10", and the features it multiplies are non-negative ReLU outputs), so
the logit of every input drops by roughly lr x steps x the features' L1 norm; the features that
detect the perturbation also drift, since no thief input exercises them. Both parts lower the
margin (the swapped rows). The old defaults left too little margin: a weak perturbation learned
from a fixed set of 50 images. Two changes: key samples are made from each batch's own images
(the paper's construction: the model learns the perturbation, so freshly made samples are
answered as well as committed ones), and a stronger default perturbation (beta 1.0, our choice),
which the sweep shows is what keeps the key samples through the thief's fine-tune. The effect is real, not a bug in the
attack: a thief who fine-tunes with Adam on data without the extra class does erase weak new-label
marks; a wide margin is the defense.
"""
    write_results(
        "seed004_newlabel",
        {"seconds": seconds, "epochs": epochs, "mnist": mnist, "digits": digits, "seed004": SEED},
        body,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="owner's training epochs on MNIST")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where models are cached")
    args = ap.parse_args()
    run(args.epochs, args.cache)


if __name__ == "__main__":
    main()
