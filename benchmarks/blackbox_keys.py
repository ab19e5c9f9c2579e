"""A black-box scheme over many keys: does every key's mark reach a claim within 30 queries?

One plain digits CNN and one marked CNN per key (same init, the library's default recipe: 20
epochs, Adam; frontier is fine-tuned into the plain CNN), Fashion-MNIST items as unrelated's
source (`../shared/data/fashion-mnist`). Reports per key the share of the key's triggers answered
with their key label, the test accuracy against the plain model's, and the scheme's exact test
at 30, 50 and 100 queries under the claim rule: alpha 1e-6 and the search-cost bound (about
1.6e-12 at the default KDF), which a timestamp does not waive (nnmark.api.STAMP_WAIVES_NOTHING).
Results: benchmarks/results/blackbox_keys_<scheme>.{json,md}.

    .venv/bin/python benchmarks/blackbox_keys.py --scheme unrelated [--keys 20] [--fashion DIR]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from nnmark import OwnerKey, TrainConfig, embed, evaluate, load_data, new_model, train
from nnmark.api import bound_scheme, claim_threshold
from nnmark.config import parse_sets
from nnmark.data import SHARED_DATA
from nnmark.schemes import SCHEMES
from nnmark.schemes._trigger import black_box_schemes
from nnmark.suspect import ModuleSuspect

from _common import write_results

FASHION = SHARED_DATA / "fashion-mnist"
CREATED = "2026-01-01T00:00:00+00:00"  # fixed: a rerun marks the same models
ALPHA = 1e-6
BUDGETS = (30, 50, 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="unrelated", choices=black_box_schemes())
    ap.add_argument("--keys", type=int, default=20)
    ap.add_argument("--set", nargs="*", default=[], help="scheme options k=v (default: none)")
    ap.add_argument("--fashion", type=Path, default=FASHION)
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits = load_data("digits")
    source = f"fashion-mnist:{args.fashion}"
    fashion = load_data(source)
    recipe = TrainConfig(epochs=20, seed=0)

    def accuracy(model: torch.nn.Module) -> float:
        return evaluate(model, digits.loader("test", 512), "classification")["accuracy"]

    plain_model = train(new_model("cnn", digits, seed=0), digits, recipe)
    plain = accuracy(plain_model)
    stitch = SCHEMES.get(args.scheme).needs_trained
    options = {**({"source": source} if args.scheme == "unrelated" else {}), **parse_sets(args.set)}
    rows = []
    for i in range(args.keys):
        key = OwnerKey.new(f"owner {i}", nonce=f"{i + 7:032x}", created=CREATED)
        model, key = embed(
            plain_model if stitch else new_model("cnn", digits, seed=0),
            digits,
            args.scheme,
            options=options,
            key=key,
            config=recipe,
        )
        scheme = bound_scheme(key, 0, [digits, fashion])
        row = {
            "key": i,
            "trigger_accuracy": scheme.trigger_accuracy(model.eval()),  # type: ignore[attr-defined]
            "accuracy": accuracy(model),
        }
        threshold = claim_threshold(ALPHA, scheme.mark.derivation_seconds)
        for budget in BUDGETS:
            suspect = ModuleSuspect(model)
            suspect.max_queries = budget
            v = scheme.verify(suspect, alpha=threshold)
            row[f"p_{budget}"] = v.p_value
            row[f"found_{budget}"] = v.verdict == "found"
        rows.append(row)
        print(row, flush=True)
    found = sum(r["found_30"] for r in rows)
    drops = [plain - r["accuracy"] for r in rows]
    summary = {
        "keys": len(rows),
        "found_within_30": found,
        "found_within_50": sum(r["found_50"] for r in rows),
        "found_within_100": sum(r["found_100"] for r in rows),
        "claim_threshold": threshold,
        "worst_p_30": max(r["p_30"] for r in rows),
        "plain_accuracy": plain,
        "accuracy_drop_median": statistics.median(drops),
        "accuracy_drop_max": max(drops),
        "trigger_accuracy_min": min(r["trigger_accuracy"] for r in rows),
    }
    lines = [
        f"**{found} of {len(rows)} keys claimed within 30 queries** (p < {threshold:.2g}, exact "
        f"test; worst p {summary['worst_p_30']:.1e}); within 50: {summary['found_within_50']}; "
        f"within 100: {summary['found_within_100']}.",
        f"Plain test accuracy {plain:.4f}; the mark costs {summary['accuracy_drop_median']:.4f} "
        f"(median) to {summary['accuracy_drop_max']:.4f} (worst key); the least learned key "
        f"answers {summary['trigger_accuracy_min']:.2f} of its triggers.",
        "",
        "| key | trigger accuracy | test accuracy | p at 30 | p at 50 | p at 100 |",
        "|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {r['key']} | {r['trigger_accuracy']:.2f} | {r['accuracy']:.4f} | "
            f"{r['p_30']:.1e} | {r['p_50']:.1e} | {r['p_100']:.1e} |"
            for r in rows
        ),
    ]
    lines.insert(0, f"Scheme: **{args.scheme}**.\n")
    write_results(
        f"blackbox_keys_{args.scheme}", {"summary": summary, "rows": rows}, "\n".join(lines)
    )


if __name__ == "__main__":
    main()
