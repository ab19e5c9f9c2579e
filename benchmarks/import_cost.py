"""What importing an integration's framework costs after torch (docs/integrations.md): each
import timed in a fresh process, torch already imported, several processes per framework.

    .venv/bin/python benchmarks/import_cost.py [--repeats 3]

CPU seconds (user + system) and wall seconds of the import statement alone, bytecode compiled
by a warm-up process first (as `make` does: PYTHONDONTWRITEBYTECODE dropped for the children).
On a shared machine the wall time moves with the load (recorded beside it); the CPU time less.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from _common import write_results

IMPORTS = {
    "lightning": "import lightning",
    "transformers (ViT classes)": "from transformers import ViTForImageClassification",
}
PROBE = (
    "import time, torch; t, c = time.perf_counter(), time.process_time(); {stmt}; "
    "print(time.process_time() - c, time.perf_counter() - t)"
)


def timed(stmt: str) -> tuple[float, float]:
    """(CPU s, wall s) of `stmt` in a fresh process that has imported torch."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(stmt=stmt)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    cpu, wall = out.stdout.strip().splitlines()[-1].split()
    return float(cpu), float(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    load = os.getloadavg()
    rows = {}
    for name, stmt in IMPORTS.items():
        timed(stmt)  # compile and warm the file cache once, not counted
        runs = [timed(stmt) for _ in range(args.repeats)]
        rows[name] = {
            "statement": stmt,
            "cpu_s": [c for c, _ in runs],
            "wall_s": [w for _, w in runs],
            "median_cpu_s": statistics.median(c for c, _ in runs),
            "median_wall_s": statistics.median(w for _, w in runs),
        }
        print(name, rows[name], flush=True)
    lines = [
        f"Each import in a fresh process after `import torch`, {args.repeats} processes each "
        "after one warm-up; load average at the start "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        "| framework | statement | CPU s (median) | wall s (median) |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | `{r['statement']}` | {r['median_cpu_s']:.1f} | {r['median_wall_s']:.1f} |"
        )
    write_results("import_cost", {"load_average": load, "rows": rows}, "\n".join(lines))


if __name__ == "__main__":
    main()
