"""Key accuracy of every black-box mark on its FULL trigger set after the attack suite's
fine-tune and prune (the bench's strength ladders), with the verdict and the queries it took.

Digits: one marked CNN per black-box scheme (benchmarks/_blackbox.py: 20 epochs, seed 0;
frontier fine-tuned 20 epochs into the plain model, its key calibrated on 10 unmarked CNNs).
Attacks: `finetune` (thief split, Adam 1e-3) for 1 / 5 / 10 epochs, global magnitude `prune`
of 30 / 60 / 90 % of the weights, and the chain prune 60 % + fine-tune 5 epochs; attack seed 1.
"Key accuracy" is the share of ALL committed triggers answered with the key label (verification
may stop earlier); for frontier also on its true adversaries alone (what verification queries),
for content / noise / newlabel also on 200 fresh key samples made with the same key from test
images. Segmentation (segtrigger, width-8 U-Net on 32 x 32 BBBC039 tiles): pixel agreement with
the key mask on all 16 triggers, the decoded bits' BER, Dice.

    .venv/bin/python benchmarks/blackbox_robustness.py [--cache DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _blackbox import DEFAULT_CACHE, RECIPE, accuracy, digits_suite, seg_pair

from nnmark import OwnerKey, attack, embed, evaluate, verify
from nnmark.api import bound_scheme
from nnmark.calibrate import calibrate
from nnmark.errors import NNMarkError
from nnmark.schemes.frontier import Frontier
from nnmark.schemes.segtrigger import SegTrigger
from nnmark.testing.tsa import LoopbackTSA

from _common import write_results

ATTACKS = [
    "none",
    "finetune:epochs=1",
    "finetune:epochs=5",
    "finetune:epochs=10",
    "prune:fraction=0.3",
    "prune:fraction=0.6",
    "prune:fraction=0.9",
    "prune:fraction=0.6,finetune:epochs=5",
]


def key_shares(scheme: Any, model: torch.nn.Module, data: Any) -> dict[str, float]:
    if isinstance(scheme, Frontier):
        k = scheme.key_accuracy(model)
        return {"key": k["all"], "true adversaries": k["true"]}
    out = {"key": accuracy(model, scheme.x, scheme.y)}
    try:
        fx, fy = scheme.fresh_samples(data, 200, seed=7)
        out["fresh"] = accuracy(model, fx, fy)
    except NNMarkError:
        pass
    return out


def frontier_sweep(suite: Any) -> list[dict[str, Any]]:
    """The FGSM step: accuracy, stitching, the calibrated null and the queries it takes."""
    data = suite.data
    xt, yt = data.tensors("test")
    out = []
    for eps in (0.05, 0.1, 0.15, 0.2):
        key = OwnerKey.new("owner frontier", nonce=f"{8:032x}")
        try:
            model, key = embed(
                suite.plain, data, "frontier", options={"eps": eps}, key=key, config=RECIPE
            )
        except NNMarkError as exc:
            out.append({"eps": eps, "error": str(exc)})
            continue
        key = calibrate(key, suite.unmarked)
        scheme = Frontier(key.marks[0])
        v = suite.verify(model, key)
        stolen = attack(model, "finetune:epochs=5", data, seed=1)
        vs = suite.verify(stolen, key)
        out.append(
            {
                "eps": eps,
                "accuracy": accuracy(model, xt, yt),
                "stitched": scheme.key_accuracy(model)["true"],
                "unmarked": [scheme.key_accuracy(u)["true"] for u in suite.unmarked],
                "p0": v.details["p0"],
                "verdict": v.verdict,
                "queries": v.queries,
                "p_value": v.p_value,
                "after_finetune": scheme.key_accuracy(stolen)["true"],
                "verdict_after_finetune": vs.verdict,
            }
        )
        print(out[-1], flush=True)
    return out


def specificity(suite: Any) -> dict[str, Any]:
    """Frontier's key specificity: other owners' keys on our stitched model, our key on models
    that are robust without our key, and our key under a null that covers them."""
    from nnmark.schemes.frontier import FrontierConfig

    data = suite.data
    model, key = suite.marked["frontier"]
    ours = Frontier(key.marks[0])
    out: dict[str, Any] = {}

    def claim(suspect: torch.nn.Module, k: OwnerKey) -> dict[str, Any]:
        v = suite.verify(suspect, k)
        rate = Frontier(k.marks[0]).key_accuracy(suspect)["true"]
        return {
            "rate": rate,
            "verdict": v.verdict,
            "p_value": v.p_value,
            "p0": v.details.get("p0"),
            "queries": v.queries,
        }

    other = OwnerKey.new("someone else", nonce="ee" * 16)
    theirs = other.with_mark(Frontier.plan(suite.unmarked[0], other, FrontierConfig(), data=data))
    out["their key (their model), our stitched model"] = claim(
        model, calibrate(theirs, suite.unmarked[1:])
    )
    same = other.with_mark(Frontier.plan(suite.plain, other, FrontierConfig(), data=data))
    out["a key crafted on our base model, our stitched model"] = claim(
        model, calibrate(same, suite.unmarked)
    )
    their_model, _ = embed(suite.unmarked[0], data, "frontier", key=other, config=RECIPE)
    out["our key, their stitched model"] = claim(their_model, key)
    robust = [attack(u, "advtrain:eps=0.15", data, seed=1) for u in suite.unmarked[1:5]]
    for i, r in enumerate(robust):
        out[f"our key, adversarially fine-tuned unmarked CNN {i + 1}"] = claim(r, key)
    out["our key, our stitched model (unmarked null)"] = claim(model, key)
    strict = calibrate(key, [*suite.unmarked, their_model, *robust])
    out["our key, our stitched model (null also over their stitched + 4 robust)"] = claim(
        model, strict
    )
    out["unmarked rates"] = [ours.key_accuracy(u)["true"] for u in suite.unmarked]
    return out


def run(cache: Path) -> None:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with LoopbackTSA() as tsa:
        run_with(digits_suite(cache, tsa=tsa), cache, t0)


def run_with(suite: Any, cache: Path, t0: float) -> None:
    data = suite.data
    xt, yt = data.tensors("test")
    rows = []
    for name, (model, key) in suite.marked.items():
        scheme = bound_scheme(key, 0, suite.key_data)
        for spec in ATTACKS:
            stolen = model if spec == "none" else attack(model, spec, data, seed=1)
            v = suite.verify(stolen, key)
            rows.append(
                {
                    "scheme": name,
                    "attack": spec,
                    "accuracy": accuracy(stolen, xt, yt),
                    **key_shares(scheme, stolen, data),
                    "verdict": v.verdict,
                    "p_value": v.p_value,
                    "queries": v.queries,
                }
            )
            print(rows[-1], flush=True)
    seg_data, _, seg_marked, seg_key = seg_pair(cache)
    seg = SegTrigger(seg_key.marks[0])
    seg_rows = []
    for spec in ATTACKS:
        stolen = seg_marked if spec == "none" else attack(seg_marked, spec, seg_data, seed=1)
        v = verify(stolen, seg_key)
        seg_rows.append(
            {
                "attack": spec,
                "dice": evaluate(stolen, seg_data.loader("test", 64), "segmentation")["dice"],
                "agreement": seg.mask_agreement(stolen),
                "ber": v.ber,
                "verdict": v.verdict,
                "p_value": v.p_value,
                "queries": v.queries,
            }
        )
        print(seg_rows[-1], flush=True)
    sweep = frontier_sweep(suite)
    spec_rows = specificity(suite)
    seconds = time.perf_counter() - t0

    names = list(suite.marked)
    table = ["| attack | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for spec in ATTACKS:
        cells = []
        for n in names:
            r = next(r for r in rows if r["scheme"] == n and r["attack"] == spec)
            extra = ""
            if "true adversaries" in r:
                extra = f", true {r['true adversaries']:.2f}"
            elif "fresh" in r:
                extra = f", fresh {r['fresh']:.2f}"
            word = "**found**" if r["verdict"] == "found" else "not found"
            cells.append(
                f"{r['key']:.2f}{extra}; {word} ({r['queries']} q); acc {r['accuracy']:.3f}"
            )
        table.append(f"| `{spec}` | " + " | ".join(cells) + " |")
    seg_table = [
        "| attack | Dice | mask agreement | BER | verdict (queries, p) |",
        "|---|---|---|---|---|",
    ]
    for r in seg_rows:
        seg_table.append(
            f"| `{r['attack']}` | {r['dice']:.4f} | {r['agreement']:.3f} | {r['ber']:.3f} | "
            f"{r['verdict']} ({r['queries']}, {r['p_value']:.0e}) |"
        )
    sweep_table = [
        "| eps | test accuracy | true adversaries answered right: marked / unmarked (10) | "
        "calibrated p0 | verdict (queries, p) | after 5 epochs of fine-tuning |",
        "|---|---|---|---|---|---|",
    ]
    for r in sweep:
        if "error" in r:
            sweep_table.append(f"| {r['eps']} | {r['error']} | | | | |")
            continue
        sweep_table.append(
            f"| {r['eps']} | {r['accuracy']:.4f} | {r['stitched']:.2f} / "
            f"{min(r['unmarked']):.2f} to {max(r['unmarked']):.2f} | {r['p0']:.3f} | "
            f"{r['verdict']} ({r['queries']}, {r['p_value']:.0e}) | {r['after_finetune']:.2f}, "
            f"{r['verdict_after_finetune']} |"
        )
    spec_table = ["| suspect and key | right | p0 | verdict (queries, p) |", "|---|---|---|---|"]
    for label, r in spec_rows.items():
        if label == "unmarked rates":
            continue
        spec_table.append(
            f"| {label} | {r['rate']:.2f} | {r['p0']:.3f} | {r['verdict']} ({r['queries']}, "
            f"{r['p_value']:.0e}) |"
        )
    body = f"""
Each cell: key accuracy on the full committed trigger set (frontier: all 200 key inputs, then
its 100 true adversaries; content / noise / newlabel: then 200 fresh key samples); the verdict at
alpha 1e-6 (keys timestamped by a loopback TSA, as an owner's would be) and the queries it used; the attacked model's test accuracy (359 digits). Attacks are
the bench's ladders (nnmark/bench/grid.py), seed 1. {seconds:.0f} s wall.

{chr(10).join(table)}

## frontier: the FGSM step

Fine-tuned 20 epochs into the plain CNN (n = 200, 32 key inputs per batch), key calibrated on the
10 unmarked CNNs (p0 = the bound on the highest model's rate); plain test accuracy
{accuracy(suite.plain, xt, yt):.4f}.

{chr(10).join(sweep_table)}

## frontier: how specific is a stitched model to its key?

True adversaries answered right, and the verdict (alpha 1e-6; p0 the calibrated bound). Unmarked
CNNs answer our key's true adversaries right at {min(spec_rows["unmarked rates"]):.2f} to
{max(spec_rows["unmarked rates"]):.2f}.

{chr(10).join(spec_table)}

## segtrigger (U-Net, BBBC039 at 32 x 32)

{chr(10).join(seg_table)}
"""
    write_results(
        "blackbox_robustness",
        {
            "seconds": seconds,
            "rows": rows,
            "segmentation": seg_rows,
            "frontier_eps": sweep,
            "frontier_specificity": spec_rows,
        },
        body,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where models are cached")
    run(ap.parse_args().cache)


if __name__ == "__main__":
    main()
