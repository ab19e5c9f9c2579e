"""Fingerprints: 8 recipients' copies of one digits CNN, each leaked after fine-tuning; does
`identify` name the right recipient every time, and nobody for unmarked models?

Protocol: base = digits cnn trained `--base-epochs` epochs (seed 0, no mark); each recipient's
copy = fine-tune-to-embed a 64-bit Uchida mark (`--embed-epochs` epochs, their own key with a
fixed nonce); each copy is attacked with `finetune:epochs=3` (the thief's split, Adam 1e-3) and,
as a harder case, `finetune:epochs=10,lr=0.003`; keys are saved and re-loaded from a folder as
`nnmark identify --keys DIR` does; alpha 1e-6, Bonferroni over the 8 candidates. Unmarked
suspects: the base itself and `--unmarked` digits cnns trained from other seeds.

    python benchmarks/fingerprints.py [--recipients 8] [--unmarked 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nnmark import TrainConfig, attack, evaluate, load_data, new_model, train
from nnmark.fingerprint import fingerprint, identify, load_keys
from nnmark.testing.tsa import seen_now

from _common import loopback_stamps, write_results

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
ATTACKS = ["finetune:epochs=3", "finetune:epochs=10,lr=0.003"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=8)
    ap.add_argument("--unmarked", type=int, default=3)
    ap.add_argument("--base-epochs", type=int, default=20)
    ap.add_argument("--embed-epochs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_data("digits")
    test = data.loader("test", 256)
    acc = lambda m: evaluate(m, test, data.task)["accuracy"]  # noqa: E731
    t0 = time.perf_counter()
    base = train(new_model("cnn", data, seed=0), data, TrainConfig(epochs=args.base_epochs))
    names = NAMES[: args.recipients]
    copies = fingerprint(
        base,
        data,
        names,
        "uchida",
        config=TrainConfig(epochs=args.embed_epochs, seed=0),
        secret=b"nnmark fingerprints, fixed for reruns",
        created="2026-01-01T00:00:00+00:00",  # with the secret: the same keys every run
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # the copies' keys are timestamped when they go out: identify holds each to verify's rule
        stamp, certs = loopback_stamps()
        for name, (_, key) in zip(names, copies):
            stamp(key).save(Path(tmp) / f"{name}.nnkey")
        keys = load_keys(tmp)
        for name, (model, _) in zip(names, copies):
            for spec in ATTACKS:
                leaked = attack(model, spec, data)
                r = identify(leaked, keys, tsa_certs=certs, suspect_seen=seen_now())
                own = next(c for c in r.candidates if c.owner == name)
                others = [c.p_adjusted for c in r.candidates if c.owner != name]
                rows.append(
                    {
                        "suspect": f"{name}'s copy",
                        "attack": spec,
                        "accuracy": acc(leaked),
                        "named": r.named,
                        "correct": r.named == name and not r.also_found,
                        "own_ber": own.ber,
                        "own_p_adjusted": own.p_adjusted,
                        "min_other_p_adjusted": min(others) if others else None,
                    }
                )
        unmarked = [("base (unmarked)", base)] + [
            (
                f"unmarked seed {s}",
                train(
                    new_model("cnn", data, seed=s),
                    data,
                    TrainConfig(epochs=args.base_epochs, seed=s),
                ),
            )
            for s in range(100, 100 + args.unmarked)
        ]
        for label, model in unmarked:
            r = identify(model, keys, tsa_certs=certs, suspect_seen=seen_now())
            rows.append(
                {
                    "suspect": label,
                    "attack": "-",
                    "accuracy": acc(model),
                    "named": r.named,
                    "correct": r.named is None,
                    "own_ber": None,
                    "own_p_adjusted": None,
                    "min_other_p_adjusted": min(c.p_adjusted for c in r.candidates),
                }
            )
    seconds = time.perf_counter() - t0
    ok = sum(r["correct"] for r in rows)
    lines = [
        f"{len(names)} recipients, base accuracy {acc(base):.4f}; Uchida "
        f"{len(copies[0][1].marks[0].bits)} bits (the default), fine-tune-to-embed "
        f"{args.embed_epochs} epochs; alpha 1e-6, Bonferroni over {len(names)} candidates.",
        "",
        f"**{ok}/{len(rows)} suspects identified correctly** (leaked copies: the right recipient "
        "and nobody else; unmarked models: nobody).",
        "",
        "| suspect | attack | accuracy | named | correct | own BER | own adjusted p "
        "| smallest other adjusted p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for r in rows:
        lines.append(
            f"| {r['suspect']} | {r['attack']} | {r['accuracy']:.4f} | {r['named'] or 'none'} "
            f"| {'yes' if r['correct'] else 'NO'} | {fmt(r['own_ber'], '.3f')} "
            f"| {fmt(r['own_p_adjusted'], '.2g')} | {fmt(r['min_other_p_adjusted'], '.2g')} |"
        )
    lines += ["", f"Total time {seconds:.0f} s (1 torch thread)."]
    write_results(
        "fingerprints",
        {"args": vars(args), "rows": rows, "correct": ok, "total": len(rows), "seconds": seconds},
        "\n".join(lines),
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
