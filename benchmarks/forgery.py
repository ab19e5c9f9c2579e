"""Forgery: every strategy of the forger's toolbox (nnmark.forge) against every registered scheme.

Issue 12 asks: on at least 5 digits models the forger never marked (cnn and mlp) and on a model
marked by someone else, 0 forged keys accepted (refused or not_found), and the nonce search's
measured rate with its extrapolated cost to reach the claim rule (> 1,000 CPU-years).

Protocol: `--plain` unmarked models per architecture (cnn, mlp; seeds 100, 101, ...; 10 epochs,
the default recipe otherwise), and per scheme one cnn marked by a "victim" with that scheme's
default recipe (20 epochs; frontier: fine-tune-to-embed on a trained cnn). Each model is the
forger's target; every strategy runs against every scheme (`nnmark.forge.forge`), with the
victim's key for the identity edit and a loopback RFC 3161 TSA for the late timestamp (the
suspect counts as seen before the forger starts, `suspect_seen`). A key counts as accepted when
`verify` says found (or intact). Trained models are cached under runs/forgery.

    .venv/bin/python benchmarks/forgery.py [--plain 3] [--budget 2]
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import functools
import time
from pathlib import Path
from typing import Any

import torch

from nnmark import TrainConfig, embed, load_data, new_model, train
from nnmark.bench.cache import ModelCache
from nnmark.forge import STRATEGIES, Target, forge, nonce_search
from nnmark.keys import OwnerKey
from nnmark.schemes import SCHEMES
from nnmark.testing.tsa import LoopbackTSA

from _common import write_results

CACHE = Path("runs/forgery")


def cached(name: str, make: Any) -> tuple[torch.nn.Module, OwnerKey | None]:
    """A model (and key) from the bench's model cache (`nnmark.bench.cache`), or made and
    stored; `make` returns (model, key or None, data)."""
    return ModelCache(CACHE).get(name, name, make)


def victim(scheme: str, data: Any) -> tuple[torch.nn.Module, OwnerKey, Any]:
    """The victim's model, marked with the scheme's default recipe."""
    net = new_model("cnn", data, seed=7)
    if SCHEMES.get(scheme).needs_trained:
        net = train(net, data, TrainConfig(epochs=10, seed=7))
    options = {"unrelated": {"source": data.name}}.get(scheme)
    model, key = embed(
        net, data, scheme, options=options, owner="victim", config=TrainConfig(seed=7)
    )
    return model.eval(), key, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plain", type=int, default=3, help="unmarked models per architecture")
    ap.add_argument("--budget", type=float, default=2.0, help="nonce-search seconds per scheme")
    ap.add_argument("--schemes", nargs="*", default=None)
    args = ap.parse_args()
    data = load_data("digits")
    schemes = args.schemes or [s for s in SCHEMES.names() if SCHEMES.get(s).task != "segmentation"]
    targets: list[tuple[str, torch.nn.Module, OwnerKey | None, str | None]] = []
    for arch in ("cnn", "mlp"):
        for i in range(args.plain):
            seed = 100 + i

            def make(arch: str = arch, seed: int = seed) -> Any:
                net = train(
                    new_model(arch, data, seed=seed), data, TrainConfig(epochs=10, seed=seed)
                )
                return net.eval(), None, data

            model, _ = cached(f"plain_{arch}_{seed}", make)
            targets.append((f"plain {arch} {seed}", model, None, None))
    for scheme in schemes:
        model, key = cached(f"victim_{scheme}", functools.partial(victim, scheme, data))
        targets.append((f"marked by someone else ({scheme})", model, key, scheme))
    table = dict(STRATEGIES, nonce_search=functools.partial(nonce_search, budget_s=args.budget))
    rows: list[dict[str, Any]] = []
    start = time.time()
    with LoopbackTSA() as tsa:
        for label, model, key, only in targets:
            seen = dt.datetime.now(dt.timezone.utc)  # the forger starts after the suspect exists
            target = Target(
                model.eval(),
                data,
                key,
                suspect_seen=seen,
                tsa_url=tsa.url,
                tsa_certs=[tsa.ca_cert_pem],
            )
            for r in forge(target, [only] if only else schemes, None, table):
                rows.append({"target": label, **dataclasses.asdict(r)})
            print(f"{label}: {len(rows)} attempts so far, {time.time() - start:.0f} s", flush=True)
    summary: dict[str, dict[str, int]] = collections.defaultdict(collections.Counter)  # type: ignore[arg-type]
    for r in rows:
        summary[f"{r['scheme']}|{r['strategy']}"][r["outcome"]] += 1
    searches = [r for r in rows if r["strategy"] == "nonce_search" and r["extra"].get("tries")]
    accepted = [r for r in rows if r["outcome"] == "found"]
    md = [
        "Every strategy of `nnmark.forge` against every scheme, on "
        f"{2 * args.plain} never-marked digits models (cnn, mlp) and one model per scheme marked "
        "by someone else. A key is accepted when `verify` says found (or intact).",
        "",
        f"**Forged keys accepted: {len(accepted)} of {len(rows)}** "
        f"(refused {sum(r['outcome'] == 'refused' for r in rows)}, not_found "
        f"{sum(r['outcome'] == 'not_found' for r in rows)}, not applicable "
        f"{sum(r['outcome'] == 'not_applicable' for r in rows)}).",
        "",
        "| scheme | strategy | refused | not_found | found | not applicable |",
        "|---|---|---|---|---|---|",
    ]
    for k in sorted(summary):
        scheme, strategy = k.split("|")
        c = summary[k]
        md.append(
            f"| {scheme} | {strategy} | {c['refused']} | {c['not_found']} | {c['found']} | "
            f"{c['not_applicable']} |"
        )
    md += [
        "",
        "## Nonce search",
        "",
        "Tries per second (each a full key derivation and verification) and the extrapolated "
        "cost, at that rate, of a search reaching the claim rule's p-value (p below alpha and "
        "the p of a 1,000 CPU-year search): the claim rule requires more than 1,000 CPU-years.",
        "",
        "| target | scheme | tries | tries / s | KDF s / try | best p | claim p | cost (CPU-years) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in searches:
        e = r["extra"]
        md.append(
            f"| {r['target']} | {r['scheme']} | {e['tries']} | {e['tries_per_second']:.2f} | "
            f"{e['kdf_seconds_per_try']:.3f} | {e.get('best_p', 1):.3g} | {e['claim_p']:.2g} | "
            f"{e['cost_cpu_years_at_this_rate']:.3g} |"
        )
    if accepted:
        md += ["", "## Accepted (holes)", ""]
        md += [
            f"- {r['target']} / {r['scheme']} / {r['strategy']}: {r['detail']}" for r in accepted
        ]
    min_cost = min((r["extra"]["cost_cpu_years_at_this_rate"] for r in searches), default=0)
    payload = {
        "accepted": len(accepted),
        "attempts": len(rows),
        "min_search_cost_cpu_years": min_cost,
        "seconds": round(time.time() - start, 1),
        "rows": rows,
    }
    write_results("forgery", payload, "\n".join(md))
    print(f"accepted {len(accepted)} of {len(rows)}; cheapest search {min_cost:.3g} CPU-years")


if __name__ == "__main__":
    main()
