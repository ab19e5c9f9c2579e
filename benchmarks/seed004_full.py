"""Seed 004 (Zhong et al., PAKDD 2020) on the full MNIST training split: an owner model as good
as the paper's, then the thief's fine-tune, new label (newlabel) vs Zhang et al.'s content
trigger under the same protocol.

Protocol: the zoo CNN trained on all 45,000 images of MNIST's training split for `--epochs`
epochs with nnmark's default recipe (Adam 1e-3, cosine, batch 64) and each scheme's default
options (newlabel: uniform-noise key samples of strength beta 1.0 made from each batch's own
images, 16 per batch, with 32 images under fresh non-key perturbations and 2 repeats, and the
key samples held 30 logits above the other classes by a hinge of weight 0.03; content:
16 key-drawn patches, each with its own key label, so that the exact test can reach a claim;
Zhang's form, one patch relabelled to one class, is `--marks content:patterns=1`); a plain
twin from the same initial weights and batches; `--seeds` seeds (initial weights, batches and
key differ by seed), run `--jobs` at a time. The thief
fine-tunes every layer for 5 epochs on 1,000 or 5,000 images of the thief split (never seen by
the owner) with Adam 1e-3 (the attack suite's default) or SGD (lr 0.01, momentum 0.9). Reported:
normal accuracy on the 10,000 test images, key accuracy on the committed key inputs and on 500
fresh key samples made with the same key from test images (the paper's "newly generated key
samples"; for content, fresh test images with the stamped pattern), and the verdict.

Issue 16's Required line: owner >= 98.5 %, fresh key samples >= 99 % after both fine-tunes.
Seed 004 (its protocol): normal 99.09 %, key samples 99.92 % after fine-tuning (Zhang 99.88 %).

    python benchmarks/seed004_full.py [--epochs 3] [--seeds 3] [--jobs 2] [--cache DIR] \
        [--marks newlabel content]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from _blackbox import DEFAULT_CACHE, cached, cached_mark
from seed004_newlabel import MNIST, SEED, measure, share

from nnmark import OwnerKey, TrainConfig, attack, embed, load_data, new_model, train
from nnmark.bench.jobs import BENCH_CREATED
from nnmark.config import parse_sets

from _common import interval, mark_label, write_results

THIEVES = {
    "Adam, 1,000 images": "finetune:epochs=5,fraction=0.1",
    "SGD, 1,000 images": "finetune:epochs=5,fraction=0.1,optimizer=sgd,lr=0.01",
    "Adam, 5,000 images": "finetune:epochs=5,fraction=0.5",
    "SGD, 5,000 images": "finetune:epochs=5,fraction=0.5,optimizer=sgd,lr=0.01",
}
#: the marks compared, each `scheme` or `scheme:option=value,...` (`--marks`)
MARKS = ("newlabel", "content")


def mark_spec(spec: str) -> tuple[str, dict[str, str]]:
    """`content:patterns=1` -> ("content", {"patterns": "1"})."""
    scheme, _, opts = spec.partition(":")
    return scheme, parse_sets(o for o in opts.split(",") if o)


def one_seed(seed: int, epochs: int, cache: Path, marks: tuple[str, ...]) -> dict[str, Any]:
    """The plain twin, each mark and every thief for one seed (initial weights, batches, key)."""
    torch.set_num_threads(1)
    data = load_data(f"mnist:{MNIST}")
    test = data.tensors("test")
    recipe = TrainConfig(epochs=epochs, seed=seed)
    tag = f"full_e{epochs}" + (f"_s{seed}" if seed else "")  # seed 0: the first run's names
    plain = cached(
        cache, f"{tag}_plain", data, lambda: train(new_model("cnn", data, seed=seed), data, recipe)
    )
    runs: dict[str, Any] = {}
    for mark in marks:

        def build(mark: str = mark) -> tuple[torch.nn.Module, OwnerKey]:
            owner = "seed004 owner" + (f" {seed}" if seed else "")
            key = OwnerKey.new(owner, nonce="04" * 16, created=BENCH_CREATED)
            scheme, options = mark_spec(mark)
            model = new_model("cnn", data, seed=seed)
            return embed(model, data, scheme, key=key, options=options, config=recipe)

        model, key = cached_mark(cache, f"{tag}_{mark_label(mark)}", data, build)
        row: dict[str, Any] = {"before": measure(model, key, data, test)}
        for thief, spec in THIEVES.items():
            row[thief] = measure(attack(model, spec, data, seed=1), key, data, test)
        runs[mark] = row
        print(seed, mark, {t: round(r["fresh"], 4) for t, r in row.items()}, flush=True)
    return {"plain_normal": share(plain, *test), "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument(
        "--marks",
        nargs="+",
        default=list(MARKS),
        help="scheme or scheme:option=value,... (results named after any other set than the "
        "default, e.g. content:patterns=1 -> seed004_full_content_patterns-1)",
    )
    args = ap.parse_args()
    marks = tuple(args.marks)
    start = time.time()
    seeds = list(range(args.seeds))
    n = len(seeds)
    with ProcessPoolExecutor(args.jobs) as pool:
        done = list(pool.map(one_seed, seeds, [args.epochs] * n, [args.cache] * n, [marks] * n))
    by_seed = {str(s): d for s, d in zip(seeds, done)}
    lines = render(by_seed, args.epochs, marks, time.time() - start)
    name = "seed004_full" + ("" if marks == MARKS else "_" + "_".join(map(mark_label, marks)))
    write_results(
        name,
        {"epochs": args.epochs, "marks": list(marks), "seeds": by_seed, "seed004": SEED},
        "\n".join(lines),
    )
    print("\n".join(lines))


def pct(v: float) -> str:
    return f"{100 * v:.2f}"


def worst_fresh(runs: dict[str, Any], scheme: str) -> float:
    return min(r["fresh"] for t, r in runs[scheme].items() if t != "before")


def render(
    by_seed: dict[str, Any], epochs: int, marks: tuple[str, ...], seconds: float
) -> list[str]:
    lines = [
        f"Owner: the zoo CNN on all 45,000 MNIST training images, {epochs} epochs, nnmark's "
        f"default recipe and the scheme's default options unless the mark names others (marks: "
        f"{', '.join(marks)}), {len(by_seed)} seeds (initial weights, batches and "
        f"key); a plain twin per seed. Thief: 5 epochs of fine-tuning on thief images. "
        f"Percentages on the 10,000 test images (fresh key samples: 500). {seconds:.0f} s.",
        "",
        "| seed | mark | thief | normal | committed key inputs | fresh key samples | verdict |",
        "|---|---|---|---|---|---|---|",
        "| | seed 004: new label | its fine-tune | 99.09 (97.94 before) | | 99.92 (99.89 before) | |",
        "| | seed 004: Zhang et al. | its fine-tune | 99.07 (97.88 before) | | 99.88 (99.61 before) | |",
    ]
    for seed, d in by_seed.items():
        lines.append(f"| {seed} | plain twin | | {pct(d['plain_normal'])} | | | |")
        for scheme, row in d["runs"].items():
            for thief, r in row.items():
                lines.append(
                    f"| {seed} | {scheme} | {'none (owner)' if thief == 'before' else thief} | "
                    f"{pct(r['normal'])} | {pct(r['key'])} | {pct(r['fresh'])} | {r['verdict']} "
                    f"({r['queries']} q, p {r['p_value']:.0e}) |"
                )
    lines += [
        "",
        "| mark | owner normal (mean +- 95 % CI) | owner - plain twin (points) | worst fresh key "
        "samples after a fine-tune, per seed | found after every fine-tune |",
        "|---|---|---|---|---|",
    ]
    for scheme in marks:
        owners = [d["runs"][scheme]["before"]["normal"] for d in by_seed.values()]
        gaps = [d["runs"][scheme]["before"]["normal"] - d["plain_normal"] for d in by_seed.values()]
        worst = [worst_fresh(d["runs"], scheme) for d in by_seed.values()]
        found = sum(
            all(r["verdict"] == "found" for r in d["runs"][scheme].values())
            for d in by_seed.values()
        )
        lines.append(
            f"| {scheme} | {interval(owners, 100)} | {interval(gaps, 100)} | "
            f"{' / '.join(pct(w) for w in worst)} | {found} of {len(by_seed)} seeds |"
        )
    if "newlabel" not in marks:
        return lines
    owners = [d["runs"]["newlabel"]["before"]["normal"] for d in by_seed.values()]
    worst_nl = min(worst_fresh(d["runs"], "newlabel") for d in by_seed.values())
    meets = min(owners) >= 0.985 and worst_nl >= 0.99
    lines += [
        "",
        f"Required (issue 16): owner >= 98.5 % (lowest {pct(min(owners))}), fresh key samples "
        f">= 99 % after every fine-tune (worst over seeds and thieves {pct(worst_nl)}): "
        f"{'met' if meets else 'NOT met'}.",
    ]
    return lines


if __name__ == "__main__":
    main()
