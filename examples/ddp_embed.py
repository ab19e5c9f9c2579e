"""Embed a mark with DistributedDataParallel on CPU (gloo), one data shard per process.

    torchrun --standalone --nproc_per_node=2 examples/ddp_embed.py --scheme uchida --epochs 5 \\
        --out /tmp/ddp-mark

Every rank builds the same model (same seed) and the same key (rank 0 draws the nonce and
broadcasts the key), trains on its shard of the data (the single-process order dealt out rank by
rank) with `nnmark.integrations.ddp.fit_ddp`, and writes rank<r>.json (its BER and a SHA-256 of
its weights: equal on every rank). Rank 0 also writes the marked model and the key, which
`nnmark verify` reads as usual:

    nnmark verify /tmp/ddp-mark/marked.safetensors --key /tmp/ddp-mark/owner.nnkey
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nnmark import OwnerKey, TrainConfig, load_data, model_info, new_model, save_model, verify
from nnmark.config import build_config
from nnmark.integrations.ddp import fit_ddp, state_hash
from nnmark.io import atomic_write_text
from nnmark.schemes import SCHEMES


def scheme_options(pairs: list[str], scheme: str) -> dict[str, Any]:
    """The `--set scheme.option=value` pairs of one scheme (values parsed as JSON if they can)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        owner, _, option = name.partition(".")
        if owner == scheme:
            try:
                out[option] = json.loads(value)
            except json.JSONDecodeError:
                out[option] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scheme", default="uchida", help="a scheme, or several: uchida+content")
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32, help="per rank")
    ap.add_argument("--model", default="cnn")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SCHEME.OPTION=VALUE",
        help="a scheme option, e.g. tartaglione.R=1 (repeatable)",
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    torch.set_num_threads(1)  # one core per process
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    data = load_data("digits")
    model = new_model(args.model, data, seed=0)

    # The key must be the same on every rank: rank 0 plans it, everyone receives its JSON.
    box: list[object] = [None]
    if rank == 0:
        key = OwnerKey.new("ddp owner")
        for name in args.scheme.split("+"):  # "uchida+tartaglione": both in one training
            cls = SCHEMES.get(name)
            options: Any = build_config(cls.Config, scheme_options(args.set, name))
            key = key.with_mark(cls.plan(model, key, options, bits=args.bits, data=data))
        box[0] = json.dumps(key.to_json())
    dist.broadcast_object_list(box, src=0)
    key = OwnerKey.from_json(json.loads(str(box[0])))
    schemes = [SCHEMES.get(m.scheme)(m) for m in key.marks]

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=0)
    model = fit_ddp(model, data, schemes, config)

    verdict = verify(model, key)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "rank": rank,
        "world_size": dist.get_world_size(),
        "verdict": verdict.verdict,
        "p_value": verdict.p_value,
        "parts": {
            p.scheme: {"verdict": p.verdict, "ber": p.ber, p.statistic_name: p.statistic}
            for p in verdict.parts or [verdict]
        },
        "sha256": state_hash(model),
    }
    atomic_write_text(args.out / f"rank{rank}.json", json.dumps(report))
    if rank == 0:
        save_model(model, model_info(model, data), args.out / "marked.safetensors")
        key.save(args.out / "owner.nnkey")
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:  # once, after every rank has written its report: success says what it made
        parts = ", ".join(f"{p.scheme} {p.verdict}" for p in verdict.parts or [verdict])
        print(
            f"{verdict.verdict} on {report['world_size']} ranks ({parts}; p {verdict.p_value:.3g}); "
            f"saved {args.out / 'marked.safetensors'}, {args.out / 'owner.nnkey'} and the "
            "ranks' reports (rank*.json)"
        )


if __name__ == "__main__":
    main()
