"""Shared by benchmark scripts: the machine description and result writing (JSON + Markdown)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_results(name: str, payload: dict[str, Any], markdown_body: str) -> None:
    """benchmarks/results/<name>.json and .md, with the machine and the command."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(RESULTS.parents[1])
    command = "python " + " ".join([str(script), *sys.argv[1:]])
    doc = {"command": command, "machine": machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    m = doc["machine"]
    header = (
        f"# {name}\n\nCommand: `{command}`\n\nMachine: {m['cpu']}, {m['cpu_count']} cores, "
        f"torch {m['torch']} ({m['torch_threads']} threads), {m['platform']}\n\n"
    )
    (RESULTS / f"{name}.md").write_text(header + markdown_body.rstrip() + "\n")
