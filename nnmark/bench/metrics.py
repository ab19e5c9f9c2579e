"""What a run costs and where it ran: CPU seconds, peak memory, wall time, the machine.

Shared by the bench (per cell and per phase) and the scripts in benchmarks/, so every committed
figure names its machine the same way.
"""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["cpu_seconds", "machine", "peak_rss_mib", "phase", "reset_peak_rss"]


def machine() -> dict[str, Any]:
    """Where the numbers come from: platform, CPU model, count and vector features (one "AMD
    EPYC" has native bfloat16, another not), torch and its threads, and the load when the
    measurement began (on a shared machine wall time says little without it)."""
    import torch

    from nnmark.train import native_half_precision

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
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # whether half precision is fast on this CPU (nnmark.train.native_half_precision)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_half_precision("bf16", torch.device("cpu")),
        "native_fp16": native_half_precision("fp16", torch.device("cpu")),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_seconds() -> float:
    """This process's CPU time plus its reaped children's."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def reset_peak_rss() -> None:
    """Start a new peak: Linux resets VmHWM on "5" (since 4.0), so the next peak_rss_mib is
    this cell's, not the worker's whole life."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def peak_rss_mib() -> float:
    """Peak resident memory since the last reset_peak_rss (the process's, where unsupported)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def phase(
    t0: float, c0: float, worker_cpu: float = 0.0, in_process: bool = True
) -> dict[str, float]:
    """Wall and CPU seconds of a phase: the driver's own CPU plus what each worker reported for
    its calls (pool workers are only reaped at the end, so getrusage alone cannot split them)."""
    own = time.process_time() - c0
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(own + (0.0 if in_process else worker_cpu), 1),
    }
