"""Runs a BenchSpec: trains each (task, scheme) model once, then every cell, in parallel.

Two phases, each spread over a local process pool (`jobs`) or a Ray cluster (`ray`):
1. models (`bench.models`): the plain model, one per scheme and composite, and the unmarked
   calibration models, each cached in RESULTS/models/ under a hash of its recipe
   (`bench.cache`);
2. cells (`bench.cells`): every (model, attack at a strength) and every (unmarked model, key)
   verification.
Rows are appended to RESULTS/results.jsonl as cells finish, so a rerun skips finished cells. A
failed cell (or a model that failed to train) records its error and the sweep goes on, as
timm's benchmark.py does. A scheme that cannot mark a task's model (its own `plan()` refuses it,
e.g. a trigger-set scheme on a segmentation U-Net) is asked before anything trains
(`bench.jobs.unsupported`); its cells are recorded as skipped, with the scheme's reason.

With Ray the results directory must be on a file system every node sees (the workers read and
write the model cache there); `ray="local"` starts a private local instance.

`device` (`--device`) is resolved once, here, before anything is written: a device this machine
(or, under Ray, the cluster) lacks, or a task whose data folder is not there, is one NNMarkError
line. On `cuda` each local worker process owns one GPU (`executors.worker_devices`). The device
is not part of a model's cache name (`nnmark.device`: a run's device is not its recipe); rows
and meta.json's run record say where each cell and run ran.

The other parts of the bench: `grid` (what a sweep covers, the presets), `executors` (pool,
Ray), `metrics` (CPU, memory, machine), `store` (the results folder), `report` (plots, tables,
HTML and Markdown).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nnmark.bench.cells import run_cell, run_cell_stub
from nnmark.bench.executors import Workers, check_jobs, init_ray, ray_gpus
from nnmark.bench.grid import BenchSpec, Task
from nnmark.bench.jobs import Cell, ModelJob, changed_cells, plan, split_bits, unsupported
from nnmark.bench.metrics import cpu_seconds, machine, phase
from nnmark.bench.models import Notary, stamp_keys, train_model_timed
from nnmark.bench.store import ResultStore
from nnmark.device import resolve_device
from nnmark.errors import NNMarkError, one_line

log = logging.getLogger(__name__)

__all__ = ["BenchSummary", "run_bench"]

Progress = Callable[[str, int, int], None] | None


@dataclass(frozen=True)
class BenchSummary:
    cells: int
    run: int
    skipped: int
    failed: int
    seconds: float
    unsupported: int = 0  # cells skipped because their scheme cannot mark the task's model
    failed_before: int = 0  # of `failed`: cells that failed in an earlier run and were skipped


def run_bench(
    spec: BenchSpec,
    out: Path,
    *,
    jobs: int = 1,
    ray: str | None = None,
    retry_failed: bool = False,
    command: str = "",
    progress: Progress = None,
    notary: Notary | None = None,
    device: str = "cpu",
) -> BenchSummary:
    """Run (or resume) the sweep into `out`; returns counts of cells run, skipped and failed.

    `ray`: None for the local process pool, "local" for a private Ray instance, "auto" or an
    address ("ray://host:10001") to join a cluster. `retry_failed`: run failed cells again
    (their new row replaces the old one). `notary`: stamp every key with this TSA before the
    cells run, and count the timestamps when verifying. `device`: where models train and cells
    run (auto, cpu, cuda, cuda:N, mps); with `cuda`, worker k of the local pool owns GPU k mod G.
    """
    check_jobs(jobs, ray)
    start, cpu0 = time.perf_counter(), cpu_seconds()
    if ray is not None:
        init_ray(ray, jobs)
    where = bench_device(device, ray)
    store = ResultStore(out)
    spec.check_options()
    _, _, cells = plan(spec)
    rows = store.rows()
    check_resume(store, spec, {r["cell"] for r in rows})
    done = {r["cell"] for r in rows if not (retry_failed and r.get("error"))}
    todo = [c for c in cells if c.ident not in done]
    check_data(c.job.task for c in todo)
    for j in _needed(todo).values():  # a composite's parts that disagree on `bits`, likewise
        split_bits(j.scheme, j.options)
    workers = Workers(jobs, ray, where)
    store.create()  # nothing is written before the device and the data are known to be there
    meta = store.read_json("meta.json")
    # each run's grid kept beside it: spec.json is the last one, and a folder resumed with
    # other attacks or options holds rows of every grid (new-user review, session 39)
    runs = [
        *meta.get("runs", []),
        {**_run_record(command, jobs, ray, workers), "spec": spec.to_dict()},
    ]
    store.write_json("meta.json", {**meta, "runs": runs})
    store.write_json("spec.json", spec.to_dict())

    phases: dict[str, dict[str, float]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    runnable = _skip_unsupported(store, todo)
    n_unsupported = len(todo) - len(runnable)
    phases["support"] = phase(t0, c0)
    with workers:
        needed = _needed(runnable)
        failed_models = _train_models(workers, out, needed, phases, progress)
        runnable = _drop_failed(store, runnable, failed_models)
        certs: tuple[bytes, ...] = ()
        if notary is not None:
            t1 = time.perf_counter()
            n_stamped = stamp_keys(store, list(needed.values()), notary)
            phases["timestamps"] = {
                "seconds": round(time.perf_counter() - t1, 1),
                "count": n_stamped,
            }
            certs = (notary.ca_pem,)
        _run_cells(workers, store, runnable, certs, phases, progress)

    latest = {r["cell"]: r for r in store.rows()}
    current = [latest[c.ident] for c in cells if c.ident in latest]
    seconds = round(time.perf_counter() - start, 1)
    runs[-1] |= {
        "seconds": seconds,
        # Driver + pool workers (reaped by now); on a shared machine wall time says little.
        "cpu_seconds": round(cpu_seconds() - cpu0, 1),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "phases": phases,
    }
    store.write_json("meta.json", {**meta, "runs": runs})
    return BenchSummary(
        cells=len(cells),
        run=len(todo) - n_unsupported,
        skipped=len(cells) - len(todo),
        failed=sum(1 for r in current if r.get("error")),
        seconds=seconds,
        unsupported=sum(1 for r in current if r.get("skipped")),
        failed_before=sum(1 for r in current if r["cell"] in done and r.get("error")),
    )


def bench_device(device: str, ray: str | None) -> str:
    """The sweep's device, checked before any work (one NNMarkError line if it is not there).

    Locally: this machine's (`nnmark.device.resolve_device`; `auto` picks a GPU when present).
    Under Ray the tasks run on the cluster's nodes, so `cuda` (or `auto`) asks whether the
    cluster has a GPU, not this driver; Ray picks each task's GPU, so an index is refused.
    """
    if ray is None:
        return str(resolve_device(device))
    text = device.strip().lower()
    if re.fullmatch(r"cuda:\d{1,3}", text):
        raise NNMarkError(f"--device {text} with --ray: Ray gives each task its GPU; use cuda")
    if text in ("cuda", "auto"):
        if ray_gpus() >= 1:
            return "cuda"
        if text == "cuda":
            raise NNMarkError("device 'cuda' is not available: the Ray cluster has no GPU")
    return str(resolve_device(text))


#: The most bytes of a results folder's spec.json that a resume plans (its cells are compared
#: with the new grid's): the presets' are under 4 KB; planning a crafted 7 MB one (a chain of
#: 1.2M parts) took 13.5 s and 1.8 GB (review, session 32).
MAX_SPEC_BYTES = 256 * 1024


def check_resume(store: ResultStore, spec: BenchSpec, names: set[str]) -> None:
    """Refuse to resume into a results folder whose rows were computed under another grid: a
    cell's name leaves out the scheme options (and the calibration models' epochs), so a rerun
    with other ones skipped every finished cell and overwrote spec.json with options no row was
    computed with. One NNMarkError line naming the first difference; a grid that only adds cells
    (or leaves some out) resumes."""
    if not names:
        return
    spec_file = store.root / "spec.json"
    if spec_file.exists() and spec_file.stat().st_size > MAX_SPEC_BYTES:  # before planning it
        raise NNMarkError(
            f"{spec_file}: more than {MAX_SPEC_BYTES} bytes is not a grid this version wrote; "
            "use another --out"
        )
    try:
        doc = store.read_json("spec.json")
        if not doc:
            return  # rows without a grid (written by hand): nothing to compare
        if not isinstance(doc, dict):
            raise TypeError("not a mapping")
        changed = changed_cells(BenchSpec.from_dict(doc), spec, names)
    except (
        NNMarkError,
        TypeError,
        ValueError,
        AttributeError,
        LookupError,
        ArithmeticError,
        RecursionError,
    ) as exc:
        why = one_line(str(exc))[:200]
        raise NNMarkError(
            f"{store.root} holds results, but its spec.json is not a grid this version reads "
            f"({why}); use another --out"
        ) from None
    if changed:
        raise NNMarkError(
            f"{store.root} holds results of another grid: {_difference(*changed[0])} "
            f"({len(changed)} finished cell(s) would be mixed); use another --out (or the "
            "original config)"
        )


def _difference(old: Cell, new: Cell) -> str:
    """What differs between two cells of one name, in a few words."""
    for a, b in ((old.job, new.job), (old.key_job, new.key_job)):
        if a is None or b is None:
            continue
        if a.options != b.options:
            return (
                f"scheme_options of {b.scheme}: {_short(a.options)} then, {_short(b.options)} now"
            )
        if a.epochs != b.epochs:
            return f"calibration_epochs: {a.epochs} then, {b.epochs} now"
    return f"the inputs of cell {new.ident}"


def _short(obj: Any) -> str:
    text = one_line(json.dumps(obj, sort_keys=True, default=str))
    return text if len(text) <= 80 else text[:77] + "..."


def check_data(tasks: Iterable[Task]) -> None:
    """Refuse, before any work, a task whose data set is not registered or whose folder is not
    there: one line naming it, where otherwise every model of the task would fail to train
    (CIFAR-10, for one, is not in the shared data folder). What the folder holds is read, and
    judged, by training."""
    from nnmark.data import DATASETS

    for spec in dict.fromkeys(t.data for t in tasks):
        name, sep, path = (p.strip() for p in spec.partition(":"))
        DATASETS.get(name)
        if sep and path and not Path(path).exists():
            raise NNMarkError(f"{name}: data folder not found: {path}")


def _run_record(command: str, jobs: int, ray: str | None, workers: Workers) -> dict[str, Any]:
    record: dict[str, Any] = {
        "command": command,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "jobs": jobs,
        "ray": ray,
        "device": workers.device,
    }
    if ray is None and workers.device is not None and workers.device.startswith("cuda"):
        import torch

        # which GPU each local worker owns, and what those GPUs are (timings depend on them)
        record["worker_devices"] = workers.devices
        record["gpus"] = {d: torch.cuda.get_device_name(d) for d in dict.fromkeys(workers.devices)}
    return record


def _skip_unsupported(store: ResultStore, todo: list[Cell]) -> list[Cell]:
    """Phase 0: ask each scheme whether it can mark its task's model (once per job; a cached
    model was trained, so it is supported). Cells of a refusal become skip rows (nothing of
    theirs trains); returns the others."""
    reasons: dict[str, str | None] = {}
    loaded: dict[str, Any] = {}
    for c in todo:
        for j in (c.job, c.key_job):
            if j is None or j.ident in reasons:
                continue
            reasons[j.ident] = None
            if j.scheme != "none" and not store.cache.model_path(j.ident).exists():
                if j.task.data not in loaded:
                    loaded[j.task.data] = _try_load(j.task.data)
                data = loaded[j.task.data]
                reasons[j.ident] = unsupported(j.task, j.scheme, j.options, data)
    keep = []
    for c in todo:
        why = reasons[c.job.ident] or (reasons[c.key_job.ident] if c.key_job else None)
        if why:
            store.append([run_cell_stub(c, None, skipped=why)])
        else:
            keep.append(c)
    return keep


def _needed(cells: Sequence[Cell]) -> dict[str, ModelJob]:
    """The models (and key models) the cells need, by cache id."""
    out = {c.job.ident: c.job for c in cells}
    return out | {c.key_job.ident: c.key_job for c in cells if c.key_job is not None}


def _train_models(
    workers: Workers,
    out: Path,
    needed: dict[str, ModelJob],
    phases: dict[str, dict[str, float]],
    progress: Progress,
) -> dict[str, str]:
    """Phase 1: train the models the cells need (cached ones return at once); returns the
    error of each model that failed, by cache id."""
    t0, c0 = time.perf_counter(), time.process_time()
    calls = [(out, job) for job in needed.values()]
    failed: dict[str, str] = {}
    trained, worker_cpu = 0, 0.0
    for n, (i, res, error) in enumerate(workers.map_unordered(train_model_timed, calls), 1):
        if error is not None:
            job = calls[i][1]
            failed[job.ident] = f"{type(error).__name__}: {str(error).strip()}"
            log.warning("training %s failed: %s", job.scheme, failed[job.ident])
        else:
            trained += res[1]
            worker_cpu += res[2]
        if progress is not None:
            progress("models", n, len(calls))
    phases["models"] = phase(t0, c0, worker_cpu, workers.in_process)
    phases["models"] |= {"count": len(calls), "trained": trained}
    return failed


def _drop_failed(store: ResultStore, cells: list[Cell], failed: dict[str, str]) -> list[Cell]:
    """A cell whose model failed to train records that error without running."""
    keep = []
    for c in cells:
        bad = [j for j in (c.job, c.key_job) if j is not None and j.ident in failed]
        if bad:
            store.append([run_cell_stub(c, f"training failed: {failed[bad[0].ident]}")])
        else:
            keep.append(c)
    return keep


def _run_cells(
    workers: Workers,
    store: ResultStore,
    cells: list[Cell],
    certs: tuple[bytes, ...],
    phases: dict[str, dict[str, float]],
    progress: Progress,
) -> None:
    """Phase 2: every cell, its row appended as it finishes."""
    t0, c0 = time.perf_counter(), time.process_time()
    calls = [(store.root, c, certs) for c in cells]
    worker_cpu = 0.0
    for n, (i, row, error) in enumerate(workers.map_unordered(run_cell, calls), 1):
        if error is not None:  # a worker died (out of memory, killed): still one row
            row = run_cell_stub(cells[i], f"worker failed: {type(error).__name__}: {error}")
        worker_cpu += row.get("cpu_seconds") or 0.0
        store.append([row])
        if progress is not None:
            progress("cells", n, len(calls))
    phases["cells"] = phase(t0, c0, worker_cpu, workers.in_process) | {"count": len(calls)}


def _try_load(spec: str) -> Any:
    """The task's data, or None if it cannot be read (its training then records why)."""
    from nnmark.data import load_data

    try:
        return load_data(spec)
    except Exception:  # noqa: BLE001
        return None
