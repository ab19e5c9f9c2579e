"""The README's contract on a fresh clone: `make demo` and `make test`, timed.

Clones the repository's HEAD twice into a temporary folder (with ../shared beside each, as CI
has it, through a symlink), then runs `make demo` (creates .venv, installs, runs `nnmark demo`) and
`make test` (same set-up with the dev extras, lint, the whole suite) there, then `make test-fast`
in the test clone (its .venv set up). Reports wall time and
the CPU time of the children (user + sys), and the load average before and after, because a
shared machine's wall time says little on its own.

    python benchmarks/contract_time.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from _common import write_results

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path, log: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "command": " ".join(cmd),
        "returncode": rc,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "tail": log.read_text()[-2000:],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="clone here and keep it (default: a temp folder)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="nnmark-fresh-"))
    root.mkdir(parents=True, exist_ok=True)
    runs, commit = {}, ""
    for target in ("demo", "test"):
        box = root / target  # one fresh clone per target: each starts with no .venv
        if box.exists():
            shutil.rmtree(box)
        box.mkdir()
        clone = box / "main"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        (box / "shared").symlink_to((REPO.parent / "shared").resolve())
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True
        ).stdout.strip()
        runs[target] = timed(["make", target], clone, box / f"{target}.log")
    # everyday work: the fast tier in the clone `make test` set up (its .venv already there)
    runs["test-fast"] = timed(["make", "test-fast"], root / "test" / "main", root / "fast.log")
    passed = re.findall(r"(\d+ passed[^\n]*)", runs["test"]["tail"])
    fast = re.findall(r"(\d+ passed[^\n]*)", runs["test-fast"]["tail"])
    rows = "\n".join(
        f"| `make {k}` | {r['returncode']} | {r['wall_s']:.0f} s | {r['cpu_s']:.0f} s | "
        f"{r['load_before']} / {r['load_after']} |"
        for k, r in runs.items()
    )
    demo_line = re.findall(r"done in [0-9.]+ s", runs["demo"]["tail"])
    body = (
        f"Fresh clone of commit `{commit}` (no .venv), `../shared` beside it.\n\n"
        "| command | exit code | wall | CPU (children, user+sys) | load avg before / after |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n\n"
        f"`nnmark demo` itself: {demo_line[-1] if demo_line else '?'} (after the set-up).\n"
        f"Suite: {passed[-1] if passed else '?'}; fast tier: {fast[-1] if fast else '?'}\n\n"
        "`make demo` and `make test` each run in their own fresh clone, so each time includes "
        "creating `.venv` and installing (torch from the local wheel, the extras from the "
        "registry's cache); `make test-fast` then runs in the clone `make test` set up, as "
        "everyday work would.\n"
    )
    write_results("contract_time", {"commit": commit, "runs": runs}, body)
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
