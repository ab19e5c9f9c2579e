"""actsign and deepsigns on resnet20 at the schemes' default recipe: is the mark found before any
attack and after the thief's fine-tune, with the penalty read in the trainer's mode ("train", the
code before session 42), in eval mode through the running statistics ("running", sessions 42 to
45) or as the code reads it now ("eval": eval mode, BatchNorm normalising the key inputs by the
training inputs' statistics, nnmark.schemes._activations.KeyReader, session 46)? The committed
actsign_batchnorm.md is of session 45, where "eval" was the running statistics.

Why the two: the host's activations on the key inputs pass through the BatchNorm layers before
it. In train mode those normalise with the key inputs' own batch statistics (actsign's 64 bits
sit on one uniform-noise image; deepsigns' on 20 images of one class); verification runs the
model in eval mode, with the running statistics of the training data. A sign set under the first
is not the sign read under the second. On the digits cnn and mlp (no BatchNorm, no dropout) the
two modes compute the same thing. Besides the verdicts, each row reports the BER read in train
mode (the key inputs' batch statistics, running statistics left alone): the bits the penalty saw.

Per (scheme, variant, key k): a fresh model of seed 100 + k marked at TrainConfig(seed=100 + k)
(the library's 20 epochs) and the scheme's default config, 64 bits; verified as given and after
`finetune:epochs=3` and `finetune:epochs=5` (the thief split, attack seed k).

Per (arch, scheme, key), the Markdown also says whether the two variants' marked weights are
bit-identical (on a model without BatchNorm and dropout they must be).

    python benchmarks/actsign_batchnorm.py [--archs resnet20,cnn,mlp] [--keys 6] [--threads 1]
        [--variants train,running,eval]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch

import nnmark.schemes.actsign as actsign_mod
from nnmark import attack, embed, load_data, verify
from nnmark.api import bound_scheme, new_model
from nnmark.io import weights_sha256
from nnmark.keys import OwnerKey
from nnmark.schemes._activations import KeyReader, layer_output
from nnmark.schemes._positions import frozen_running_stats
from nnmark.train import TrainConfig

from _common import accuracy_on_test, penalty_through_running_stats, write_results

CREATED = "2026-01-01T00:00:00+00:00"  # fixed: the key (its every secret) is reproducible
ATTACKS = ("finetune:epochs=3", "finetune:epochs=5")


@contextlib.contextmanager
def _trainers_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    yield model  # the penalty before session 42: whatever mode the trainer holds the model in


def _read_in_trainers_mode(
    _self: KeyReader, model: torch.nn.Module, layer: str, x: torch.Tensor, _batch: object
) -> torch.Tensor:
    return layer_output(model, layer, x)  # deepsigns' penalty before session 42


@contextlib.contextmanager
def variant(name: str) -> Iterator[None]:
    """ "train": the schemes' penalty read in the trainer's mode (the code before session 42);
    "running": through the running statistics (sessions 42 to 45); else as the code reads it."""
    saved = actsign_mod.evaluating, KeyReader.__call__
    if name == "train":
        actsign_mod.evaluating = _trainers_mode  # type: ignore[assignment]
        KeyReader.__call__ = _read_in_trainers_mode  # type: ignore[method-assign]
    elif name == "running":
        penalty_through_running_stats()
    try:
        yield
    finally:
        actsign_mod.evaluating, KeyReader.__call__ = saved  # type: ignore[method-assign]


def train_mode_ber(model: torch.nn.Module, key: OwnerKey) -> float:
    """BER of the bits read in train mode (batch statistics of the key inputs)."""
    scheme = bound_scheme(key, 0)
    was = model.training
    model.train()
    try:
        with torch.no_grad(), frozen_running_stats(model):
            if isinstance(scheme, actsign_mod.ActSign):
                bits = scheme.activations(model) > 0
            else:
                out = layer_output(model, scheme.mark.layer or "", scheme.x)
                bits = scheme.logits(out) > 0
    finally:
        model.train(was)
    return float((bits.long() != scheme.target).float().mean())


def _read(v: Any) -> dict[str, Any]:
    return {"ber": round(v.ber, 4), "p": v.p_value, "found": v.verdict == "found"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="resnet20,cnn,mlp")
    ap.add_argument("--schemes", default="actsign,deepsigns")
    ap.add_argument("--variants", default="train,eval")
    ap.add_argument("--keys", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data("digits")
    accuracy = accuracy_on_test(data)
    t0 = time.perf_counter()
    rows = []
    for arch in args.archs.split(","):
        for scheme in args.schemes.split(","):
            for var in args.variants.split(","):
                for k in range(args.keys):
                    seed = 100 + k
                    key = OwnerKey.new(
                        f"owner {scheme} {arch} {k}", nonce=f"{k:02x}" * 16, created=CREATED
                    )
                    with variant(var):
                        model, key = embed(
                            new_model(arch, data, seed=seed),
                            data,
                            scheme,
                            key=key,
                            config=TrainConfig(seed=seed),
                        )
                    row: dict[str, Any] = {
                        "arch": arch,
                        "scheme": scheme,
                        "variant": var,
                        "key": k,
                        "layer": key.marks[0].layer,
                        "weights_sha256": weights_sha256(model),
                        "accuracy": round(accuracy(model), 4),
                        "train_mode_ber": train_mode_ber(model, key),
                        "given": _read(verify(model, key)),
                    }
                    for spec in ATTACKS:
                        tuned = attack(model, spec, data, seed=k)
                        row[spec] = _read(verify(tuned, key))
                    rows.append(row)
                    print(row, flush=True)
    payload = {
        "protocol": {
            "data": "digits",
            "recipe": "TrainConfig(seed=100 + key), scheme defaults, 64 bits",
            "attacks": list(ATTACKS),
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    md = markdown(payload)
    print(md)
    if not args.no_write:
        write_results("actsign_batchnorm", payload, md)


def markdown(payload: dict[str, Any]) -> str:
    out = [
        "actsign and deepsigns at the default recipe (TrainConfig(): 20 epochs; scheme defaults; "
        "64 bits; key k marks a fresh model of seed 100 + k). Variant `train`: the penalty "
        "read in the trainer's mode (the code before session 42: BatchNorm normalises the key "
        "inputs with their own batch statistics); `running`: in eval mode, through the running "
        "statistics (sessions 42 to 45); `eval`: as the code reads it (KeyReader: eval mode, "
        "BatchNorm normalising the key inputs by the training inputs' statistics). `weights as train's`: keys whose marked weights are bit-identical to the `train` variant's. Per cell: found / keys (BER of each key, in key order); `train-mode BER`: the "
        "bits read with the key inputs' batch statistics (what the penalty saw in `train`).",
        "",
        "| arch | scheme | variant | weights as `train`'s | accuracy (mean, min) | "
        "train-mode BER | as given | " + " | ".join(ATTACKS) + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(ATTACKS),
    ]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in payload["rows"]:
        groups.setdefault((r["arch"], r["scheme"], r["variant"]), []).append(r)

    def cell(rs: list[dict[str, Any]], col: str) -> str:
        found = sum(r[col]["found"] for r in rs)
        return f"{found}/{len(rs)} (" + " ".join(f"{r[col]['ber']:.3f}" for r in rs) + ")"

    for (arch, scheme, var), rs in groups.items():
        before = {r["key"]: r["weights_sha256"] for r in groups.get((arch, scheme, "train"), [])}
        same = sum(before.get(r["key"]) == r["weights_sha256"] for r in rs)
        acc = [r["accuracy"] for r in rs]
        tm = " ".join(f"{r['train_mode_ber']:.3f}" for r in rs)
        out.append(
            f"| {arch} | {scheme} | {var} | {same}/{len(rs)} | {100 * sum(acc) / len(acc):.2f}, "
            f"{100 * min(acc):.2f} | {tm} | {cell(rs, 'given')} | "
            + " | ".join(cell(rs, a) for a in ATTACKS)
            + " |"
        )
    out += ["", f"Run time: {payload['seconds']} s."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
