"""Seed 003 (Tartaglione et al., ICPR 2020) as the seed describes it: the mark is applied *after*
training (fine-tune-to-embed), at R = 4, on MNIST.

Per architecture and seed: a plain model is trained (`--plain-epochs`), then marked by fine-tuning
it with the scheme (`--mark-epochs`, same optimiser and data); a control continues the plain model
for as many epochs without the mark (what the extra epochs alone do). Reported: test accuracy of
the plain model, the control and the marked model; the landscape ratio (mean test-loss increase
when the marked entries get Gaussian noise of sigma x the layer's std, over the increase for as
many unmarked entries with noise of the same norm, 20 draws); BER after the thief's fine-tuning
(`finetune:epochs=5` on the same `--fraction` of the thief split), an Adam and an SGD thief, and
each thief's sign margin (the smallest key magnitude minus the largest move of any entry towards
zero, over the marked tensors: negative where some entry moved farther inwards than a key value
could afford, whether or not a key value was the one that did).

Issue 16 requires, for the cnn and resnet20: marked accuracy within 0.5 points of the plain model
it started from (mean over 3 seeds), ratio >= 2, BER 0 after the fine-tune. CPU protocol (2
cores): a `--fraction` of MNIST's 45,000 training images (on a GPU machine run it at 1), fidelity
on all 10,000 test images (`--test-fraction`; at 0.2, 2,000 images, the cnn of seed 0 measured
-0.10 and -0.60 points on two machines, whose runs are not bit-identical). Marking runs 4
epochs (the control as many): at 2, the cnn of seed 1 lost 0.30 points and a thief's Adam
fine-tune flipped 1 of its 4,583 key signs; at 4 it gained 0.18 points and none flipped (same
key, this machine: the mark needs steps to settle, as the seed says "the more the iterations
... the best the robustness").

    python benchmarks/seed003_tartaglione.py [--archs cnn,resnet20] [--seeds 3 | 2,0,1 | 1,] [--fraction 0.2]

Results: benchmarks/results/seed003_tartaglione.{json,md}, or seed003_tartaglione_<arch> when
one architecture is given (so two can run side by side), with `_<option>-<value>` for each
`--set` (e.g. seed003_tartaglione_resnet20_contrast-true_replica-norm-running).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nnmark import (
    OwnerKey,
    TrainConfig,
    attack,
    embed,
    load_data,
    new_model,
    train,
    verify,
)
from nnmark.bench.cache import ModelCache
from nnmark.bench.jobs import BENCH_CREATED
from nnmark.config import config_to_dict
from nnmark.data import SHARED_DATA
from nnmark.schemes import scheme_for
from nnmark.schemes._positions import perturbation_losses

from _common import accuracy_on_test, write_results

SHARED = SHARED_DATA
OPTIONS = {"R": 4}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="cnn,resnet20")
    ap.add_argument(
        "--seeds",
        type=seed_list,
        default="3",
        help="a count (0..N-1) or a list run in order: 2,0,1 (one seed: 1,)",
    )
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--test-fraction", type=float, default=1.0)
    ap.add_argument("--plain-epochs", type=int, default=5)
    ap.add_argument("--mark-epochs", type=int, default=4)
    ap.add_argument("--cache", type=Path, default=Path("runs/seed003"))
    ap.add_argument("--set", action="append", default=[], help="scheme option k=v (R=4 always)")
    ap.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="write one result from these runs' JSON results (seeds split across processes; "
        "each must have been run with the same options), running nothing",
    )
    args = ap.parse_args()
    archs = args.archs.split(",")
    name = result_name(archs, args.set)
    if args.merge:
        merge(args, archs, name)
        return
    data = load_data(f"mnist:{SHARED / 'mnist'}")
    start = time.time()
    rows: list[dict[str, Any]] = []
    for arch in archs:
        for seed in args.seeds:
            rows.append(run(data, arch, seed, args))
            print(rows[-1], flush=True)
            # after every row, so an interrupted run keeps what it measured (the table says which)
            rows.sort(key=lambda r: (archs.index(r["arch"]), r["seed"]))
            lines = render(rows, args, time.time() - start)
            write_results(
                name,
                {
                    "args": vars(args) | {"cache": str(args.cache)},
                    "seconds": round(time.time() - start, 1),
                    "rows": rows,
                },
                "\n".join(lines),
            )
    print("\n".join(lines))


#: what must agree between runs whose rows are merged (the seeds may differ)
RECIPE_ARGS = ("fraction", "test_fraction", "plain_epochs", "mark_epochs", "set")


def merge(args: argparse.Namespace, archs: list[str], name: str) -> None:
    """One result from runs that split the seeds between processes: their rows, the sum of
    their times, and the command of each."""
    rows: list[dict[str, Any]] = []
    seconds: float | None = 0.0
    commands = []
    for path in args.merge:
        doc = json.loads(path.read_text())
        theirs = doc["args"]
        mismatch = [k for k in RECIPE_ARGS if theirs[k] != getattr(args, k)]
        if mismatch:
            raise SystemExit(f"{path}: run with other {', '.join(mismatch)} than asked for")
        rows += [r for r in doc["rows"] if r["arch"] in archs]
        took = doc.get("seconds")  # not recorded by runs before --merge existed
        seconds = None if seconds is None or took is None else seconds + took
        commands.append(f"`{doc['command']}` ({doc['machine']['torch_threads']} threads)")
    keys = [(r["arch"], r["seed"]) for r in rows]
    if len(set(keys)) != len(keys):
        raise SystemExit(f"the same arch and seed in more than one run: {sorted(keys)}")
    rows.sort(key=lambda r: (archs.index(r["arch"]), r["seed"]))
    args.seeds = sorted({r["seed"] for r in rows})
    lines = render(rows, args, seconds)
    lines[0] += " Merged from: " + "; ".join(commands) + "."
    payload = {
        "args": vars(args) | {"cache": str(args.cache), "merge": [str(p) for p in args.merge]}
    }
    write_results(name, payload | {"seconds": seconds, "rows": rows}, "\n".join(lines))
    print("\n".join(lines))


def result_name(archs: list[str], options: list[str]) -> str:
    """seed003_tartaglione[_<arch>][_<option>-<value>...]: runs of one architecture or with other
    scheme options write their own files, so two can run side by side and none overwrites the
    defaults' result."""
    parts = [archs[0]] if len(archs) == 1 else []
    parts += [re.sub(r"[^A-Za-z0-9.]+", "-", kv.replace("=", "-", 1)) for kv in sorted(options)]
    return "_".join(["seed003_tartaglione", *parts])


def seed_list(text: str) -> list[int]:
    """`3` -> [0, 1, 2]; `2,0,1` -> [2, 0, 1] (the order they run in); `1,` -> [1] (one seed:
    a lone number is a count)."""
    try:
        seeds = [int(s) for s in text.removesuffix(",").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count or a list of seeds: {text!r}") from None
    seeds = list(range(seeds[0])) if len(seeds) == 1 and "," not in text else seeds
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"no seed to run, or a negative one: {text!r}")
    return seeds


def run(data: Any, arch: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    cache = ModelCache(args.cache)
    recipe = [arch, seed, args.fraction, args.plain_epochs]
    cfg = TrainConfig(epochs=args.plain_epochs, seed=seed, fraction=args.fraction)
    plain = cache.get(
        f"plain_{arch}_{seed}",
        recipe,
        lambda: (train(new_model(arch, data, seed=seed), data, cfg), None, data),
    )[0]
    more = TrainConfig(epochs=args.mark_epochs, seed=seed + 100, fraction=args.fraction)
    control = cache.get(
        f"control_{arch}_{seed}",
        [*recipe, args.mark_epochs],
        lambda: (train(plain, data, more), None, data),
    )[0]
    t0 = time.time()
    key = OwnerKey.new(f"seed003 {arch} {seed}", nonce=f"{seed:02x}" * 16, created=BENCH_CREATED)
    options = {**dict(kv.split("=", 1) for kv in args.set), **OPTIONS}
    marked, key = embed(plain, data, "tartaglione", options=options, key=key, config=more)
    seconds = time.time() - t0
    x, y = next(iter(data.loader("test", 2000, fraction=args.test_fraction)))

    acc = accuracy_on_test(data, args.test_fraction)

    def loss(m: torch.nn.Module) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(m(x), y))

    scheme = scheme_for(key.marks[0])
    scheme.positions.bind(marked)  # the layers' std, the noise unit
    gen = torch.Generator().manual_seed(1000 + seed)
    land = perturbation_losses(marked, scheme.positions, loss, scheme.config.sigma, 20, gen)
    thief = f"finetune:epochs=5,fraction={args.fraction}"
    attacked = attack(marked, thief, data, seed=seed + 1)  # Adam 1e-3, the attack's default
    sgd = attack(marked, f"{thief},optimizer=sgd,lr=0.01", data, seed=seed + 1)
    after = verify(attacked, key)
    return {
        "movement": movement(marked, attacked, scheme.positions.index),
        "sign_margin": {
            "adam": sign_margin(marked, attacked, scheme.positions.index),
            "sgd": sign_margin(marked, sgd, scheme.positions.index),
        },
        "arch": arch,
        "seed": seed,
        "plain": acc(plain),
        "control": acc(control),
        "marked": acc(marked),
        "ber": verify(marked, key).ber,
        "ratio": land["ratio"],
        "marked_increase": land["marked_increase"],
        "unmarked_increase": land["unmarked_increase"],
        "ber_after_finetune": after.ber,
        "flips_after_finetune": round(after.ber * len(key.marks[0].bits)),
        "positions": len(key.marks[0].bits),
        "p_after_finetune": after.p_value,
        "accuracy_after_finetune": acc(attacked),
        "ber_after_sgd_finetune": verify(sgd, key).ber,
        "accuracy_after_sgd_finetune": acc(sgd),
        "mark_seconds": round(seconds, 1),
        # every option, defaults included (a key leaves later options out at their defaults)
        "scheme_config": config_to_dict(scheme.config),
    }


@torch.no_grad()
def movement(
    before: torch.nn.Module, after: torch.nn.Module, index: dict[str, torch.Tensor]
) -> dict[str, float]:
    """How far the thief's fine-tune moved the marked entries and the others (mean |change|):
    the seed's claim is that fine-tuning changes the unmarked weights, not the marked ones."""
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    marked = unmarked = 0.0
    n_marked = n_unmarked = 0
    for name, idx in index.items():
        change = (a[name] - b[name]).abs().flatten()
        mask = torch.ones_like(change, dtype=torch.bool)
        mask[idx] = False
        marked += float(change[idx].sum())
        unmarked += float(change[mask].sum())
        n_marked, n_unmarked = n_marked + len(idx), n_unmarked + int(mask.sum())
    return {"marked": marked / n_marked, "unmarked": unmarked / n_unmarked}


@torch.no_grad()
def sign_margin(
    before: torch.nn.Module, after: torch.nn.Module, index: dict[str, torch.Tensor]
) -> float:
    """Over the marked tensors, the least of (smallest key magnitude - largest move of *any*
    entry towards zero): how much room the key's signs had against this thief. The thief moves
    marked and unmarked entries alike (`movement`), so every entry's move is a sample of what a
    key value could have suffered; negative: some entry moved inwards farther than the smallest
    key value's magnitude, a sign that could have flipped (whether one did is the BER). The key
    values are read from the marked model (a bare `bind` sets +-2 std, not them)."""
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    margins = []
    for name, idx in index.items():
        w = b[name].flatten()
        inward = -(a[name].flatten() - w) * torch.sign(w)
        margins.append(float(w[idx].abs().min()) - float(inward.max()))
    return min(margins)


def margin_text(row: dict[str, Any]) -> str:
    m = row.get("sign_margin")
    return "not measured" if m is None else f"{m['adam']:+.4f} / {m['sgd']:+.4f}"


def render(
    rows: list[dict[str, Any]], args: argparse.Namespace, seconds: float | None
) -> list[str]:
    lines = [
        f"Options: R = 4{''.join(f', {kv}' for kv in args.set)}. "
        f"MNIST, {args.fraction:.0%} of the 45,000 training images; plain {args.plain_epochs} "
        f"epochs, then {args.mark_epochs} epochs of fine-tune-to-embed at R = 4 (the control: "
        f"{args.mark_epochs} more epochs without the mark); accuracy on {args.test_fraction:.0%} "
        f"of the test split. {'Total time not recorded' if seconds is None else f'{seconds:.0f} s in all'}"
        f". Rows: {len(rows)} of "
        f"{len(args.seeds) * len(args.archs.split(','))} asked for.",
        "",
        "| arch | seed | plain | control | marked | marked - plain (pts) | BER | ratio | "
        "Adam FT 5 ep: BER (flipped / positions) | p | acc after | SGD FT 5 ep: BER | acc after "
        "| sign margin Adam / SGD | mark s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['seed']} | {r['plain']:.4f} | {r['control']:.4f} | "
            f"{r['marked']:.4f} | {100 * (r['marked'] - r['plain']):+.2f} | {r['ber']:.3f} | "
            f"{r['ratio']:.2f} | {r['ber_after_finetune']:.4f} ({r['flips_after_finetune']} / "
            f"{r['positions']}) | {r['p_after_finetune']:.0e} | "
            f"{r['accuracy_after_finetune']:.4f} | {r['ber_after_sgd_finetune']:.4f} | "
            f"{r['accuracy_after_sgd_finetune']:.4f} | {margin_text(r)} | {r['mark_seconds']} |"
        )
    lines += [
        "",
        "| arch | mean marked - plain (pts) | mean marked - control | min ratio | worst BER after "
        "Adam FT | worst BER after SGD FT | Adam FT: marked / unmarked mean change | meets "
        "(within 0.5, ratio >= 2, BER 0 after both) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        gap = statistics.fmean(100 * (r["marked"] - r["plain"]) for r in mine)
        vs_control = statistics.fmean(100 * (r["marked"] - r["control"]) for r in mine)
        ratio = min(r["ratio"] for r in mine)
        worst = max(r["ber_after_finetune"] for r in mine)
        worst_sgd = max(r["ber_after_sgd_finetune"] for r in mine)
        meets = abs(gap) <= 0.5 and ratio >= 2 and worst == worst_sgd == 0
        # the issue asks for 3 seeds: fewer that pass are not a yes
        verdict = "NO" if not meets else "yes" if len(mine) >= 3 else f"so far ({len(mine)} of 3)"
        moved = [r["movement"] for r in mine if "movement" in r]
        change = (
            f"{statistics.fmean(m['marked'] for m in moved):.4f} / "
            f"{statistics.fmean(m['unmarked'] for m in moved):.4f}"
            if moved
            else "not measured"
        )
        lines.append(
            f"| {arch} | {gap:+.2f} | {vs_control:+.2f} | {ratio:.2f} | {worst:.4f} | "
            f"{worst_sgd:.4f} | {change} | {verdict} |"
        )
    lines.append(
        "\nSeed 003 (ResNet-32, CIFAR-10): test error 7.14 / 7.08 / 7.29 % at R = 0 / 2 / 4, i.e. "
        "the mark costs at most 0.15 points."
    )
    return lines


if __name__ == "__main__":
    main()
