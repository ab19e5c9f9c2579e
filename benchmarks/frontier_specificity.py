"""Frontier stitching: how a claim fares when the null also covers models stitched with other keys.

digits `cnn`s, 20 epochs: our base model (seed 0) stitched with our key (fine-tune-to-embed, 20
epochs); six unmarked models (seeds 100..105) for the calibration, of which `calibrate(...,
data=)` stitches fresh keys into the first three (FrontierConfig.references); another owner's
key crafted on their own model (seed 100). For each key size n (half true adversaries), the
verdicts of our key on our stitched model and of their key on our stitched model, under the
unmarked-only null and under the null with stitched references.

    python benchmarks/frontier_specificity.py [--sizes 200 400]
"""

from __future__ import annotations

import argparse
import time

import torch

from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model, train, verify
from nnmark.calibrate import calibrate
from nnmark.schemes.frontier import Frontier, FrontierConfig

from _common import write_results


def claim(model: torch.nn.Module, key: OwnerKey) -> dict:
    v = verify(model, key)
    cal = key.derived["calibration"]["0"]
    return {
        "verdict": v.verdict,
        "p_value": v.p_value,
        "queries": v.queries,
        "p0": v.details.get("p0"),
        "rate": Frontier(key.marks[0]).key_accuracy(model)["true"],
        "reference_rates": cal["rates"][len(cal["rates"]) - cal.get("references", 0) :],
        "unmarked_rates": cal["rates"][: len(cal["rates"]) - cal.get("references", 0)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 400])
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.process_time()
    data = load_data("digits")
    recipe = TrainConfig(epochs=20, seed=0)
    plain = train(new_model("cnn", data, seed=0), data, recipe)
    others = [
        train(new_model("cnn", data, seed=s), data, TrainConfig(epochs=20, seed=s))
        for s in range(100, 106)
    ]
    rows = []
    for n in args.sizes:
        ours = OwnerKey.new("owner", nonce="ab" * 16)
        model, key = embed(plain, data, "frontier", key=ours, options={"n": n}, config=recipe)
        other = OwnerKey.new("someone else", nonce="ee" * 16)
        theirs = other.with_mark(Frontier.plan(others[0], other, FrontierConfig(n=n), data=data))
        for who, k, pool in (("our key", key, others), ("their key", theirs, others[1:])):
            for null, cal in (
                ("unmarked only", calibrate(k, pool)),
                ("+ stitched references", calibrate(k, pool, data=data, epochs=20)),
            ):
                rows.append({"n": n, "key": who, "null": null, **claim(model, cal)})
                print(rows[-1], flush=True)
    cpu = time.process_time() - t0

    def rates(r: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in r) or "-"

    lines = [
        "| key size n | key on our stitched model | null | right (true adv.) | p0 | verdict "
        "(queries, p) | unmarked rates | stitched reference rates |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n']} | {r['key']} | {r['null']} | {r['rate']:.2f} | {r['p0']:.3f} | "
            f"{r['verdict']} ({r['queries']}, {r['p_value']:.1e}) | {rates(r['unmarked_rates'])} "
            f"| {rates(r['reference_rates'])} |"
        )
    body = (
        __doc__.split("\n\n")[1].replace("\n", " ")
        + "\n\n"
        + "\n".join(lines)
        + f"\n\nalpha 1e-6. CPU time {cpu:.0f} s (1 thread).\n"
    )
    write_results("frontier_specificity", {"rows": rows, "cpu_s": cpu}, body)


if __name__ == "__main__":
    main()
