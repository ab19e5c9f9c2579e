"""`unrelated` over many keys: does every key's mark reach a claim within 30 queries?

One plain digits CNN and one marked CNN per key (same init, the library's default recipe: 20
epochs, Adam), Fashion-MNIST items as the unrelated source (`../shared/data/fashion-mnist`).
Reports per key the share of the key's triggers answered with their key label, the test accuracy
against the plain model's, and the exact test at 30 and 50 queries (alpha 1e-6: the claim rule
with a verified timestamp; without one unrelated cannot claim, its 10 source classes cap the
evidence at p = 1e-10).

    .venv/bin/python benchmarks/unrelated_keys.py [--keys 20] [--fashion DIR]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from nnmark import OwnerKey, TrainConfig, embed, evaluate, load_data, new_model, train
from nnmark.api import bound_scheme
from nnmark.suspect import ModuleSuspect

from _common import write_results

FASHION = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"
CREATED = "2026-01-01T00:00:00+00:00"  # fixed: a rerun marks the same models
ALPHA = 1e-6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20)
    ap.add_argument("--fashion", type=Path, default=FASHION)
    args = ap.parse_args()
    torch.set_num_threads(1)
    digits = load_data("digits")
    source = f"fashion-mnist:{args.fashion}"
    fashion = load_data(source)
    recipe = TrainConfig(epochs=20, seed=0)

    def accuracy(model: torch.nn.Module) -> float:
        return evaluate(model, digits.loader("test", 512), "classification")["accuracy"]

    plain = accuracy(train(new_model("cnn", digits, seed=0), digits, recipe))
    rows = []
    for i in range(args.keys):
        key = OwnerKey.new(f"owner {i}", nonce=f"{i + 7:032x}", created=CREATED)
        model, key = embed(
            new_model("cnn", digits, seed=0),
            digits,
            "unrelated",
            options={"source": source},
            key=key,
            config=recipe,
        )
        scheme = bound_scheme(key, 0, [digits, fashion])
        row = {
            "key": i,
            "trigger_accuracy": scheme.trigger_accuracy(model),  # type: ignore[attr-defined]
            "accuracy": accuracy(model),
        }
        for budget in (30, 50):
            suspect = ModuleSuspect(model)
            suspect.max_queries = budget
            v = scheme.verify(suspect, alpha=ALPHA)
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
        "worst_p_30": max(r["p_30"] for r in rows),
        "plain_accuracy": plain,
        "accuracy_drop_median": statistics.median(drops),
        "accuracy_drop_max": max(drops),
        "trigger_accuracy_min": min(r["trigger_accuracy"] for r in rows),
    }
    lines = [
        f"**{found} of {len(rows)} keys claimed within 30 queries** (alpha {ALPHA:g}, exact "
        f"test; worst p {summary['worst_p_30']:.1e}); within 50: {summary['found_within_50']}.",
        f"Plain test accuracy {plain:.4f}; the mark costs {summary['accuracy_drop_median']:.4f} "
        f"(median) to {summary['accuracy_drop_max']:.4f} (worst key); the least learned key "
        f"answers {summary['trigger_accuracy_min']:.2f} of its triggers.",
        "",
        "| key | trigger accuracy | test accuracy | p at 30 | p at 50 |",
        "|---:|---:|---:|---:|---:|",
        *(
            f"| {r['key']} | {r['trigger_accuracy']:.2f} | {r['accuracy']:.4f} | "
            f"{r['p_30']:.1e} | {r['p_50']:.1e} |"
            for r in rows
        ),
    ]
    write_results("unrelated_keys", {"summary": summary, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
