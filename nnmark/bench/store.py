"""The results directory of a benchmark: JSON lines (one row per cell), a model cache, metadata.

Layout of RESULTS/:
  results.jsonl   one JSON object per finished cell (schema: `ROW_SCHEMA`), appended as cells
                  finish, so an interrupted sweep loses at most the cells in flight; a rerun
                  skips every cell whose `cell` id is already there.
  models/         trained models (`<id>.safetensors`) and their keys (`<id>.nnkey`), named by a
                  hash of their recipe (task, scheme, options, seed, epochs) and the nnmark
                  version (`bench.cache`): a rerun, or another grid sharing a model, trains it
                  once; `<id>.fidelity.json` keeps its fidelity.
  spec.json       the grid that was run; meta.json: machine, command, times.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_text
from nnmark.keys import MAX_MARKS

if TYPE_CHECKING:
    from nnmark.bench.cache import ModelCache

log = logging.getLogger(__name__)

#: The most bytes and lines of results.jsonl read. `nnmark report` reads directories another
#: hand may have written, and read the file whole with no bound (red team, session 27). A real
#: sweep writes about 720 bytes a row: the quick preset's 1,064 rows are 0.75 MB
#: (benchmarks/quick); these caps are about 85x (bytes) and 94x (lines) that.
MAX_RESULTS_BYTES = 64 << 20
MAX_RESULTS_LINES = 100_000
#: A longer line is not parsed (skipped as not a result row, its cell rerun): a real row is
#: about 1 KB (longest in benchmarks/: 1,071 bytes), and one line of 64 MB of JSON numbers costs
#: gigabytes as Python objects.
MAX_ROW_BYTES = 1 << 20
#: The most bytes of spec.json or meta.json read (real ones: 4 and 8 KB in benchmarks/quick).
MAX_JSON_BYTES = 16 << 20

#: Every field of a results.jsonl row, with its meaning (docs/bench.md repeats this table).
ROW_SCHEMA: dict[str, str] = {
    "cell": "str: unique id of the cell (task|scheme|attack spec|seed); reruns skip known ids",
    "kind": "str: 'attack' (a model under attack) or 'calibration' (an unmarked model "
    "verified with a scheme's key)",
    "data": "str: data spec, e.g. 'digits' or 'mnist:/path'",
    "arch": "str: zoo architecture",
    "task": "str: 'classification' | 'segmentation' (null if the cell failed early)",
    "seed": "int: seed of the marked model's training",
    "scheme": "str: scheme name, 'a+b' for a composite mark, 'none' for the plain model",
    "scheme_kind": "str | null: 'whitebox' | 'blackbox' | 'integrity' | 'composite' | null",
    "attack": "str: attack family: a registered name, a variant of one (grid.VARIANTS), 'a+b' "
    "for a chain, 'none', or 'unmarked'",
    "attack_spec": "str: the exact spec given to nnmark.api.attack",
    "strength_option": "str | null: the option the ladder varies (fraction, sigma, epochs, bits)",
    "strength": "float | null: its value in this cell",
    "level": "int | null: 0, 1, 2 = weak, medium, strong on the ladder",
    "fidelity_metric": "str: 'accuracy' or 'dice'",
    "fidelity_before": "float: fidelity of the model before the attack (test split)",
    "fidelity_after": "float: fidelity after the attack",
    "verdict": "str | null: found / not_found / intact / modified (null for scheme 'none')",
    "statistic_name": "str | null: the scheme's statistic (ber, trigger_accuracy, ...)",
    "statistic": "float | null: its value",
    "p_value": "float | null: p-value of the verification (combined by Fisher for composites)",
    "alpha": "float | null: the significance level of the verdict (p < alpha: found)",
    "parts": "list | null: composite marks: one {scheme, verdict, statistic, p_value} per mark",
    "queries": "int | null: queries a black-box verification spent",
    "seconds": "float: wall time of the cell (attack + evaluation + verification)",
    "cpu_seconds": "float: CPU time of the cell in its worker (one torch thread): on a shared "
    "machine the figure to budget with",
    "peak_rss_mib": "float: peak resident memory of the worker during the cell (MiB)",
    "device": "str | null: where the cell ran (`--device`: cpu, cuda:0, ...; plain cuda under "
    "Ray, which picks the GPU); null if it did not run; rows written before the field lack it",
    "error": "str | null: 'Type: message' if the cell failed; the sweep goes on",
    "skipped": "str | null: why the cell did not run: its scheme cannot mark this task's model "
    "(the reason its plan() gave); not a failure",
}


def content_id(obj: Any) -> str:
    """A short, stable hash of a JSON-able object: the cache name of what it produces."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultStore:
    """One results directory: rows appended as JSON lines, models cached by content hash."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.rows_path = self.root / "results.jsonl"
        self.models = self.root / "models"

    def create(self) -> ResultStore:
        self.models.mkdir(parents=True, exist_ok=True)
        return self

    def rows(self) -> list[dict[str, Any]]:
        """One row per cell (the latest, if a cell was retried); a torn last line is skipped."""
        return read_rows(self.root)

    def done(self, retry_failed: bool = False) -> set[str]:
        """Cells a rerun skips: all recorded ones, or only the successful ones."""
        return {r["cell"] for r in self.rows() if not (retry_failed and r.get("error"))}

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        # Only the driver writes, one whole line at a time, flushed: resumable after a kill.
        self._drop_torn_tail()
        with self.rows_path.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(_finite(row), default=str) + "\n")
                fh.flush()

    def _drop_torn_tail(self) -> None:
        """Cut a half-written last line (a sweep killed mid-write); its cell is simply rerun."""
        if not self.rows_path.exists():
            return
        data = self.rows_path.read_bytes()
        if data and not data.endswith(b"\n"):
            with self.rows_path.open("r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    @property
    def cache(self) -> ModelCache:
        """The model cache in RESULTS/models (`nnmark.bench.cache`: how its files are named)."""
        from nnmark.bench.cache import ModelCache

        return ModelCache(self.models)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.root / name, json.dumps(obj, indent=2, default=str) + "\n")

    def read_json(self, name: str) -> dict[str, Any]:
        """spec.json, meta.json: at most MAX_JSON_BYTES read (the report renders their lists;
        red team, session 27)."""
        path = self.root / name
        if not path.exists():
            return {}
        with path.open("rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            raise NNMarkError(f"{path}: more than {MAX_JSON_BYTES} bytes is too large")
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise NNMarkError(f"{path}: not JSON ({type(exc).__name__})") from None
        if not isinstance(doc, dict):  # a list here ended the report in an AttributeError
            raise NNMarkError(f"{path}: not a JSON object")
        return doc


def _finite(obj: Any) -> Any:
    """NaN / inf become null: the rows stay strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def read_rows(root: Path) -> list[dict[str, Any]]:
    """The rows of RESULTS/results.jsonl, one per cell (a retried cell's latest row)."""
    return scan_rows(root)[0]


#: The fields every row has, failed or not (cells._row_head): a row without one is not a row
#: (`{"cell": "a"}` alone ended the report in a KeyError; review, session 34).
IDENTITY = ("cell", "kind", "data", "arch", "seed", "scheme", "attack", "attack_spec")


def scan_rows(root: Path) -> tuple[list[dict[str, Any]], int]:
    """(rows, lines skipped): a line that is not a JSON object naming its cell (a torn write,
    `null`, `42`, `[1]`, `{}`, one over MAX_ROW_BYTES) is skipped and counted, never fatal; its
    cell is rerun. A file over MAX_RESULTS_BYTES or MAX_RESULTS_LINES is refused whole (an
    NNMarkError) before any line is parsed (red team, session 27)."""
    path = Path(root) / "results.jsonl"
    if not path.exists():
        return [], 0
    with path.open("rb") as fh:
        data = fh.read(MAX_RESULTS_BYTES + 1)  # not stat(): a sweep may be appending to it
    if len(data) > MAX_RESULTS_BYTES:
        raise NNMarkError(
            f"{path}: more than {MAX_RESULTS_BYTES} bytes is too large for a results file"
        )
    # JSON Lines end at \n (\r\n too: the \r is JSON whitespace); maxsplit bounds the list
    lines = data.decode(errors="replace").split("\n", MAX_RESULTS_LINES)
    if len(lines) > MAX_RESULTS_LINES and lines[-1].strip():
        raise NNMarkError(
            f"{path}: more than {MAX_RESULTS_LINES} lines is too many for a results file"
        )
    del data
    latest: dict[Any, dict[str, Any]] = {}
    skipped = 0
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line) if len(line) <= MAX_ROW_BYTES else None
        except (json.JSONDecodeError, RecursionError):
            row = None
        if (
            not isinstance(row, dict)
            or any(row.get(name) is None for name in IDENTITY)
            or _mistyped(row)
            or _unmeasured(row)
        ):
            log.warning("%s:%d: not a result row, skipped (its cell will be rerun)", path, n)
            skipped += 1
            continue
        latest.pop(row["cell"], None)  # a retried cell moves to its new place
        # a field it lacks: unknown; a field ROW_SCHEMA does not name: dropped (62 MB of
        # them in one file held 1.8 GB; review, session 36)
        kept = {name: row.get(name) for name in ROW_SCHEMA}
        if kept["parts"] is not None:  # each part's own fields only, as for the row's
            kept["parts"] = [{f: p.get(f) for f in PART_FIELDS} for p in kept["parts"]]
        latest[row["cell"]] = kept
    return list(latest.values()), skipped


#: What a composite row's part holds (ROW_SCHEMA's `parts`); a key holds at most MAX_MARKS marks,
#: so a row at most as many parts: 350,000 empty parts a row kept 1.9 GB from 63 MB of rows
#: (review, session 37).
PART_FIELDS = ("scheme", "verdict", "statistic", "p_value")


_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "list": (list,),
    "null": (type(None),),
}
#: The JSON types ROW_SCHEMA allows for each field, read from its "type | type: meaning" text.
_ROW_TYPES = {
    name: tuple(t for word in text.split(":")[0].split("|") for t in _TYPES[word.strip()])
    for name, text in ROW_SCHEMA.items()
}


def _unmeasured(row: dict[str, Any]) -> bool:
    """An attacked cell that neither failed nor was skipped but measured no fidelity: the
    report's trade-off plot subtracted its Nones (review, session 36)."""
    if row.get("kind", "attack") != "attack" or row.get("attack") == "none":
        return False
    if row.get("error") or row.get("skipped"):
        return False
    fidelity = [row.get("fidelity_before"), row.get("fidelity_after")]
    return not all(isinstance(v, int | float) and not isinstance(v, bool) for v in fidelity)


def _mistyped(row: dict[str, Any]) -> bool:
    """Whether a field of `row` has a type ROW_SCHEMA does not allow (a string fidelity, a
    `parts` that is not a list of objects aborted the whole report; red team, session 26)."""
    for name, value in row.items():
        allowed = _ROW_TYPES.get(name)
        if allowed is None or value is None:
            continue  # a field this version does not know, or one a failed cell left empty
        if isinstance(value, bool) or not isinstance(value, allowed):
            return True
    parts = row.get("parts")
    return isinstance(parts, list) and (len(parts) > MAX_MARKS or not all(_part(p) for p in parts))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _part(p: Any) -> bool:
    """A composite's part as the runner writes it: the report formats each field (a string
    p-value ended it with a traceback)."""
    return (
        isinstance(p, dict)
        and isinstance(p.get("scheme"), str)
        and isinstance(p.get("verdict"), str)
        and _number(p.get("p_value"))
        and (p.get("statistic") is None or _number(p.get("statistic")))
    )
