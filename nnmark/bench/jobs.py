"""The plan of a sweep: the models a grid needs (`ModelJob`), its cells (`Cell`), and which
schemes cannot mark a task's model (asked of the schemes themselves, before anything trains)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import asdict, dataclass
from typing import Any

from nnmark.bench.cache import model_id
from nnmark.bench.grid import OPTIMISER_FIELDS, AttackCell, BenchSpec, Task
from nnmark.bench.store import MAX_RESULTS_LINES, content_id
from nnmark.errors import NNMarkError

log = logging.getLogger(__name__)

__all__ = [
    "BENCH_CREATED",
    "Cell",
    "ModelJob",
    "changed_cells",
    "count_cells",
    "plan",
    "scheme_kind",
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
        for k in OPTIMISER_FIELDS:  # only where set: the recipes of earlier grids stand
            task.pop(k)
        task.update(self.task.optimiser_changes())
        return [task, self.scheme, self.options, self.seed, self.epochs]

    @property
    def ident(self) -> str:
        """The cache name: the recipe and the package version (`nnmark.bench.cache`)."""
        return model_id(self.scheme, self.recipe)

    @property
    def nonce(self) -> str:
        """The key's nonce: from the recipe alone, so an edit to the code marks the same model
        with the same key and a rerun's verdicts can be compared cell by cell."""
        return content_id(self.recipe) * 2


#: The creation time of every bench key: a key's secrets depend on it, so a fixed time (with
#: the nonce from the job's recipe, `ModelJob.nonce`) makes a rerun of the grid mark the same models.
BENCH_CREATED = "2026-01-01T00:00:00+00:00"


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
        head += "".join(f"|{k}={v}" for k, v in t.optimiser_changes().items())
        if self.attack is None:
            assert self.key_job is not None
            return f"{head}|calibration|{self.key_job.scheme}|s{self.key_job.seed}|u{self.job.seed}"
        return f"{head}|{self.job.scheme}|{self.attack.spec}|s{self.job.seed}"


#: The most cells a grid may have: its results file holds a row for each, and no more than
#: MAX_RESULTS_LINES are read back. Counted before planning (a grid of 1,024 tasks and 1,024-step
#: ladders planned about 4.2 million cells for minutes, with no output; review).
MAX_CELLS = MAX_RESULTS_LINES


def plan(spec: BenchSpec) -> tuple[list[ModelJob], list[ModelJob], list[Cell]]:
    """(marked/plain models, unmarked calibration models, cells) of a grid; a grid of more than
    MAX_CELLS cells is refused before any is planned."""
    n = count_cells(spec)
    if n > MAX_CELLS:
        raise NNMarkError(
            f"the grid has {n:,} cells, more than the {MAX_CELLS:,} a results file holds "
            "(fewer tasks, schemes, attacks or ladder steps)"
        )
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


#: The fields of a grid that only choose which cells it has: each is in the names of the cells
#: it adds (task fields, seed, attack specs, the calibration models' seeds). Every other field
#: (scheme_options, calibration_epochs, ...) may change what a cell of the same name computes.
COVERAGE = (
    "tasks",
    "schemes",
    "attacks",
    "chains",
    "composites",
    "seed",
    "calibration_models",
    "ladders",
    "variants",
    "exclude_schemes",
    "exclude_attacks",
)


#: The most cells of an old grid (read from a results folder's spec.json) planned to compare its
#: rows with a new grid's: a real grid has no more cells than its results file may have rows.
MAX_OLD_CELLS = MAX_RESULTS_LINES


def _inputs(cell: Cell) -> tuple[Any, ...]:
    """What a cell computes from: its model's recipe, its attack, its key's model's recipe (the
    recipes, not the cache names, which also name the package version)."""
    key = cell.key_job.recipe if cell.key_job is not None else None
    return cell.job.recipe, cell.attack.spec if cell.attack else None, key


def changed_cells(old: BenchSpec, new: BenchSpec, names: set[str]) -> list[tuple[Cell, Cell]]:
    """(old, new) of each cell of `names` (the rows a results folder holds) that grid `new`
    computes from other inputs than grid `old` did, though its name is the same: a resume would
    mix the two. Cells only one grid has are no change (a grid extended with more schemes or
    attacks resumes). Each grid's cells are planned under both grids' other fields, so a row
    outside the new grid (one a `--scheme` subset leaves out) is compared as well; `old` is read
    from a results folder (untrusted), so its cells are planned only up to MAX_OLD_CELLS."""
    changed: dict[str, tuple[Cell, Cell]] = {}
    for cover in (new, old):
        chosen = {f: getattr(cover, f) for f in COVERAGE}
        try:
            if cover is old and count_cells(old) > MAX_OLD_CELLS:
                log.warning("the old grid is too large to compare outside the new one")
                continue
            before = {c.ident: c for c in plan(dataclasses.replace(old, **chosen))[2]}
            after = plan(dataclasses.replace(new, **chosen))[2]
        except (NNMarkError, TypeError, ValueError, AttributeError, LookupError, ArithmeticError):
            # old names what this version no longer has (or is not a grid): only the new
            # grid's cells are compared, under the old grid's fields
            if cover is new:
                raise
            continue
        for c in after:
            b = before.get(c.ident)
            if c.ident in names and b is not None and _inputs(b) != _inputs(c):
                changed.setdefault(c.ident, (b, c))
    return list(changed.values())


def count_cells(spec: BenchSpec) -> int:
    """The cells `plan(spec)` makes, counted without making them: per task, each model (the
    plain one, a scheme's, a composite's) under no attack and each attack cell (a ladder's
    steps, or one; three levels per chain), and each marked model's calibration cells."""
    jobs = 1 + len(spec.resolved_schemes()) + len(spec.resolved_composites())
    attacks = 1 + 3 * len(spec.chains)
    for name in [*spec.resolved_attacks(), *spec.resolved_variants()]:
        ladder = spec.ladder(name)
        attacks += 1 if ladder is None else len(ladder[1])
    return len(spec.tasks) * (jobs * attacks + (jobs - 1) * spec.calibration_models)


def split_bits(scheme: str, options: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """(the scheme's options less `bits`, `bits`): a grid may give a mark's length as a scheme
    option (`scheme_options: {uchida: {bits: 256}}`), but `nnmark.api.embed` takes it apart from
    the scheme's config. A composite's options are per part; `embed` gives one `bits` to every
    part, so the parts that set it must agree."""
    if "+" not in scheme:
        rest = {k: v for k, v in options.items() if k != "bits"}
        return rest, options.get("bits")
    parts: dict[str, Any] = {}
    given: set[Any] = set()
    for name, opts in options.items():
        if isinstance(opts, dict) and "bits" in opts:
            given.add(opts["bits"])
            opts = {k: v for k, v in opts.items() if k != "bits"}
        parts[name] = opts
    if len(given) > 1:
        raise NNMarkError(f"{scheme}: its parts give different bits {sorted(given)}; give one")
    return parts, given.pop() if given else None


def unsupported(task: Task, scheme: str, options: dict[str, Any], data: Any = None) -> str | None:
    """Why `scheme` (or a part of composite 'a+b') cannot mark `task`'s model, or None.

    Each scheme states what it supports in one place, its `plan()`: it is asked here on a fresh
    model of the task, and a refusal (NNMarkError) is the reason. Anything that fails before
    the question (a bad option, unreadable data) is not a refusal: None, so training fails and
    its cells record the error, as any failure. `data`: the task's DataBundle, if loaded. A
    grid's `bits` option is asked at that length (a host layer too small for it is a refusal).
    """
    from nnmark.api import new_model
    from nnmark.config import build_config
    from nnmark.data import load_data
    from nnmark.keys import OwnerKey
    from nnmark.schemes import SCHEMES

    if scheme == "none":
        return None
    names = scheme.split("+")
    options, bits = split_bits(scheme, options)
    length = {} if bits is None else {"bits": bits}
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
            cls.plan(model, key, cfg, data=data, **length)
        except NNMarkError as exc:
            return f"{name} does not support {task.data.split(':')[0]}/{task.arch}: {exc}"
    return None


def scheme_kind(scheme: str) -> str | None:
    """'whitebox' | 'blackbox' | 'integrity' of a registered scheme, 'composite', or None."""
    from nnmark.schemes import SCHEMES

    if "+" in scheme:
        return "composite"
    cls = SCHEMES.find(scheme)
    return cls.kind if cls is not None else None
