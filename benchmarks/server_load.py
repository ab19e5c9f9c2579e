"""Load on `nnmark serve` (loopback only, bounded): many concurrent clients at batch 64 while a
prober times the health endpoint, as an orchestrator's readiness probe would.

Protocol: a digits CNN (2 epochs: the answers' quality does not matter here) is saved and served
by `nnmark serve MODEL --port P --max-connections-per-client 0` in its own process (one
inference worker thread, at most 64 requests in progress, 503 with Retry-After beyond; every
client shares the loopback address, as behind a proxy, so the per-client bounds are off).
`--clients` asyncio clients (httpx) send `--requests` inference requests in all, each a batch
of `--batch` digits images; a 503 is retried after its Retry-After (counted, not an error). Meanwhile a prober
GETs /v2/health/ready every 50 ms. Reported: errors (anything but 200 and 503), 503s,
throughput (requests and images per second over the whole run), request latency quantiles,
the health probe's latency quantiles (p99 must stay below 200 ms) and the server process's
peak resident memory (VmHWM).

    .venv/bin/python benchmarks/server_load.py [--requests 1000] [--clients 50] [--batch 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from nnmark import TrainConfig, load_data, model_info, new_model, train
from nnmark.io import save_model
from nnmark.testing.serve import peak_rss_mib, serve_process

from _common import digits_infer_body, quantile, write_results


async def load(url: str, args: argparse.Namespace, body: dict[str, Any]) -> dict[str, Any]:
    todo = list(range(args.requests))
    latencies: list[float] = []
    health: list[float] = []
    counts = {"ok": 0, "busy": 0, "errors": 0}
    errors: list[str] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=args.clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def client() -> None:
            while todo:
                todo.pop()
                while True:
                    start = time.perf_counter()
                    r = await http.post("/v2/models/m/infer", json=body)
                    if r.status_code == 503:
                        counts["busy"] += 1
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                        continue
                    latencies.append(time.perf_counter() - start)
                    if r.status_code == 200:
                        counts["ok"] += 1
                    else:
                        counts["errors"] += 1
                        errors.append(f"HTTP {r.status_code}: {r.text[:100]}")
                    break

        async def prober() -> None:
            while not done.is_set():
                start = time.perf_counter()
                r = await http.get("/v2/health/ready")
                health.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors.append(f"health HTTP {r.status_code}")
                await asyncio.sleep(0.05)

        probe = asyncio.create_task(prober())
        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.clients)))
        seconds = time.perf_counter() - start
        done.set()
        await probe
    return {
        "seconds": seconds,
        "counts": counts,
        "errors": errors[:10],
        "latency": latencies,
        "health": health,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    data = load_data("digits")
    model = train(new_model("cnn", data, seed=0), data, TrainConfig(epochs=2, seed=0))
    body = digits_infer_body(args.batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_model(model, model_info(model, data), path)
        # every client here shares the loopback address, as clients behind a proxy share the
        # proxy's: the per-client bounds are off, as a deployment behind one sets them
        with serve_process(path, "--max-connections-per-client", "0") as (url, server):
            out = asyncio.run(load(url, args, body))
            peak = peak_rss_mib(server.pid)
    lat, health = out["latency"], out["health"]
    row = {
        "requests": args.requests,
        "clients": args.clients,
        "batch": args.batch,
        "seconds": round(out["seconds"], 2),
        "ok": out["counts"]["ok"],
        "busy_503": out["counts"]["busy"],
        "errors": out["counts"]["errors"],
        "error_samples": out["errors"],
        "requests_per_s": round(args.requests / out["seconds"], 1),
        "images_per_s": round(args.requests * args.batch / out["seconds"], 1),
        "latency_s": {q: round(quantile(lat, v), 4) for q, v in (("p50", 0.5), ("p99", 0.99))},
        "health_probes": len(health),
        "health_ms": {
            "p50": round(1000 * statistics.median(health), 1),
            "p99": round(1000 * quantile(health, 0.99), 1),
            "max": round(1000 * max(health), 1),
        },
        "server_peak_rss_mib": round(peak, 1),
    }
    print(row)
    md = [
        f"{args.requests} inference requests of {args.batch} digits images from {args.clients} "
        "concurrent clients against `nnmark serve --max-connections-per-client 0` (one "
        "inference worker thread, at most 64 requests in progress; every client shares the "
        "loopback address, as behind a proxy, so the per-client bounds are off), loopback; a "
        "prober GETs /v2/health/ready every 50 ms.",
        "",
        "| requests | clients | batch | errors | 503 (retried) | requests/s | images/s | "
        "latency p50 / p99 s | health p50 / p99 / max ms | probes | server peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {args.requests} | {args.clients} | {args.batch} | {row['errors']} | {row['busy_503']} "
        f"| {row['requests_per_s']} | {row['images_per_s']} | {row['latency_s']['p50']} / "
        f"{row['latency_s']['p99']} | {row['health_ms']['p50']} / {row['health_ms']['p99']} / "
        f"{row['health_ms']['max']} | {len(health)} | {row['server_peak_rss_mib']} |",
    ]
    write_results("server_load", row, "\n".join(md))
    if row["errors"] or row["health_ms"]["p99"] >= 200:
        raise SystemExit(
            f"requirement not met: {row['errors']} errors, health p99 {row['health_ms']['p99']} ms"
        )


if __name__ == "__main__":
    main()
