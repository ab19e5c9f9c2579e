"""Where a sweep's calls run: in this process, a local process pool, or a Ray cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from nnmark.errors import NNMarkError

__all__ = ["Workers", "init_ray"]


class Workers:
    """Runs calls in parallel and yields them as they finish: inline, a process pool, or Ray.

    One pool serves both phases, so worker start-up (importing torch) is paid once.
    """

    def __init__(self, jobs: int, ray: str | None) -> None:
        self.jobs, self.ray = jobs, ray
        self.pool: ProcessPoolExecutor | None = None

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
        """Yield (index, result, error) as each fn(*args) finishes."""
        if not calls:
            return
        if self.ray is not None:
            import ray as ray_mod

            remote = ray_mod.remote(num_cpus=1)(fn)
            refs = {remote.remote(*args): i for i, args in enumerate(calls)}
            pending = list(refs)
            while pending:
                ready, pending = ray_mod.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        yield refs[ref], ray_mod.get(ref), None
                    except Exception as exc:  # noqa: BLE001 - a task's failure is its row
                        yield refs[ref], None, exc
            return
        if self.pool is None and self.jobs > 1 and len(calls) > 1:
            # Started on first need (a resumed sweep with nothing left starts none). spawn: a
            # forked child of a process that already ran torch may hang in OpenMP.
            self.pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=get_context("spawn"))
        if self.pool is None:
            for i, args in enumerate(calls):
                try:
                    yield i, fn(*args), None
                except Exception as exc:  # noqa: BLE001
                    yield i, None, exc
            return
        futures = {self.pool.submit(fn, *args): i for i, args in enumerate(calls)}
        pending_f = set(futures)
        while pending_f:
            done, pending_f = wait(pending_f, return_when=FIRST_COMPLETED)
            for f in done:
                failure = f.exception()
                yield futures[f], None if failure else f.result(), failure


def init_ray(address: str, jobs: int) -> None:
    try:
        import ray
    except ImportError:
        raise NNMarkError("--ray needs the ray package: pip install 'nnmark[ray]'") from None
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if address == "local":
        ray.init(num_cpus=max(1, jobs), **kwargs)
    else:
        ray.init(address=address, **kwargs)
