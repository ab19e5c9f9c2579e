"""Runs a BenchSpec: trains each (scheme, model) once, then every attack cell, in parallel.

Models are cached in RESULTS/models/ by a hash of what produced them; rows are appended to
RESULTS/results.jsonl as cells finish, so a rerun skips finished cells. A failed cell records its
error and the sweep goes on (as timm's benchmark.py does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import resource
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from nnmark.bench.grid import BenchSpec
from nnmark.io import atomic_write_text

log = logging.getLogger(__name__)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _model_paths(out: Path, spec: BenchSpec, scheme: str) -> tuple[Path, Path, str]:
    ident = _hash(
        [spec.data, spec.arch, scheme, spec.scheme_options.get(scheme, {}), spec.epochs, spec.seed]
    )
    folder = out / "models"
    return folder / f"{scheme}-{ident}.safetensors", folder / f"{scheme}-{ident}.nnkey", ident


def train_one(out: Path, spec: BenchSpec, scheme: str) -> str:
    """Train (or find in the cache) the model of one scheme; returns its cache id."""
    from nnmark.api import embed, model_info, new_model, train
    from nnmark.data import load_data
    from nnmark.io import save_model
    from nnmark.keys import OwnerKey
    from nnmark.train import TrainConfig

    torch.set_num_threads(1)
    model_path, key_path, ident = _model_paths(out, spec, scheme)
    if model_path.exists() and (scheme == "none" or key_path.exists()):
        return ident
    data = load_data(spec.data)
    cfg = TrainConfig(epochs=spec.epochs, seed=spec.seed)
    init = new_model(spec.arch, data, seed=spec.seed)
    if scheme == "none":
        model = train(init, data, cfg)
    else:
        key = OwnerKey.new("nnmark bench", nonce=_hash([scheme, spec.seed]) * 2)
        model, key = embed(
            init, data, scheme, options=spec.scheme_options.get(scheme), key=key, config=cfg
        )
        key.save(key_path)
    save_model(model, model_info(model, data), model_path)
    return ident


def run_cell(
    out: Path, spec: BenchSpec, scheme: str, attack_spec: str, ladder: float | None
) -> dict[str, Any]:
    """One cell: attack the scheme's model, measure fidelity, verify. Never raises."""
    from nnmark.api import attack, verify
    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey
    from nnmark.tasks import evaluate, get_task

    torch.set_num_threads(1)
    row: dict[str, Any] = {
        "cell": cell_id(spec, scheme, attack_spec),
        "data": spec.data,
        "arch": spec.arch,
        "scheme": scheme,
        "attack": attack_spec,
        "ladder_value": ladder,
        "error": None,
    }
    start = time.perf_counter()
    try:
        model_path, key_path, _ = _model_paths(out, spec, scheme)
        model, info = load_model(model_path)
        data = load_data(spec.data)
        metric = get_task(info.task).primary
        test = data.loader("test", 512)
        row["fidelity_metric"] = metric
        row["fidelity_before"] = evaluate(model, test, info.task)[metric]
        attacked = (
            model if attack_spec == "none" else attack(model, attack_spec, data, seed=spec.seed + 1)
        )
        row["fidelity_after"] = evaluate(attacked, test, info.task)[metric]
        if scheme != "none":
            v = verify(attacked, OwnerKey.load(key_path))
            row.update(
                {
                    "verdict": v.verdict,
                    "statistic_name": v.statistic_name,
                    "statistic": v.statistic,
                    "p_value": v.p_value,
                    "queries": v.queries,
                }
            )
    except Exception as exc:  # noqa: BLE001 - the sweep records the failure and goes on
        row["error"] = f"{type(exc).__name__}: {exc}"
        log.debug("cell %s failed:\n%s", row["cell"], traceback.format_exc())
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def calibration_rows(out: Path, spec: BenchSpec, schemes: list[str]) -> list[dict[str, Any]]:
    """The unmarked model verified with every scheme's key: p-values under the null."""
    from nnmark.api import verify
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey

    plain, _ = load_model(_model_paths(out, spec, "none")[0])
    rows = []
    for s in schemes:
        row: dict[str, Any] = {
            "cell": f"calibration|{spec.data}|{spec.arch}|{s}",
            "scheme": s,
            "attack": "unmarked model",
            "calibration": True,
            "error": None,
        }
        try:
            v = verify(plain, OwnerKey.load(_model_paths(out, spec, s)[1]))
            row.update({"verdict": v.verdict, "p_value": v.p_value, "statistic": v.statistic})
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def cell_id(spec: BenchSpec, scheme: str, attack_spec: str) -> str:
    return f"{spec.data}|{spec.arch}|{spec.epochs}|{spec.seed}|{scheme}|{attack_spec}"


def read_rows(out: Path) -> list[dict[str, Any]]:
    path = out / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_bench(
    spec: BenchSpec,
    out: Path,
    *,
    jobs: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Run (or resume) the sweep; returns counts of cells done now, skipped, failed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(exist_ok=True)
    atomic_write_text(out / "spec.json", json.dumps(asdict(spec), indent=2, default=list))
    schemes = spec.resolved_schemes()
    done = {r["cell"] for r in read_rows(out)}
    cells = [
        (s, a, lv) for s in ["none", *schemes] for a, lv in [("none", None), *spec.attack_specs()]
    ]
    todo = [c for c in cells if cell_id(spec, c[0], c[1]) not in done]
    failed_models: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(train_one, out, spec, s): s for s in ["none", *schemes]}
        for f in as_completed(futures):
            try:
                f.result()
            except Exception as exc:  # noqa: BLE001
                failed_models[futures[f]] = f"{type(exc).__name__}: {exc}"
        results = []
        work = {}
        for s, a, lv in todo:
            if s in failed_models:
                results.append(
                    {
                        "cell": cell_id(spec, s, a),
                        "scheme": s,
                        "attack": a,
                        "ladder_value": lv,
                        "error": f"training failed: {failed_models[s]}",
                    }
                )
            else:
                work[pool.submit(run_cell, out, spec, s, a, lv)] = (s, a)
        with (out / "results.jsonl").open("a") as fh:
            for row in results:
                fh.write(json.dumps(row) + "\n")
            for i, done_cell in enumerate(as_completed(work)):
                fh.write(json.dumps(done_cell.result()) + "\n")
                fh.flush()
                if progress is not None:
                    progress(i + 1, len(work))
    cal_done = any(r.get("calibration") for r in read_rows(out))
    if not cal_done and "none" not in failed_models:
        with (out / "results.jsonl").open("a") as fh:
            ok = [s for s in schemes if s not in failed_models]
            for row in calibration_rows(out, spec, ok):
                fh.write(json.dumps(row) + "\n")
    failed = sum(1 for r in read_rows(out) if r.get("error"))
    return {
        "cells": len(cells),
        "run": len(todo),
        "skipped": len(cells) - len(todo),
        "failed": failed,
    }
