"""The benchmark: tasks x schemes (and composites) x attacks at three strengths, then a report.

`run_bench(spec, out)` writes one JSON row per cell into out/results.jsonl (schema:
`nnmark.bench.store.ROW_SCHEMA`, documented in docs/bench.md), resumable, failures recorded;
`write_report(out, "report.html")` turns the rows into one self-contained HTML page.

One module per job: `grid` (what a sweep covers; the presets are spec files in `presets/`),
`jobs` (the plan: models and cells), `cache` (models named by their recipe), `models` and
`cells` (the two phases), `executors` (process pool, Ray), `metrics` (CPU, memory, machine),
`store` (the results folder), `runner` (`run_bench`), `report` (outcomes, plots, tables,
rendering), `false_claims` (never-marked models against many keys).
"""

from nnmark.bench.cache import ModelCache
from nnmark.bench.grid import LADDERS, PRESETS, BenchSpec, Task, load_spec
from nnmark.bench.report import succeeded, write_report
from nnmark.bench.runner import BenchSummary, run_bench
from nnmark.bench.store import ROW_SCHEMA, ResultStore, read_rows

__all__ = [
    "LADDERS",
    "PRESETS",
    "ROW_SCHEMA",
    "BenchSpec",
    "BenchSummary",
    "ModelCache",
    "ResultStore",
    "Task",
    "load_spec",
    "read_rows",
    "run_bench",
    "succeeded",
    "write_report",
]
