"""Attacks that know the scheme (issue 18): per white-box scheme, the mark's verdict and the
fidelity cost after each adaptive attack, without and with nnmark's answer to it.

Implemented here: neural structural obfuscation (`obfuscate`, Yan et al., USENIX Security 2023:
dummy unit pairs that cancel, shuffled in), alone and with permutation and scaling (their
"invariant neuron transforms"); the answer is `verify --reference-unmarked` (realignment to the
owner's model before the mark, which the key commits to), for every scheme (stdm used
`--reference MARKED` until session 34, when readings realigned to the marked model stopped
counting: nnmark.api.inadmissible). Each scheme is embedded with its default recipe on digits (its `situation`:
fine-tuned into the trained plain model, or trained from the plain model's initial weights),
`--seeds` seeds. For a mark trained in from scratch the reference is its unmarked
twin (same initial weights and batches, no mark), a model that differs from the marked one by
far more than a fine-tune: the matching is harder there, as the `permute` / `morph` baseline
rows show.

`detect` (find the marked layer from the weights, erase its filter mean, re-train it) is run
too; its answer is the same realignment (it changes weights, not the layout, so realignment
matters only for the obfuscations).

On MNIST (`--data mnist`) the recipe is a CPU protocol: `--epochs` (3) on `--fraction` (0.15)
of the 45,000-image train split, the thief's split as usual; results go to
`adaptive_attacks_mnist`. Seeds run in `--jobs` processes.

    python benchmarks/adaptive_attacks.py [--seeds 3] [--data digits|mnist] [--jobs 2]
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from nnmark import OwnerKey, TrainConfig, attack, embed, load_data, new_model, train
from nnmark.api import bound_scheme, verify
from nnmark.bench.jobs import BENCH_CREATED
from nnmark.data import SHARED_DATA
from nnmark.defenses.realign import realign_suspect
from nnmark.schemes import SCHEMES
from nnmark.suspect import ModuleSuspect
from nnmark.testing.tsa import seen_now

from _common import accuracy_on_test, loopback_stamps, write_results

#: The obfuscations, and as a baseline the generic rewrites the same answer undoes (permute,
#: morph): what obfuscation adds is the difference between the two.
ATTACKS = [
    "permute",
    "morph",
    "obfuscate",
    "obfuscate:extra=1.0",
    "obfuscate:extra=1.0,permute,scale",
    "detect",
]


def recipe(args: argparse.Namespace, seed: int) -> TrainConfig:
    if args.data == "mnist":
        return TrainConfig(seed=seed, epochs=args.epochs, fraction=args.fraction)
    return TrainConfig(seed=seed)


def run_seed(seed: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    torch.set_num_threads(1)
    data = load_data(f"mnist:{SHARED_DATA / 'mnist'}" if args.data == "mnist" else "digits")

    acc = accuracy_on_test(data)

    schemes = [n for n in SCHEMES.names() if SCHEMES.get(n).kind == "whitebox"]
    rows: list[dict[str, Any]] = []
    cfg = recipe(args, seed)
    init = new_model("cnn", data, seed=seed)
    plain = train(init, data, cfg)
    stamp, certs = loopback_stamps()
    for name in schemes:
        start_from = plain if SCHEMES.get(name).situation == "finetune" else init
        # the owner's model before the mark (what --reference-unmarked is given): the plain
        # model, trained from the same initial weights and batches
        before = plain
        key = OwnerKey.new(
            f"adaptive {name} {seed}", nonce=f"{seed:02x}" * 16, created=BENCH_CREATED
        )
        marked, key = embed(start_from, data, name, key=key, config=cfg, reference=before)
        bound = [bound_scheme(key, m.index, data) for m in key.marks]
        owner = stamp(key)  # priority: a stamp waives nothing, but an owner would have one
        for spec in ATTACKS:
            hit = attack(marked, spec, data, seed=seed + 1)
            plainly = verify(hit, key, data=data)
            aligned = realign_suspect(ModuleSuspect(hit), before, bound, unmarked=True)
            defended = verify(aligned, owner, data=data, tsa_certs=certs, suspect_seen=seen_now())
            rows.append(
                {
                    "scheme": name,
                    "seed": seed,
                    "attack": spec,
                    "fidelity_before": acc(marked),
                    "fidelity_after": acc(hit),
                    "verdict": plainly.verdict,
                    "p_value": plainly.p_value,
                    "reason": plainly.reason,
                    "verdict_defended": defended.verdict,
                    "p_defended": defended.p_value,
                    "ber_defended": defended.ber,
                }
            )
            print(
                {
                    k: rows[-1][k]
                    for k in ("scheme", "seed", "attack", "verdict", "verdict_defended")
                },
                flush=True,
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--data", choices=("digits", "mnist"), default="digits")
    ap.add_argument("--epochs", type=int, default=3, help="MNIST only")
    ap.add_argument("--fraction", type=float, default=0.15, help="MNIST only")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    start = time.time()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [
            r for part in pool.map(run_seed, range(args.seeds), [args] * args.seeds) for r in part
        ]
    schemes = list(dict.fromkeys(r["scheme"] for r in rows))
    protocol = (
        f"MNIST cnn, {args.epochs} epochs on {args.fraction:.0%} of the train split"
        if args.data == "mnist"
        else "digits cnn, each white-box scheme's default recipe"
    )
    lines = [
        f"{protocol}, seeds 0..{args.seeds - 1}; "
        "defended = `verify --reference-unmarked` with the owner's model before the mark (the "
        "model the key commits to), every scheme. Keys with a fixed creation time and nonce (reproducible). "
        f"{time.time() - start:.0f} s ({args.jobs} processes).",
        "",
        "| scheme | attack | fidelity cost (points, mean) | found without the answer | found "
        "with it | worst BER with it |",
        "|---|---|---|---|---|---|",
    ]
    for name in schemes:
        for spec in ATTACKS:
            mine = [r for r in rows if r["scheme"] == name and r["attack"] == spec]
            cost = sum(100 * (r["fidelity_before"] - r["fidelity_after"]) for r in mine) / len(mine)
            plain_found = sum(r["verdict"] == "found" for r in mine)
            found = sum(r["verdict_defended"] == "found" for r in mine)
            worst = max((r["ber_defended"] or 0.0) for r in mine)
            lines.append(
                f"| {name} | {spec} | {cost:+.2f} | {plain_found}/{len(mine)} | "
                f"{found}/{len(mine)} | {worst:.3f} |"
            )
    reasons = sorted({str(r["reason"]).split(":")[0] for r in rows if r["verdict"] != "found"})
    lines.append(f"\nWithout the answer, the verifier's reasons: {'; '.join(reasons)}.")
    name = "adaptive_attacks" + ("_mnist" if args.data == "mnist" else "")
    write_results(name, {"args": vars(args), "rows": rows}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
