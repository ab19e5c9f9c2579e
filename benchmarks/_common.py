"""Shared by benchmark scripts: result writing (JSON + Markdown) with the machine named as the
bench names it (`nnmark.bench.metrics.machine`)."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nnmark import evaluate
from nnmark.bench.metrics import machine
from nnmark.data.base import DataBundle

RESULTS = Path(__file__).resolve().parent / "results"


def write_results(name: str, payload: dict[str, Any], markdown_body: str) -> None:
    """benchmarks/results/<name>.json and .md, with the machine and the command."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(RESULTS.parents[1])
    command = "python " + shlex.join([str(script), *sys.argv[1:]])  # as a shell would take it
    doc = {"command": command, "machine": machine(), **payload}
    _replace(RESULTS / f"{name}.json", json.dumps(doc, indent=2) + "\n")
    m = doc["machine"]
    header = (
        f"# {name}\n\nCommand: `{command}`\n\nMachine: {m['cpu']} ({cpu_features(m)}), "
        f"{m['cpu_count']} cores, "
        f"torch {m['torch']} ({m['torch_threads']} threads), {m['platform']}\n\n"
    )
    _replace(RESULTS / f"{name}.md", header + markdown_body.rstrip() + "\n")


def mark_label(spec: str) -> str:
    """A file-name-safe form of a mark spec `scheme:option=value,...` (a bare scheme name is
    itself): seed004_full names its results with it, seeds_summary finds them by it."""
    return spec.replace(":", "_").replace("=", "-").replace(",", "_")


def cpu_features(m: dict[str, Any]) -> str:
    """The CPU's vector level and which half precisions it runs natively."""
    native = " and ".join(t for t in ("bf16", "fp16") if m.get(f"native_{t}")) or "fp32 only"
    return f"{m.get('cpu_capability', '?')}, native {native}"


def _replace(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: never a half-written result."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def accuracy_on_test(
    data: DataBundle, fraction: float | None = None
) -> Callable[[torch.nn.Module], float]:
    """model -> its accuracy on `data`'s test split (or a `fraction` of it)."""
    kwargs = {} if fraction is None else {"fraction": fraction}
    test = data.loader("test", 512, **kwargs)

    def accuracy(model: torch.nn.Module) -> float:
        return float(evaluate(model, test, data.task)["accuracy"])

    return accuracy


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t interval (0 for a single value)."""
    import statistics

    from scipy import stats

    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    half = stats.t.ppf((1 + confidence) / 2, len(values) - 1) * statistics.stdev(values)
    return m, half / len(values) ** 0.5


def interval(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """'mean +- half-width' of `values` x `scale` (mean_ci), for a results table."""
    m, h = mean_ci([scale * v for v in values])
    return f"{m:.{digits}f} +- {h:.{digits}f}"


def loopback_stamps() -> tuple[Callable[[Any], Any], list[bytes]]:
    """(stamp, certs): stamp(key) is the key with an RFC 3161 token from a loopback TSA that
    runs until the process exits, certs what verify(..., tsa_certs=) counts it with: the
    owner's case, who stamps keys as they go out. A stamp proves priority and waives nothing
    (nnmark.api.STAMP_WAIVES_NOTHING); a reading realigned to the marked reference counts for
    nothing, stamped or not (nnmark.api.inadmissible)."""
    import atexit
    import dataclasses

    from nnmark.provenance import fetch_timestamp
    from nnmark.testing.tsa import LoopbackTSA

    tsa = LoopbackTSA().__enter__()
    atexit.register(tsa.__exit__, None, None, None)  # before the interpreter stops its thread

    def stamp(key: Any) -> Any:
        return dataclasses.replace(key, timestamp=fetch_timestamp(key.commitment, tsa.url))

    return stamp, [tsa.ca_cert_pem]


def quantile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank; NaN for none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def digits_infer_body(batch: int) -> dict[str, Any]:
    """An OIP v2 infer request of the first `batch` digits test images (server benchmarks)."""
    from nnmark import load_data

    data = load_data("digits")
    x = data.x[data.splits["test"][:batch]]
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": x.flatten().tolist()}]}


def penalty_through_running_stats() -> None:
    """From here on, actsign's and deepsigns' penalties read the key inputs through BatchNorm's
    running statistics (eval mode), as from session 42 until KeyReader (session 46): the
    `--running-stats` of the benchmarks that compare the two readings."""
    from nnmark.layers import evaluating
    from nnmark.schemes._activations import KeyReader, layer_output

    def read(_self: KeyReader, model: Any, layer: str, x: torch.Tensor, _batch: Any) -> Any:
        with evaluating(model):
            return layer_output(model, layer, x)

    KeyReader.__call__ = read  # type: ignore[method-assign]
