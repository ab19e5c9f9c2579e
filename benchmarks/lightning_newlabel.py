"""newlabel fine-tuned through Lightning's `Watermarked` over keys: is each key claimed?

The digits CNN (the library's default recipe: 20 epochs, Adam, seed 0) fine-tuned with
newlabel's default recipe (20 epochs) through a user's LightningModule
(tests/integrations/lightning_user.py), each key verified under the claim rule. Two modes:

* steps: newlabel's repeats as optimiser steps of their own (the wrapper's manual optimization,
  the default on one device);
* one step: the same Trainer with `max_steps` set far beyond the run, which keeps the wrapper in
  automatic optimization (`Watermarked._several_steps`): the repeats concatenated into one step,
  as every Trainer got before session 30.

    python benchmarks/lightning_newlabel.py [--keys 10]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from nnmark import OwnerKey, TrainConfig, load_data, new_model, train, verify
from nnmark.schemes.newlabel import NewLabel, NewLabelConfig

from _common import write_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integrations"))
import lightning_user as lit  # the tests' Lightning user (path set above)

CREATED = "2026-01-01T00:00:00+00:00"  # fixed: a rerun marks the same models
MODES = {"steps": {}, "one step": {"max_steps": 10**9}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits = load_data("digits")
    start = time.time()
    plain = train(new_model("cnn", digits, seed=0), digits, TrainConfig(epochs=20, seed=0))
    rows = []
    for i in range(args.keys):
        key = OwnerKey.new("lightning owner", nonce=f"{i + 0x40:02x}" * 16, created=CREATED)
        key = key.with_mark(NewLabel.plan(plain, key, NewLabelConfig(), data=digits))
        for mode, options in MODES.items():
            net = copy.deepcopy(plain)
            scheme = NewLabel(key.marks[0], [digits])
            wrapped = lit.Watermarked(lit.LitClassifier(net), [scheme], target=net)
            lit.fit(wrapped, digits, 20, 64, **options)
            assert wrapped.automatic_optimization == (mode == "one step")
            v = verify(net, key, data=[digits])
            rows.append(
                {
                    "key": i,
                    "mode": mode,
                    "found": v.verdict == "found",
                    "p": v.p_value,
                    "queries": v.queries,
                }
            )
            print(rows[-1], flush=True)
    lines = [
        f"digits cnn, newlabel's defaults, fine-tuned 20 epochs through `Watermarked`; "
        f"{args.keys} keys; claim rule at alpha 1e-6 and the search-cost bound. "
        f"{time.time() - start:.0f} s (1 torch thread).",
        "",
        "| mode | keys claimed | median p | worst p | queries (median) |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        ps = [r["p"] for r in mine]
        found = sum(r["found"] for r in mine)
        summary[mode] = {"found": found, "keys": len(mine)}
        lines.append(
            f"| {mode} | {found}/{len(mine)} | {statistics.median(ps):.1e} | {max(ps):.1e} | "
            f"{statistics.median(r['queries'] or 0 for r in mine):.0f} |"
        )
    write_results("lightning_newlabel", {"rows": rows, "summary": summary}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
