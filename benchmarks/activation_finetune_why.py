"""Why actsign and deepsigns marks on the digits resnet20 fade under the thief's fine-tune
(benchmarks/results/actsign_batchnorm.md): the fine-tuned weights or the BatchNorm running
statistics the fine-tune moved? And how far the host's values sit from zero, in units of their
spread over the test images.

Per (arch, scheme, key): the model marked at the default recipe (as actsign_batchnorm.py's `eval`
variant), `finetune:epochs=5` at attack seed k; BER of the marked model, of the fine-tuned one,
of the fine-tuned weights with the marked model's running statistics, and of the marked weights
with the fine-tuned statistics. `margin/spread`: for actsign, median over bits of s_j a_j over
the host unit's standard deviation on the test images; for deepsigns, median of s_j (mu . a_j)
over the standard deviation of (act . a_j) over the test images; `q10` the 10th percentile over
bits, after the fine-tune. `plain`: the twin trained from the same initial weights without a
mark (its accuracy, for the mark's cost).

    python benchmarks/activation_finetune_why.py [--archs resnet20,cnn] [--keys 4] [--threads 1]
        [--schemes actsign --set margin=0.1 --set margin_unit=absolute] [--name NAME]
        [--running-stats]
        (results: activation_finetune_why_margin-0.1_margin_unit-absolute, or NAME)

`--running-stats`: actsign's and deepsigns' penalties read the key inputs through BatchNorm's
running statistics (eval mode), as from session 42 until nnmark.schemes._activations.KeyReader.
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import torch
from torch import nn

from nnmark import attack, embed, load_data, train
from nnmark.api import bound_scheme, new_model
from nnmark.keys import OwnerKey
from nnmark.layers import evaluating
from nnmark.schemes._activations import REFERENCE_INPUTS, layer_output
from nnmark.schemes.actsign import ActSign
from nnmark.train import TrainConfig

from _common import accuracy_on_test, penalty_through_running_stats, write_results

CREATED = "2026-01-01T00:00:00+00:00"
ATTACK = "finetune:epochs=5"


def stats_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n or "num_batches" in n}


def with_stats(model: nn.Module, stats: dict[str, torch.Tensor]) -> nn.Module:
    out = copy.deepcopy(model)
    out.load_state_dict({**out.state_dict(), **stats})
    return out


def signed(scheme: Any, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(s_j * value_j on the key inputs, spread_j over x): what each bit's sign is read from."""
    s = scheme.target.float() * 2 - 1
    with torch.no_grad(), evaluating(model):
        out = layer_output(model, scheme.mark.layer or "", x)
        if isinstance(scheme, ActSign):
            return s * scheme.activations(model), out[:, scheme.cols].std(0)
        key = layer_output(model, scheme.mark.layer or "", scheme.x)
        return s * scheme.logits(key), (out @ scheme.a).std(0)


def ber(scheme: Any, model: nn.Module, x: torch.Tensor) -> float:
    v, _ = signed(scheme, model, x)
    return round(float((v <= 0).float().mean()), 4)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", default="resnet20,cnn")
    ap.add_argument("--schemes", default="actsign,deepsigns")
    ap.add_argument("--keys", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--set", action="append", default=[], help="scheme option k=v (e.g. margin=0.5)"
    )
    ap.add_argument("--attack", default=ATTACK, help=f"the thief's attack (default {ATTACK})")
    ap.add_argument("--name", help="results file name (default: from the options and attack)")
    ap.add_argument(
        "--running-stats",
        action="store_true",
        help="actsign's and deepsigns' penalties read the key inputs through the running "
        "statistics (eval mode), as before KeyReader",
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.running_stats:
        penalty_through_running_stats()
    options = dict(kv.split("=", 1) for kv in args.set)
    torch.set_num_threads(args.threads)
    data = load_data("digits")
    x, _ = data.tensors("test")
    accuracy = accuracy_on_test(data)
    t0 = time.perf_counter()
    rows = []
    plains: dict[tuple[str, int], float] = {}
    for arch in args.archs.split(","):
        for name in args.schemes.split(","):
            for k in range(args.keys):
                seed = 100 + k
                key = OwnerKey.new(
                    f"owner {name} {arch} {k}", nonce=f"{k:02x}" * 16, created=CREATED
                )
                model, key = embed(
                    new_model(arch, data, seed=seed),
                    data,
                    name,
                    key=key,
                    options=options or None,
                    config=TrainConfig(seed=seed),
                )
                if (arch, seed) not in plains:
                    plain = train(new_model(arch, data, seed=seed), data, TrainConfig(seed=seed))
                    plains[arch, seed] = round(accuracy(plain), 4)
                scheme = bound_scheme(key, 0, data)
                tuned = attack(model, args.attack, data, seed=k)
                v, spread = signed(scheme, model, x)
                vt, spread_t = signed(scheme, tuned, x)
                row = {
                    "arch": arch,
                    "scheme": name,
                    "key": k,
                    "layer": key.marks[0].layer,
                    "accuracy": round(accuracy(model), 4),
                    "plain": plains[arch, seed],
                    "marked": ber(scheme, model, x),
                    "tuned": ber(scheme, tuned, x),
                    "tuned_weights_marked_stats": ber(
                        scheme, with_stats(tuned, stats_of(model)), x
                    ),
                    "marked_weights_tuned_stats": ber(
                        scheme, with_stats(model, stats_of(tuned)), x
                    ),
                    "margin_over_spread": round(float((v / spread).median()), 3),
                    "margin_over_spread_tuned": round(float((vt / spread_t).median()), 3),
                    "q10_tuned": round(float((vt / spread_t).quantile(0.1)), 3),
                    "value_median": round(float(v.median()), 4),
                    "spread_median": round(float(spread.median()), 4),
                }
                rows.append(row)
                print(row, flush=True)
    payload = {
        "attack": args.attack,
        "options": options,
        "penalty_reads": "running statistics"
        if args.running_stats
        else f"KeyReader ({REFERENCE_INPUTS} reference inputs)",
        "seconds": round(time.perf_counter() - t0, 1),
        "rows": rows,
    }
    md = markdown(payload)
    print(md)
    if not args.no_write:
        suffix = "".join(f"_{k}-{v}" for k, v in sorted(options.items()))
        if args.attack != ATTACK:
            suffix += "_" + "".join(c if c.isalnum() or c in ".-" else "-" for c in args.attack)
        write_results(args.name or "activation_finetune_why" + suffix, payload, md)


def markdown(payload: dict[str, Any]) -> str:
    cols = [
        "layer",
        "accuracy",
        "plain",
        "marked",
        "tuned",
        "tuned_weights_marked_stats",
        "marked_weights_tuned_stats",
        "margin_over_spread",
        "margin_over_spread_tuned",
        "q10_tuned",
        "value_median",
        "spread_median",
    ]
    out = [
        f"Marked at the default recipe (options {payload['options'] or 'none'}; the "
        f"penalty reads the key inputs through "
        f"{payload.get('penalty_reads', 'running statistics (eval mode)')}), then "
        f"`{payload['attack']}` at "
        "attack seed k. BERs read in eval mode; `margin_over_spread`: median over bits of the "
        "signed value the bit is read from over its spread across the test images.",
        "",
        "| arch | scheme | key | " + " | ".join(cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for r in payload["rows"]:
        out.append(
            f"| {r['arch']} | {r['scheme']} | {r['key']} | "
            + " | ".join(str(r.get(c, "-")) for c in cols)
            + " |"
        )
    out += [
        "",
        "| arch | scheme | marked - plain (points, mean) | worst BER after the fine-tune | "
        "mean BER after the fine-tune | keys above BER 0.2 after it | keys not at BER 0 marked |",
        "|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in payload["rows"]:
        groups.setdefault((r["arch"], r["scheme"]), []).append(r)
    for (arch, name), rs in groups.items():
        cost = sum(r["accuracy"] - r["plain"] for r in rs) / len(rs) * 100
        tuned = [r["tuned"] for r in rs]
        out.append(
            f"| {arch} | {name} | {cost:+.2f} | {max(tuned)} | {sum(tuned) / len(tuned):.3f} | "
            f"{sum(t > 0.2 for t in tuned)}/{len(rs)} | {sum(r['marked'] > 0 for r in rs)} |"
        )
    out += ["", f"Run time: {payload['seconds']} s."]
    return "\n".join(out)


if __name__ == "__main__":
    main()
