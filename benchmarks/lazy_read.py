"""Bytes read from disk by `verify` on a >= 1 GB checkpoint, single file and sharded.

A generated state dict (16 tensors of 4096 x 4096 float32, 1 GiB, plus a small conv layer that
carries a 64-bit Uchida mark) is written once as one safetensors file and once as 4 shards with a
`model.safetensors.index.json`. Before each measurement the files are dropped from the page
cache (posix_fadvise DONTNEED); verification runs in a fresh process that reports read_bytes from
/proc/self/io; a full load (safetensors load_file) is timed the same way.

    python benchmarks/lazy_read.py [--dir /tmp/nnmark-lazy]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from _common import write_results

CHILD = r"""
import json, sys, time
def io():
    return int(dict(l.split(": ") for l in open("/proc/self/io").read().splitlines())["read_bytes"])
mode, path, key = sys.argv[1:4]
import nnmark  # imports first, so only the measured work counts
from nnmark.keys import OwnerKey
from nnmark.suspect import load_suspect
before, t = io(), time.perf_counter()
if mode == "verify":
    v = nnmark.verify(load_suspect(path), OwnerKey.load(key))
    result = v.verdict
else:
    from safetensors.torch import load_file
    result = len([float(t.sum()) for t in load_file(path).values()])  # touch every byte
print(json.dumps({"read_bytes": io() - before, "seconds": time.perf_counter() - t, "result": result}))
"""


def drop_cache(paths: list[Path]) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def measure(mode: str, path: Path, key: Path, files: list[Path]) -> dict:
    drop_cache(files)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(key)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from safetensors.torch import save_file

    from nnmark import OwnerKey
    from nnmark.schemes.uchida import Uchida, UchidaConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/nnmark-lazy")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    torch.manual_seed(0)
    marked = torch.nn.Conv2d(64, 64, 3)
    key = OwnerKey.new("lazy", nonce="1a" * 16)
    holder = torch.nn.Module()
    holder.host = marked
    mark = Uchida.plan(holder, key, UchidaConfig(layer="host"), bits=64)
    key = key.with_mark(mark)
    scheme = Uchida(mark)
    with torch.enable_grad():  # write the mark directly (the benchmark is about reading)
        w = marked.weight
        opt = torch.optim.Adam([w], lr=1e-2)
        for _ in range(200):
            opt.zero_grad()
            scheme.embed_loss(w).backward()
            opt.step()
    state = {f"big.{i}": torch.randn(4096, 4096) for i in range(16)}
    state["host.weight"] = marked.weight.detach().clone()
    single = root / "model.safetensors"
    save_file(state, str(single))
    names = list(state)
    shards, weight_map = [], {}
    for s in range(4):
        part = {n: state[n] for n in names[s::4]}
        shard = root / f"model-{s + 1:05d}-of-00004.safetensors"
        save_file(part, str(shard))
        shards.append(shard)
        weight_map.update({n: shard.name for n in part})
    index = root / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    key_path = root / "k.nnkey"
    key.save(key_path)
    del state
    size_single = single.stat().st_size
    size_sharded = sum(p.stat().st_size for p in shards)
    rows = []
    for label, path, files, size in (
        ("single file", single, [single], size_single),
        ("4 shards + index", index, shards, size_sharded),
    ):
        v = measure("verify", path, key_path, files)
        rows.append(
            {
                "checkpoint": label,
                "bytes": size,
                "verify_read_bytes": v["read_bytes"],
                "read_fraction": v["read_bytes"] / size,
                "verify_seconds": v["seconds"],
                "verdict": v["result"],
            }
        )
    full = measure("load", single, key_path, [single])
    for r in rows:
        r["full_load_seconds"] = full["seconds"]
        r["full_load_read_bytes"] = full["read_bytes"]
    shutil.rmtree(root, ignore_errors=True)
    lines = [
        "| checkpoint | size | read by verify | fraction | verify s | full load s | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['checkpoint']} | {r['bytes'] / 2**30:.2f} GiB | {r['verify_read_bytes'] / 2**20:.2f} MiB | "
            f"{r['read_fraction']:.5f} | {r['verify_seconds']:.3f} | {r['full_load_seconds']:.2f} | {r['verdict']} |"
        )
    lines.append("\nRequired (issue 8): read fraction <= 0.05.")
    write_results(
        "lazy_read", {"rows": rows, "generated_at": time.strftime("%Y-%m-%d")}, "\n".join(lines)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
