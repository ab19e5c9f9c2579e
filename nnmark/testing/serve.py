"""`nnmark serve` as a real process on a free loopback port, for tests and benchmarks that need
the command itself (its own memory, its own event loop), not the app in a thread."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_process(
    model: Path,
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 60.0,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`nnmark serve MODEL --model-name m [args]` until the block ends; yields (URL, process)
    once /v2/health/ready answers (polled, never slept)."""
    port = free_port()
    cmd = [sys.executable, "-m", "nnmark", "serve", str(model), "--port", str(port)]
    server = subprocess.Popen(
        [*cmd, "--model-name", "m", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec_fn,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("nnmark serve did not start")
            time.sleep(0.1)
        yield url, server
    finally:
        server.terminate()
        server.wait(10)


def peak_rss_mib(pid: int) -> float:
    """The peak resident memory (VmHWM) of a running process, in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("VmHWM")).split()[1]) / 1024
