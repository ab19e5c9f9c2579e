"""Runs a BenchSpec: trains each (task, scheme) model once, then every cell, in parallel.

Two phases, each spread over a local process pool (`jobs`) or a Ray cluster (`ray`):
1. models: the plain model, one per scheme and composite, and the unmarked calibration models,
   each cached in RESULTS/models/ under a content hash of what produced it;
2. cells: every (model, attack at a strength) and every (unmarked model, key) verification.
Rows are appended to RESULTS/results.jsonl as cells finish, so a rerun skips finished cells. A
failed cell (or a model that failed to train) records its error and the sweep goes on, as
timm's benchmark.py does. A scheme that cannot mark a task's model (its own `plan()` refuses it,
e.g. a trigger-set scheme on a segmentation U-Net) is asked before anything trains; its cells
are recorded as skipped, with the scheme's reason, not as failures.

With Ray the results directory must be on a file system every node sees (the workers read and
write the model cache there); `ray="local"` starts a private local instance.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import logging
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from nnmark.bench.grid import AttackCell, BenchSpec, Task
from nnmark.bench.store import ROW_SCHEMA, ResultStore, content_id, read_rows
from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "BenchSummary",
    "Workers",
    "machine",
    "read_rows",
    "run_bench",
    "train_model",
    "unsupported",
]


@dataclass(frozen=True)
class ModelJob:
    """A model the grid needs: marked with `scheme` ('none': plain), trained with `seed`."""

    task: Task
    scheme: str
    seed: int
    options: dict[str, Any]
    epochs: int | None = None  # None: the task's epochs

    @property
    def recipe(self) -> list[Any]:
        """What makes the model: the task (less where fidelity is measured), the scheme and its
        options, the seed and the epochs."""
        task = asdict(self.task)
        task.pop("test_fraction")  # where fidelity is measured does not change the model
        return [task, self.scheme, self.options, self.seed, self.epochs]

    @property
    def ident(self) -> str:
        """The cache name: the recipe and the code that trains it (a cached model is stale once
        either changes)."""
        from nnmark._version import __version__

        what = [*self.recipe, __version__, code_id(self.scheme)]
        return f"{self.scheme.replace('+', '_')}-{content_id(what)}"

    @property
    def nonce(self) -> str:
        """The key's nonce: from the recipe alone, so an edit to the code marks the same model
        with the same key and a rerun's verdicts can be compared cell by cell."""
        return content_id(self.recipe) * 2


def code_files(scheme: str) -> list[str]:
    """The source files that train a `scheme` model: the trainer (nnmark/train.py and the
    api's embed / train) and, per mark, every nnmark class of the scheme's lineage."""
    import importlib

    from nnmark.schemes import SCHEMES

    # modules by name: the attribute `nnmark.train` is the re-exported function, not the module
    files = {
        inspect.getsourcefile(importlib.import_module(m)) for m in ("nnmark.train", "nnmark.api")
    }
    for part in scheme.split("+"):
        if part != "none":
            lineage = SCHEMES.get(part).__mro__
            files |= {
                inspect.getsourcefile(c) for c in lineage if c.__module__.startswith("nnmark")
            }
    return sorted(str(f) for f in files if f)


@functools.cache
def code_id(scheme: str) -> str:
    """A hash of code_files(scheme). A trainer or scheme file edited since a model was cached (a
    new key layout, the BatchNorm recalibration) then trains a new model instead of reusing
    one trained by other code."""
    digest = hashlib.sha256()
    for f in code_files(scheme):
        digest.update(Path(f).read_bytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Cell:
    """One row of the results: a model, an attack (or none), verified with the model's key."""

    job: ModelJob
    attack: AttackCell | None  # None: a calibration cell (unmarked model, `key_job`'s key)
    key_job: ModelJob | None = None

    @property
    def ident(self) -> str:
        t = self.job.task
        head = f"{t.data}|{t.arch}|e{t.epochs}|f{t.fraction}|b{t.batch_size}|lr{t.lr}"
        head += "" if t.test_fraction == 1 else f"|t{t.test_fraction}"
        if self.attack is None:
            assert self.key_job is not None
            return f"{head}|calibration|{self.key_job.scheme}|s{self.key_job.seed}|u{self.job.seed}"
        return f"{head}|{self.job.scheme}|{self.attack.spec}|s{self.job.seed}"


@dataclass(frozen=True)
class BenchSummary:
    cells: int
    run: int
    skipped: int
    failed: int
    seconds: float
    unsupported: int = 0  # cells skipped because their scheme cannot mark the task's model


def machine() -> dict[str, Any]:
    """Where the numbers come from: platform, CPUs, torch, and the load when the sweep began."""
    import torch

    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_seconds() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _reset_peak_rss() -> None:
    # Linux resets VmHWM on "5" (since 4.0): the peak is then this cell's, not the worker's life.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _train_config(task: Task, seed: int, epochs: int | None = None) -> Any:
    from nnmark.train import TrainConfig

    return TrainConfig(
        epochs=task.epochs if epochs is None else epochs,
        seed=seed,
        fraction=task.fraction,
        batch_size=task.batch_size,
        lr=task.lr,
    )


def train_model(root: Path, job: ModelJob) -> str:
    """Train (or find in the cache) one model and its key; returns the cache id."""
    return train_model_timed(root, job)[0]


def train_model_timed(root: Path, job: ModelJob) -> tuple[str, bool, float]:
    """(cache id, whether it was trained now, CPU seconds this call took in its process)."""
    cpu0 = time.process_time()
    ident = _train(root, job)
    trained = ident.endswith("*")
    return ident.rstrip("*"), trained, round(time.process_time() - cpu0, 3)


def _train(root: Path, job: ModelJob) -> str:
    """train_model's body; a '*' after the id says the model was trained (not cached)."""
    import torch

    from nnmark.api import embed, model_info, new_model, train
    from nnmark.data import load_data
    from nnmark.io import save_model
    from nnmark.keys import OwnerKey

    torch.set_num_threads(1)
    store = ResultStore(root)
    ident = job.ident
    model_path, key_path = store.model_path(ident), store.key_path(ident)
    if model_path.exists() and (job.scheme == "none" or key_path.exists()):
        return ident
    data = load_data(job.task.data)
    init = new_model(job.task.arch, data, seed=job.seed)
    cfg = _train_config(job.task, job.seed, job.epochs)
    if job.scheme == "none":
        model = train(init, data, cfg)
    else:
        # A fixed nonce per model: the key (and so every cell) is reproducible from the grid.
        key = OwnerKey.new("nnmark bench", nonce=job.nonce, created=BENCH_CREATED)
        options = job.options or None
        model, key = embed(init, data, job.scheme, options=options, key=key, config=cfg)
        key.save(key_path)
    save_model(model, model_info(model, data), model_path)
    return ident + "*"


#: The creation time of every bench key: a key's secrets depend on it, so a fixed time (with
#: the nonce from the job's recipe, `ModelJob.nonce`) makes a rerun of the grid mark the same models.
BENCH_CREATED = "2026-01-01T00:00:00+00:00"


def unsupported(task: Task, scheme: str, options: dict[str, Any], data: Any = None) -> str | None:
    """Why `scheme` (or a part of composite 'a+b') cannot mark `task`'s model, or None.

    Each scheme states what it supports in one place, its `plan()`: it is asked here on a fresh
    model of the task, and a refusal (NNMarkError) is the reason. Anything that fails before
    the question (a bad option, unreadable data) is not a refusal: None, so training fails and
    its cells record the error, as any failure. `data`: the task's DataBundle, if loaded.
    """
    from nnmark.api import new_model
    from nnmark.config import build_config
    from nnmark.data import load_data
    from nnmark.keys import OwnerKey
    from nnmark.schemes import SCHEMES

    if scheme == "none":
        return None
    names = scheme.split("+")
    try:
        configs: list[tuple[str, Any, Any]] = []
        for name in names:
            cls = SCHEMES.get(name)
            opts = options.get(name, {}) if len(names) > 1 else options
            configs.append((name, cls, build_config(cls.Config, opts)))
        data = data if data is not None else load_data(task.data)
        model = new_model(task.arch, data, seed=0)
    except Exception:  # noqa: BLE001 - reported by the training of the job instead
        return None
    key = OwnerKey.new("nnmark bench support check", nonce="00" * 16, created=BENCH_CREATED)
    for name, cls, cfg in configs:
        try:
            cls.plan(model, key, cfg, data=data)
        except NNMarkError as exc:
            return f"{name} does not support {task.data.split(':')[0]}/{task.arch}: {exc}"
    return None


def scheme_kind(scheme: str) -> str | None:
    """'whitebox' | 'blackbox' | 'integrity' of a registered scheme, 'composite', or None."""
    from nnmark.schemes import SCHEMES

    if "+" in scheme:
        return "composite"
    return SCHEMES.get(scheme).kind if scheme != "none" and scheme in SCHEMES else None


@dataclass(frozen=True)
class Notary:
    """A time-stamping authority the bench stamps its keys with, as an owner would at creation
    (`nnmark key timestamp`): keys whose claim needs a verified timestamp (frontier; newlabel and
    unrelated within 30 queries) are then judged as their owner's would be. `ca_pem`: the
    certificate verification trusts."""

    url: str
    ca_pem: bytes


def stamp_keys(store: ResultStore, jobs: Sequence[ModelJob], notary: Notary) -> int:
    """Give every cached key of `jobs` a timestamp `notary` vouches for (an older token under
    another authority is replaced); returns how many were stamped."""
    from nnmark.keys import OwnerKey
    from nnmark.provenance import check_timestamp, fetch_timestamp

    stamped = 0
    for job in jobs:
        path = store.key_path(job.ident)
        if job.scheme == "none" or not path.exists():
            continue
        key = OwnerKey.load(path)
        if key.timestamp is not None:
            try:
                check_timestamp(key.commitment, key.timestamp, [notary.ca_pem])
                continue
            except NNMarkError:
                pass
        key = dataclasses.replace(key, timestamp=fetch_timestamp(key.commitment, notary.url))
        key.save(path)
        stamped += 1
    return stamped


def _verify_data(data: Any, options: dict[str, Any]) -> list[Any]:
    """The task's data and every data set the key's options name (unrelated's `source`): what
    its derivation re-reads, checked by hash."""
    extra = [v for k, v in options.items() if k.split(".")[-1] == "source" and v]
    return [data, *(_source_data(str(v)) for v in extra)]


@functools.lru_cache(maxsize=4)
def _source_data(spec: str) -> Any:
    """A key's source data set, read once per worker process (Fashion-MNIST takes about a
    second to decode, and every cell of an unrelated key needs it)."""
    from nnmark.data import load_data

    return load_data(spec)


def run_cell(root: Path, cell: Cell, tsa_certs: tuple[bytes, ...] = ()) -> dict[str, Any]:
    """Attack a cached model, measure fidelity, verify with its key (a timestamp on it counted
    when `tsa_certs` vouch for it). Never raises."""
    import torch

    from nnmark.api import attack, verify
    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey
    from nnmark.tasks import evaluate, get_task

    torch.set_num_threads(1)
    _reset_peak_rss()
    cpu0 = time.process_time()
    store = ResultStore(root)
    task = cell.job.task
    a = cell.attack
    key_job = cell.key_job if a is None else cell.job
    assert key_job is not None
    scheme = key_job.scheme
    kind = scheme_kind(scheme)
    row: dict[str, Any] = dict.fromkeys(ROW_SCHEMA)  # every field, always (None if unknown)
    row |= {
        "cell": cell.ident,
        "kind": "calibration" if a is None else "attack",
        "data": task.data,
        "arch": task.arch,
        "task": None,
        "seed": cell.job.seed,
        "scheme": scheme,
        "scheme_kind": kind,
        "attack": "unmarked" if a is None else a.family,
        "attack_spec": "none" if a is None else a.spec,
        "strength_option": None if a is None else a.option,
        "strength": None if a is None else a.strength,
        "level": None if a is None else a.level,
        "verdict": None,
        "statistic_name": None,
        "statistic": None,
        "p_value": None,
        "parts": None,
        "queries": None,
        "error": None,
        "skipped": None,
    }
    start = time.perf_counter()
    try:
        model, info = load_model(store.model_path(cell.job.ident))
        data = load_data(task.data)
        metric = get_task(info.task).primary
        test = data.loader("test", 256, fraction=task.test_fraction)
        row["task"] = info.task
        row["fidelity_metric"] = metric
        # The same for every cell of a model: measured once, kept beside the cached model.
        memo = store.models / f"{cell.job.ident}.fidelity.json"
        seen = json.loads(memo.read_text()) if memo.exists() else {}
        where = f"{metric}@test:{task.test_fraction}"
        if where not in seen:
            seen[where] = evaluate(model, test, info.task)[metric]
            atomic_write_text(memo, json.dumps(seen))
        row["fidelity_before"] = seen[where]
        if a is not None and a.spec != "none":
            model = attack(model, a.spec, data, seed=cell.job.seed + 1)
            row["fidelity_after"] = evaluate(model, test, info.task)[metric]
        else:
            row["fidelity_after"] = row["fidelity_before"]
        if scheme != "none":
            key = OwnerKey.load(store.key_path(key_job.ident))
            sources = _verify_data(data, key_job.options)
            v = verify(model, key, data=sources, tsa_certs=tsa_certs)
            row.update(
                verdict=v.verdict,
                statistic_name=v.statistic_name,
                statistic=v.statistic,
                p_value=v.p_value,
                alpha=v.alpha,
                queries=v.queries,
                parts=[
                    {
                        "scheme": p.scheme,
                        "verdict": p.verdict,
                        "statistic_name": p.statistic_name,
                        "statistic": p.statistic,
                        "p_value": p.p_value,
                    }
                    for p in v.parts
                ]
                or None,
            )
    except Exception as exc:  # noqa: BLE001 - the sweep records the failure and goes on
        row["error"] = f"{type(exc).__name__}: {str(exc).strip()}"
        log.debug("cell %s failed:\n%s", row["cell"], traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    row["peak_rss_mib"] = _peak_rss_mib()
    return row


def plan(spec: BenchSpec) -> tuple[list[ModelJob], list[ModelJob], list[Cell]]:
    """(marked/plain models, unmarked calibration models, cells) of a grid."""
    schemes = spec.resolved_schemes()
    composites = spec.resolved_composites()
    attacks = [AttackCell("none", "none"), *spec.attack_cells()]
    models: list[ModelJob] = []
    calib: list[ModelJob] = []
    cells: list[Cell] = []
    for task in spec.tasks:
        jobs = [ModelJob(task, "none", spec.seed, {})]
        for s in schemes:
            jobs.append(ModelJob(task, s, spec.seed, dict(spec.scheme_options.get(s, {}))))
        for c in composites:
            opts = {p: dict(spec.scheme_options.get(p, {})) for p in c.split("+")}
            jobs.append(ModelJob(task, c, spec.seed, opts))
        unmarked = [
            ModelJob(task, "none", spec.seed + 1000 + i, {}, spec.calibration_epochs)
            for i in range(spec.calibration_models)
        ]
        models += jobs
        calib += unmarked
        cells += [Cell(j, a) for j in jobs for a in attacks]
        cells += [Cell(u, None, j) for j in jobs if j.scheme != "none" for u in unmarked]
    return models, calib, cells


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


def _init_ray(address: str, jobs: int) -> None:
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


def run_bench(  # noqa: C901 (split pending, issue 17)
    spec: BenchSpec,
    out: Path,
    *,
    jobs: int = 1,
    ray: str | None = None,
    retry_failed: bool = False,
    command: str = "",
    progress: Callable[[str, int, int], None] | None = None,
    notary: Notary | None = None,
) -> BenchSummary:
    """Run (or resume) the sweep into `out`; returns counts of cells run, skipped and failed.

    `ray`: None for the local process pool, "local" for a private Ray instance, "auto" or an
    address ("ray://host:10001") to join a cluster. `retry_failed`: run failed cells again
    (their new row replaces the old one). `notary`: stamp every key with this TSA before the
    cells run, and count the timestamps when verifying.
    """
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    store = ResultStore(out).create()
    _, _, cells = plan(spec)
    done = store.done(retry_failed)
    todo = [c for c in cells if c.ident not in done]
    phases: dict[str, dict[str, float]] = {}
    meta = store.read_json("meta.json")
    runs = meta.get("runs", [])
    runs.append(
        {
            "command": command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(),
            "jobs": jobs,
            "ray": ray,
        }
    )
    store.write_json("meta.json", {**meta, "runs": runs})
    store.write_json("spec.json", spec.to_dict())
    if ray is not None:
        _init_ray(ray, jobs)

    # Phase 0: schemes that cannot mark a task's model (asked once per job; a cached model was
    # trained, so it is supported). Their cells become skip rows; nothing of theirs trains.
    t0, c0 = time.perf_counter(), time.process_time()
    reasons: dict[str, str | None] = {}
    loaded: dict[str, Any] = {}
    for c in todo:
        for j in (c.job, c.key_job):
            if j is None or j.ident in reasons:
                continue
            reasons[j.ident] = None
            if j.scheme != "none" and not store.model_path(j.ident).exists():
                if j.task.data not in loaded:
                    loaded[j.task.data] = _try_load(j.task.data)
                reasons[j.ident] = unsupported(j.task, j.scheme, j.options, loaded[j.task.data])
    skip = [c for c in todo if reasons[c.job.ident] or (c.key_job and reasons[c.key_job.ident])]
    for c in skip:
        why = reasons[c.job.ident] or reasons[c.key_job.ident]  # type: ignore[union-attr]
        store.append([run_cell_stub(c, None, skipped=why)])
    todo = [c for c in todo if c not in skip]
    phases["support"] = _phase(t0, c0)

    # Phase 1: the models the unfinished cells need (cached ones return at once).
    t0, c0 = time.perf_counter(), time.process_time()
    needed = {c.job.ident: c.job for c in todo} | {
        c.key_job.ident: c.key_job for c in todo if c.key_job is not None
    }
    calls = [(out, job) for job in needed.values()]
    failed_models: dict[str, str] = {}
    trained = 0
    worker_cpu = 0.0
    with Workers(jobs, ray) as workers:
        for n, (i, res, error) in enumerate(workers.map_unordered(train_model_timed, calls), 1):
            if error is not None:
                job = calls[i][1]
                failed_models[job.ident] = f"{type(error).__name__}: {str(error).strip()}"
                log.warning("training %s failed: %s", job.scheme, failed_models[job.ident])
            else:
                trained += res[1]
                worker_cpu += res[2]
            if progress is not None:
                progress("models", n, len(calls))
        phases["models"] = _phase(t0, c0, worker_cpu, workers.in_process)
        phases["models"] |= {"count": len(calls), "trained": trained}

        # Phase 2: the cells. A cell whose model failed records that error without running.
        t0, c0 = time.perf_counter(), time.process_time()
        runnable = []
        for c in todo:
            bad = [j for j in (c.job, c.key_job) if j is not None and j.ident in failed_models]
            if bad:
                store.append([run_cell_stub(c, f"training failed: {failed_models[bad[0].ident]}")])
            else:
                runnable.append(c)
        certs: tuple[bytes, ...] = ()
        if notary is not None:
            t1 = time.perf_counter()
            n_stamped = stamp_keys(store, list(needed.values()), notary)
            phases["timestamps"] = {
                "seconds": round(time.perf_counter() - t1, 1),
                "count": n_stamped,
            }
            certs = (notary.ca_pem,)
        calls2 = [(out, c, certs) for c in runnable]
        worker_cpu = 0.0
        for n, (i, row, error) in enumerate(workers.map_unordered(run_cell, calls2), 1):
            if error is not None:  # a worker died (out of memory, killed): still one row
                row = run_cell_stub(runnable[i], f"worker failed: {type(error).__name__}: {error}")
            worker_cpu += row.get("cpu_seconds") or 0.0
            store.append([row])
            if progress is not None:
                progress("cells", n, len(calls2))
        phases["cells"] = _phase(t0, c0, worker_cpu, workers.in_process) | {"count": len(calls2)}

    rows = {r["cell"]: r for r in store.rows()}
    current = [rows[c.ident] for c in cells if c.ident in rows]
    seconds = round(time.perf_counter() - start, 1)
    runs[-1]["seconds"] = seconds
    # Driver + pool workers (reaped by now); on a shared machine wall time says little.
    runs[-1]["cpu_seconds"] = round(_cpu_seconds() - cpu0, 1)
    runs[-1]["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    runs[-1]["phases"] = phases
    store.write_json("meta.json", {**meta, "runs": runs})
    return BenchSummary(
        cells=len(cells),
        run=len(todo),
        skipped=len(cells) - len(todo) - len(skip),
        failed=sum(1 for r in current if r.get("error")),
        seconds=seconds,
        unsupported=sum(1 for r in current if r.get("skipped")),
    )


def _try_load(spec: str) -> Any:
    """The task's data, or None if it cannot be read (its training then records why)."""
    from nnmark.data import load_data

    try:
        return load_data(spec)
    except Exception:  # noqa: BLE001
        return None


def _phase(
    t0: float, c0: float, worker_cpu: float = 0.0, in_process: bool = True
) -> dict[str, float]:
    """Wall and CPU seconds of a phase: the driver's own CPU plus what each worker reported for
    its calls (pool workers are only reaped at the end, so getrusage alone cannot split them)."""
    own = time.process_time() - c0
    return {
        "seconds": round(time.perf_counter() - t0, 1),
        "cpu_seconds": round(own + (0.0 if in_process else worker_cpu), 1),
    }


def run_cell_stub(cell: Cell, error: str | None, skipped: str | None = None) -> dict[str, Any]:
    """The row of a cell that did not run: its model failed to train, its worker died (`error`),
    or its scheme cannot mark the task's model (`skipped`, the scheme's reason)."""
    a = cell.attack
    key_job = cell.key_job if a is None else cell.job
    assert key_job is not None
    return dict.fromkeys(ROW_SCHEMA) | {
        "cell": cell.ident,
        "kind": "calibration" if a is None else "attack",
        "data": cell.job.task.data,
        "arch": cell.job.task.arch,
        "seed": cell.job.seed,
        "scheme": key_job.scheme,
        "scheme_kind": scheme_kind(key_job.scheme),
        "attack": "unmarked" if a is None else a.family,
        "attack_spec": "none" if a is None else a.spec,
        "strength_option": None if a is None else a.option,
        "strength": None if a is None else a.strength,
        "level": None if a is None else a.level,
        "error": error,
        "skipped": skipped,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }
