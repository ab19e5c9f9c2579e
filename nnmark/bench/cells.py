"""The cells phase of a sweep: attack a cached model, measure its fidelity, verify it with its
key, and write everything into one row (`ROW_SCHEMA`); a cell never raises."""

from __future__ import annotations

import functools
import json
import logging
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nnmark.bench.jobs import Cell, scheme_kind
from nnmark.bench.metrics import peak_rss_mib, reset_peak_rss
from nnmark.bench.store import ROW_SCHEMA, ResultStore
from nnmark.io import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["run_cell", "run_cell_stub"]


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


def run_cell(
    root: Path, cell: Cell, tsa_certs: tuple[bytes, ...] = (), device: str = "cpu"
) -> dict[str, Any]:
    """Attack a cached model, measure fidelity, verify with its key (a timestamp on it counted
    when `tsa_certs` vouch for it: the attacked copy is first seen when the cell runs, after
    the bench stamped the keys), all on `device`. Never raises."""
    import torch

    from nnmark.api import attack, verify
    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey
    from nnmark.tasks import evaluate, get_task

    torch.set_num_threads(1)
    reset_peak_rss()
    cpu0 = time.process_time()
    store = ResultStore(root)
    task = cell.job.task
    a = cell.attack
    key_job = cell.key_job if a is None else cell.job
    assert key_job is not None
    scheme = key_job.scheme
    row = _row_head(cell)  # every field, always (None if unknown)
    row["device"] = device
    start = time.perf_counter()
    try:
        model, info = load_model(store.cache.model_path(cell.job.ident))
        model = model.to(device)  # evaluate, attack and verify run where the model is
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
            model = attack(model, a.spec, data, seed=cell.job.seed + 1, device=device)
            row["fidelity_after"] = evaluate(model, test, info.task)[metric]
        else:
            row["fidelity_after"] = row["fidelity_before"]
        if scheme != "none":
            key = OwnerKey.load(store.cache.key_path(key_job.ident))
            sources = _verify_data(data, key_job.options)
            # the suspect (the attacked copy) is first seen now, after the key was stamped
            seen = datetime.now(timezone.utc)
            v = verify(model, key, data=sources, tsa_certs=tsa_certs, suspect_seen=seen)
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
    row["peak_rss_mib"] = peak_rss_mib()
    return row


def run_cell_stub(cell: Cell, error: str | None, skipped: str | None = None) -> dict[str, Any]:
    """The row of a cell that did not run: its model failed to train, its worker died (`error`),
    or its scheme cannot mark the task's model (`skipped`, the scheme's reason)."""
    return _row_head(cell) | {
        "error": error,
        "skipped": skipped,
        "seconds": 0.0,
        "cpu_seconds": 0.0,
    }


def _row_head(cell: Cell) -> dict[str, Any]:
    """A row with every ROW_SCHEMA field (None where unknown) and what the cell itself says."""
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
    }
