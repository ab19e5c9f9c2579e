"""Where a sweep's calls run: in this process, a local process pool, or a Ray cluster, and on
which device (`--device`): each call gets `device=` from its executor.

With a CUDA device, a local pool's worker process owns one GPU for its whole life (worker k:
`cuda:(k mod G)`, `worker_devices`), so at most `jobs` calls run at once, spread over the G GPUs.
Under Ray each task asks Ray for one GPU (`ray_options`); Ray sets CUDA_VISIBLE_DEVICES, so inside
the task the device is plain `cuda`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any
from urllib.parse import urlsplit

from nnmark.errors import NNMarkError

__all__ = ["Workers", "check_ray_address", "init_ray", "ray_options", "worker_devices"]

#: Seconds to wait for a TCP connection to a `--ray` address before saying nothing answers there:
#: ray.init itself retries an unreachable head for minutes, printing warnings, with no error.
RAY_CONNECT_TIMEOUT = 10.0

#: The device of this worker process, set once by the pool's initializer (`_init_worker`). Which
#: GPU a worker owns is per-process state: a submitted call is pickled before any process is
#: chosen to run it, so only the process itself can know. None outside a pool.
_WORKER_DEVICE: str | None = None


#: The most workers a sweep asks for (a Ray cluster's tasks, or this machine's processes).
MAX_JOBS = 1024
#: Local pool processes per CPU: each imports torch (hundreds of MB) when it starts, and the
#: pool starts them all at its first cell.
LOCAL_JOBS_PER_CPU = 4


def check_jobs(jobs: int, ray: str | None) -> None:
    """Refuse a worker count before anything is written: `--jobs 400000000` allocated 3.4 GB
    of device names and started processes until interrupted (review, session 36)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or not 1 <= jobs <= MAX_JOBS:
        raise NNMarkError(f"--jobs must be an integer in [1, {MAX_JOBS}], got {jobs!r}")
    cpus = os.cpu_count() or 1
    if ray is None and jobs > LOCAL_JOBS_PER_CPU * cpus:
        raise NNMarkError(
            f"--jobs {jobs} would start {jobs} processes on this machine's {cpus} CPUs (at most "
            f"{LOCAL_JOBS_PER_CPU * cpus} without --ray)"
        )


def worker_devices(device: str, jobs: int, gpu_count: int) -> list[str]:
    """The device of each of `jobs` workers: plain `cuda` deals the GPUs out in turn (worker k
    gets cuda:(k mod gpu_count)); `cuda:N`, `cpu` or `mps` is every worker's."""
    if jobs < 1:
        raise NNMarkError(f"jobs must be >= 1, got {jobs}")
    if device != "cuda":
        return [device] * jobs
    if gpu_count < 1:
        raise NNMarkError("device 'cuda' is not available: no CUDA GPU on this machine")
    return [f"cuda:{k % gpu_count}" for k in range(jobs)]


def ray_options(device: str) -> tuple[dict[str, int], str]:
    """(ray.remote options, the device inside the task) for a sweep on `device`: a CUDA device
    asks Ray for one GPU per task and, since Ray sets CUDA_VISIBLE_DEVICES to it, names it plain
    `cuda`; any other device asks for none."""
    if device == "cuda" or device.startswith("cuda:"):
        return {"num_cpus": 1, "num_gpus": 1}, "cuda"
    return {"num_cpus": 1, "num_gpus": 0}, device


def _init_worker(devices: Sequence[str], counter: Any) -> None:
    """Pool initializer: take the next device of `devices` (a shared counter, so a replaced
    worker takes the next one in turn rather than failing)."""
    global _WORKER_DEVICE
    with counter.get_lock():
        k = counter.value
        counter.value = k + 1
    _WORKER_DEVICE = devices[k % len(devices)]


def _on_device(fn: Callable[..., Any], device: str, *args: Any) -> Any:
    """fn(*args, device=device); a `cuda:N` device is made the current one, so code that says
    plain "cuda" lands on that GPU too."""
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(device)
    return fn(*args, device=device)


def _on_worker_device(fn: Callable[..., Any], *args: Any) -> Any:
    """A pool's call: fn on the device this worker process took when it started."""
    if _WORKER_DEVICE is None:
        raise RuntimeError("a pool call with a device ran in a process the pool did not start")
    return _on_device(fn, _WORKER_DEVICE, *args)


class Workers:
    """Runs calls in parallel and yields them as they finish: inline, a process pool, or Ray.

    One pool serves both phases, so worker start-up (importing torch) is paid once. `device`:
    a resolved device (`nnmark.device.resolve_device`), given to every call as `device=`; None:
    calls get no device argument (callers written before `--device`, benchmarks/calibration.py).
    """

    def __init__(self, jobs: int, ray: str | None, device: str | None = None) -> None:
        self.jobs, self.ray, self.device = jobs, ray, device
        self.pool: ProcessPoolExecutor | None = None
        # Locally, worker k runs on devices[k] (inline: devices[0]); Ray places its tasks itself.
        self.devices: list[str] = []
        if device is not None and ray is None:
            gpus = 0
            if device == "cuda":
                import torch

                gpus = torch.cuda.device_count()
            self.devices = worker_devices(device, jobs, gpus)

    @property
    def in_process(self) -> bool:
        """Calls so far ran in this process (their CPU time is this process's own)."""
        return self.pool is None and self.ray is None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map_unordered(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, Any, BaseException | None]]:
        """Yield (index, result, error) as each fn(*args) (with device=, if set) finishes."""
        if not calls:
            return
        if self.ray is not None:
            yield from self._map_ray(fn, calls)
            return
        if self.pool is None and self.jobs > 1 and len(calls) > 1:
            # Started on first need (a resumed sweep with nothing left starts none). spawn: a
            # forked child of a process that already ran torch (or CUDA) may hang.
            ctx = get_context("spawn")
            init: dict[str, Any] = {}
            if self.device is not None:
                init = {"initializer": _init_worker, "initargs": (self.devices, ctx.Value("i", 0))}
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx, **init)
        if self.pool is None:
            for i, args in enumerate(calls):
                try:
                    if self.device is None:
                        yield i, fn(*args), None
                    else:
                        yield i, _on_device(fn, self.devices[0], *args), None
                except Exception as exc:  # noqa: BLE001
                    yield i, None, exc
            return
        if self.device is None:
            futures = {self.pool.submit(fn, *args): i for i, args in enumerate(calls)}
        else:
            futures = {
                self.pool.submit(_on_worker_device, fn, *args): i for i, args in enumerate(calls)
            }
        pending_f = set(futures)
        while pending_f:
            done, pending_f = wait(pending_f, return_when=FIRST_COMPLETED)
            for f in done:
                failure = f.exception()
                yield futures[f], None if failure else f.result(), failure

    def _map_ray(
        self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, Any, BaseException | None]]:
        """map_unordered on Ray: one task per call (one CPU; one GPU on a CUDA device)."""
        import ray as ray_mod

        if self.device is None:
            remote = ray_mod.remote(num_cpus=1)(fn)
            refs = {remote.remote(*args): i for i, args in enumerate(calls)}
        else:
            options, inside = ray_options(self.device)
            remote = ray_mod.remote(**options)(_on_device)
            refs = {remote.remote(fn, inside, *args): i for i, args in enumerate(calls)}
        pending = list(refs)
        while pending:
            ready, pending = ray_mod.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    yield refs[ref], ray_mod.get(ref), None
                except Exception as exc:  # noqa: BLE001 - a task's failure is its row
                    yield refs[ref], None, exc


def check_ray_address(address: str, timeout: float = RAY_CONNECT_TIMEOUT) -> None:
    """Fail in one line, within `timeout` seconds, when nothing listens at a `--ray` address
    (`HOST:PORT` or `ray://HOST:PORT`; `auto` and `local` are Ray's to resolve)."""
    import socket

    if address in ("auto", "local"):
        return
    form = "expected auto, local, HOST:PORT or ray://HOST:PORT"
    parts = urlsplit(address if "://" in address else f"//{address}")
    if parts.scheme not in ("", "ray") or parts.path or parts.query or parts.fragment:
        raise NNMarkError(f"--ray {address!r}: {form}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number in 0..65535
        host, port = None, None
    if not host or not port:
        raise NNMarkError(f"--ray {address!r}: {form}")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            why = f"no answer within {timeout:g} s"
        else:
            why = (exc.strerror or str(exc)).lower()
        raise NNMarkError(
            f"--ray {address}: no Ray cluster answers at {host}:{port} ({why}); "
            "start one (`ray start --head`) or use --ray local"
        ) from None


def init_ray(address: str, jobs: int) -> None:
    try:
        import ray
    except ImportError:
        raise NNMarkError("--ray needs the ray package: pip install 'nnmark[ray]'") from None
    if ray.is_initialized():
        return
    # `auto` joins RAY_ADDRESS when it is set: the same unreachable-head wait as an address.
    check_ray_address((os.environ.get("RAY_ADDRESS") or address) if address == "auto" else address)
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(num_cpus=max(1, jobs), **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as exc:  # `auto` with no cluster running
        raise NNMarkError(f"--ray {address}: {exc}") from None


def ray_gpus() -> float:
    """The GPUs of the Ray cluster this process joined (its nodes', not this machine's)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))
