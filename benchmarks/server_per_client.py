"""One address floods `nnmark serve`; does an honest client at another address still get answers?

Protocol: an (untrained) digits CNN served by `nnmark serve` in its own process, loopback. For
`--seconds`, `--clients` asyncio clients (httpx, one connection each) bound to 127.0.0.2 send
inference requests of `--batch` images back to back (503s are counted and retried at once: a
flood does not wait), while one honest client at 127.0.0.1 sends one request of the same batch
every 100 ms. Run twice: with the default per-client bounds (32 connections, a quarter of the
inference slots and of the body memory per address) and with them off
(`--max-connections-per-client 0`, as behind a proxy). Reported per run: the flood's outcomes
(200, 503, connection errors), the honest client's share of 200s and its latency quantiles.

    .venv/bin/python benchmarks/server_per_client.py [--clients 50] [--seconds 10] [--batch 64]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from nnmark import load_data, model_info, new_model
from nnmark.io import save_model
from nnmark.testing.serve import serve_process

from _common import digits_infer_body, quantile, write_results


async def flood(url: str, body: dict[str, Any], ends: float, counts: Counter[str]) -> None:
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(transport=transport, timeout=30) as c:
        while time.monotonic() < ends:
            try:
                r = await c.post(f"{url}/v2/models/m/infer", json=body)
                counts[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                counts[type(exc).__name__] += 1
                await asyncio.sleep(0.01)


async def honest(url: str, body: dict[str, Any], ends: float) -> tuple[Counter[str], list[float]]:
    counts: Counter[str] = Counter()
    latency: list[float] = []
    async with httpx.AsyncClient(timeout=30) as c:
        while time.monotonic() < ends:
            start = time.monotonic()
            try:
                r = await c.post(f"{url}/v2/models/m/infer", json=body)
                counts[str(r.status_code)] += 1
                if r.status_code == 200:
                    latency.append(time.monotonic() - start)
            except httpx.HTTPError as exc:
                counts[type(exc).__name__] += 1
            await asyncio.sleep(0.1)
    return counts, latency


async def run(url: str, args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    ends = time.monotonic() + args.seconds
    crowd: Counter[str] = Counter()
    floods = [flood(url, body, ends, crowd) for _ in range(args.clients)]
    *_, (mine, latency) = await asyncio.gather(*floods, honest(url, body, ends))
    sent = sum(mine.values())
    return {
        "flood": dict(crowd),
        "honest": dict(mine),
        "honest_ok_share": round(mine["200"] / sent, 3) if sent else None,
        "honest_latency_s": {
            "p50": round(quantile(latency, 0.5), 4),
            "p99": round(quantile(latency, 0.99), 4),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    data = load_data("digits")
    body = digits_infer_body(args.batch)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        model = new_model("cnn", data, seed=0)
        save_model(model, model_info(model, data), path)
        for name, options in (
            ("defaults", ()),
            ("per-client off", ("--max-connections-per-client", "0")),
        ):
            with serve_process(path, *options) as (url, _):
                runs[name] = asyncio.run(run(url, args, body))
            print(name, runs[name])
    md = [
        f"{args.clients} clients at 127.0.0.2 send inference requests of {args.batch} digits "
        f"images back to back for {args.seconds:g} s (503s retried at once) while one honest "
        "client at 127.0.0.1 sends one every 100 ms; `nnmark serve` with its default per-client "
        "bounds (32 connections, a quarter of the 64 inference slots and of the 256 MiB of "
        "bodies per address) and with them off (`--max-connections-per-client 0`).",
        "",
        "| server | flood: 200 / 503 / connection errors | honest: 200 share | honest latency "
        "p50 / p99 s |",
        "|---|---|---|---|",
    ]
    for name, r in runs.items():
        f = r["flood"]
        errors = sum(v for k, v in f.items() if not k.isdigit())
        md.append(
            f"| {name} | {f.get('200', 0)} / {f.get('503', 0)} / {errors} | "
            f"{r['honest_ok_share']} | {r['honest_latency_s']['p50']} / "
            f"{r['honest_latency_s']['p99']} |"
        )
    write_results("server_per_client", {"args": vars(args), "runs": runs}, "\n".join(md))


if __name__ == "__main__":
    main()
