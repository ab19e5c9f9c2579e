"""Uchida (64 bits, digits cnn) against every training-based removal and extraction attack.

Protocol: the owner trains the zoo `cnn` on the digits train split for 20 epochs (Adam, lr 1e-3,
cosine, seed 0) with a 64-bit random-key Uchida mark in the default host layer (the test
suite's `uchida_cnn` recipe). Each attack then runs once with its default options (seed 0) on
the digits thief split (270 images, disjoint from train and test), and the owner verifies with
the key. Per attack: the owner's BER, p-value and verdict, digits test accuracy before / after,
and the attack's wall time. A failed cell records its error and the sweep goes on.

A suspect with no tensor under the key's layer name (`ensemble`: its tensors are
`members.<i>.*`) has no BER: the row shows "-" and the verifier's reason, and gives each member's
BER read under the key. What an attack noted about the model (`nnmark.attacks.base.findings`)
goes in the notes: Neural Cleanse's flagged class; the overwriting thief's own BER and the epochs
they trained (rounds of 5 until their own mark is in; `rounds=1` is a fixed 5-epoch budget).

    python benchmarks/train_attacks.py
"""

from __future__ import annotations

import argparse
import time
import traceback
from typing import Any

import torch

from nnmark import OwnerKey, TrainConfig, attack, embed, evaluate, load_data, new_model, verify
from nnmark.attacks.base import findings

from _common import write_results

FASHION = "fashion-mnist:/work/shared/data/fashion-mnist"

SPECS = [
    "finetune",
    f"finetune:domain={FASHION},fraction=0.2",
    "overwrite:bits=64,rounds=1",
    "overwrite:bits=64",
    "overwrite:bits=256",
    "overwrite:bits=64,lr=0.01",
    "overwrite:bits=256,lr=0.01",
    "distill",
    "distill:labels_only=true",
    "distill:queries=100",
    "knockoff",
    "knockoff:sampling=adaptive",
    "copycat",
    "unlearn:guess=noise",
    "unlearn:guess=ood",
    "unlearn:guess=pattern",
    "fineprune",
    "neuralcleanse",
    "advtrain",
    "advtrain:steps=5",
    "labelsmooth",
    "regularize",
    "weightshift",
    "launder",
    "labelnoise",
    "transfer",
    "ensemble",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster here)")
    ap.add_argument("--only", default="", help="comma-free substring filter on the specs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    data = load_data("digits")
    test = data.loader("test", 512)
    key = OwnerKey.new("test owner", nonce="00" * 16)
    model, key = embed(
        new_model("cnn", data, seed=0),
        data,
        "uchida",
        key=key,
        bits=64,
        config=TrainConfig(epochs=20, seed=0),
    )
    base_acc = evaluate(model, test, data.task)["accuracy"]
    base = verify(model, key)
    rows: list[dict[str, Any]] = [
        {
            "attack": "(none)",
            "ber": base.ber,
            "p_value": base.p_value,
            "verdict": base.verdict,
            "acc_before": base_acc,
            "acc_after": base_acc,
            "seconds": 0.0,
        }
    ]
    for spec in SPECS:
        if args.only and args.only not in spec:
            continue
        row: dict[str, Any] = {
            "attack": spec.replace(FASHION, "fashion-mnist"),
            "acc_before": base_acc,
        }
        t0 = time.time()
        try:
            out = attack(model, spec, data, seed=0)
            row["seconds"] = time.time() - t0
            row["acc_after"] = evaluate(out, test, data.task)["accuracy"]
            if hasattr(out, "members"):
                row["member_ber"] = [verify(m, key).ber for m in out.members]
            row["findings"] = {
                k: v for k, v in findings(out).items() if k not in ("mask_norms", "anomaly")
            }
            try:
                v = verify(out, key)
                row.update(p_value=v.p_value, verdict=v.verdict)
                # no bits were read (e.g. the layer is absent): no BER, the reason instead
                row["ber"] = v.ber if v.reason is None else None
                if v.reason is not None:
                    row["reason"] = v.reason
            except Exception as exc:  # noqa: BLE001 - the cell records it, the sweep goes on
                row["verify_error"] = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # noqa: BLE001
            row["seconds"] = time.time() - t0
            row["error"] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        print(row, flush=True)
        rows.append(row)
    total = time.time() - start

    def f(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        "Uchida, 64 bits, digits `cnn` (20 epochs, seed 0) vs the training-based attacks, each",
        "with its default options and seed 0 on the digits thief split (270 images).",
        "",
        "| attack | owner BER | p-value | verdict | acc before | acc after | wall s | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        notes = []
        if "member_ber" in r:
            notes.append("member BER " + ", ".join(f"{b:.3f}" for b in r["member_ber"]))
        for k, v in r.get("findings", {}).items():
            shown = format(v, ".3f") if isinstance(v, float) else ("none" if v is None else v)
            notes.append(f"{k.replace('_', ' ')} {shown}")
        for k in ("reason", "verify_error", "error"):
            if k in r:
                notes.append(r[k])
        lines.append(
            f"| `{r['attack']}` | {f(r.get('ber'), '.3f')} | {f(r.get('p_value'), '.2e')} | "
            f"{r.get('verdict', '-')} | {r['acc_before']:.3f} | {f(r.get('acc_after'), '.3f')} | "
            f"{f(r.get('seconds'), '.1f')} | {'; '.join(notes)} |"
        )
    lines += ["", f"Total wall time {total:.0f} s (shared 2-core machine under load)."]
    payload = {
        "protocol": __doc__,
        "owner": {"scheme": "uchida", "bits": 64, "arch": "cnn", "epochs": 20, "seed": 0},
        "rows": rows,
        "total_seconds": total,
    }
    write_results("train_attacks", payload, "\n".join(lines))


if __name__ == "__main__":
    main()
