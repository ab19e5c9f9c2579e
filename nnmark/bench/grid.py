"""What a benchmark sweeps: tasks x (schemes, composites, none) x attacks at three strengths.

A grid is a frozen `BenchSpec`; `PRESETS` reads the shipped ones from presets/*.json and
`load_spec` reads a YAML (or JSON) file of the same fields. Schemes and attacks default to *every registered one*,
so a new scheme or attack file is benchmarked with no edit here.

>>> spec = BenchSpec.from_dict({"schemes": ["uchida"], "attacks": ["prune"], "chains": []})
>>> [c.spec for c in spec.attack_cells()]
['prune:fraction=0.3', 'prune:fraction=0.6', 'prune:fraction=0.9']
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nnmark.attacks import ATTACKS
from nnmark.config import MAX_EPOCHS, MAX_SEED
from nnmark.data import SHARED_DATA as _SHARED_DATA
from nnmark.errors import NNMarkError
from nnmark.keys import MAX_CALIBRATION_MODELS

#: The presets' data beyond digits (`nnmark.data.SHARED_DATA`); a bench config (`--config`)
#: points at any other copy.
SHARED_DATA = _SHARED_DATA

#: Three strengths (weak, medium, strong) for the attacks that declare a ladder
#: (`Attack.ladder`); the others run once with their defaults (`{}`); a grid's `ladders`
#: overrides these.
LADDERS: dict[str, tuple[str, tuple[float, ...]]] = {
    name: ladder for name in ATTACKS if (ladder := ATTACKS.get(name).ladder) is not None
}
INTEGER_OPTIONS = ("epochs", "bits")

#: More ladders for one attack than its single strength option: a family name -> (the registered
#: attack, its fixed options, the option its ladder varies and three values). Fine-tuning is the
#: removal every paper measures, and a thief picks the optimiser and the rate: the attack's own
#: ladder varies epochs (Adam 1e-3); these sweep the rate with SGD (momentum 0.9) and with Adam
#: (1e-3 is the attack's own ladder).
VARIANTS: dict[str, tuple[str, dict[str, Any], str, tuple[float, ...]]] = {
    "finetune-sgd": ("finetune", {"optimizer": "sgd", "epochs": 10}, "lr", (0.001, 0.01, 0.05)),
    "finetune-lr": ("finetune", {"epochs": 10}, "lr", (1e-4, 3e-3, 1e-2)),
}


#: The longest name or sentence a grid's lists hold, and the most entries of any list or map.
MAX_TEXT = 4096
MAX_ENTRIES = 1024
#: The most bytes a --config file holds (a full grid is a few KB).
MAX_CONFIG_BYTES = 256 * 1024
_LISTS = (
    "schemes",
    "attacks",
    "chains",
    "composites",
    "variants",
    "exclude_schemes",
    "exclude_attacks",
    "about",
)


def _check_shapes(spec: Any) -> None:
    """Every list a list of short strings, every map of the shape its field says: `about: 5`
    ran the sweep and failed every report after it; `ladders: {prune: 5}` was a traceback
    (review, session 36)."""
    for name in _LISTS:
        value = getattr(spec, name)
        if isinstance(value, list):  # BenchSpec(schemes=[...]) from Python, as YAML gives
            object.__setattr__(spec, name, value := tuple(value))
        if (
            not isinstance(value, tuple)
            or len(value) > MAX_ENTRIES
            or not all(isinstance(v, str) and len(v) <= MAX_TEXT for v in value)
        ):
            raise NNMarkError(f"{name} must be a list of names (strings), got {value!r:.80}")
    for name, inner in (("ladders", "list"), ("scheme_options", "map"), ("attack_options", "map")):
        value = getattr(spec, name)
        ok = isinstance(value, dict) and len(value) <= MAX_ENTRIES
        for key, sub in value.items() if ok else ():
            ok = ok and isinstance(key, str) and isinstance(sub, dict) and len(sub) <= MAX_ENTRIES
            for k, v in sub.items() if ok else ():
                # None: an option whose config takes None (layer, lam) left to its default
                scalar = v is None or isinstance(v, str | bool | int | float)
                scalar = scalar and len(str(v)) <= MAX_TEXT
                strengths = isinstance(v, list | tuple) and 1 <= len(v) <= MAX_ENTRIES
                strengths = strengths and all(
                    isinstance(x, int | float) and not isinstance(x, bool) for x in v
                )
                ok = ok and isinstance(k, str) and (strengths if inner == "list" else scalar)
            # a ladder turns one option up
            ok = ok and (inner != "list" or all(len(sub) == 1 for sub in value.values()))
        if not ok:
            shape = (
                "{attack: {option: [strengths]}}" if inner == "list" else "{name: {option: value}}"
            )
            raise NNMarkError(f"{name} must be a mapping {shape}, got {value!r:.80}")
    for chain in spec.chains:
        if not [p for p in chain.split("+") if p.strip()]:
            raise NNMarkError(f"chains: {chain!r:.80} names no attack (a+b: attacks joined by +)")


def _count(value: Any, low: int, high: int) -> bool:
    """An integer (not a bool, not a float) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class Task:
    """One data set and architecture, and the CPU protocol its models are trained under."""

    data: str = "digits"
    arch: str = "cnn"
    epochs: int = 10
    fraction: float = 1.0  # share of the training split used (a stated data subset)
    batch_size: int = 64
    lr: float = 1e-3
    # share of the test split fidelity is measured on (a seeded leading subset): on a CPU,
    # evaluating 10,000 MNIST images costs more than most attacks; the models do not change.
    test_fraction: float = 1.0
    # the owner's optimiser (TrainConfig's; the papers' CIFAR models train with SGD); a task
    # that keeps these defaults has the recipe, cache names and cells it had before they existed
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("data", "arch"):  # `data: 5` was an AttributeError (review, session 36)
            value = getattr(self, name)
            if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
                raise NNMarkError(f"bad task: {name} must be a name (a string), got {value!r:.80}")
        if (
            not _count(self.epochs, 0, MAX_EPOCHS)
            or not _count(self.batch_size, 1, 1 << 16)
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool)
                for v in (
                    self.fraction,
                    self.test_fraction,
                    self.lr,
                    self.momentum,
                    self.weight_decay,
                )
            )
            or not 0 < self.fraction <= 1
            or not 0 < self.test_fraction <= 1
            or not 0 < self.lr < math.inf
            or self.optimizer not in ("adam", "sgd")
            or not 0 <= self.momentum < 1
            or not 0 <= self.weight_decay < 1
        ):
            raise NNMarkError(
                f"bad task {self}: integer 0 <= epochs <= {MAX_EPOCHS}, 0 < fraction <= 1, "
                "0 < test_fraction <= 1, integer 1 <= batch_size <= 65536, finite lr > 0, "
                "optimizer adam or sgd, 0 <= momentum < 1, 0 <= weight_decay < 1"
            )

    def optimiser_changes(self) -> dict[str, Any]:
        """The optimiser fields set away from their defaults (only these enter recipes, cache
        names and cell names, so adding the fields renamed no earlier model or cell)."""
        defaults = Task()
        return {
            k: getattr(self, k)
            for k in OPTIMISER_FIELDS
            if getattr(self, k) != getattr(defaults, k)
        }

    @property
    def label(self) -> str:
        frac = "" if self.fraction == 1 else f",fraction={self.fraction}"
        frac += "" if self.test_fraction == 1 else f",test_fraction={self.test_fraction}"
        frac += "".join(f",{k}={v}" for k, v in self.optimiser_changes().items())
        return f"{self.data}/{self.arch}(epochs={self.epochs}{frac})"


OPTIMISER_FIELDS = ("optimizer", "momentum", "weight_decay")


@dataclass(frozen=True)
class AttackCell:
    """One attack spec of the grid and where it sits on its ladder."""

    family: str  # attack name, or "a+b" for a chain
    spec: str  # what nnmark.api.attack receives
    option: str | None = None
    strength: float | None = None
    level: int | None = None


@dataclass(frozen=True)
class BenchSpec:
    """A grid: tasks, schemes (empty: all registered), attacks (empty: all), chains, composites.

    `chains` are attack names joined by '+': each runs at the three ladder levels of its parts.
    `variants` are more ladders of one attack (`VARIANTS`), run when that attack is in the grid.
    `composites` are scheme names joined by '+' (one key, several marks, one Fisher verdict);
    "auto" pairs one white-box with one black-box scheme from the registry.
    """

    tasks: tuple[Task, ...] = (Task(),)
    schemes: tuple[str, ...] = ()
    attacks: tuple[str, ...] = ()
    chains: tuple[str, ...] = ("prune+finetune",)
    composites: tuple[str, ...] = ("auto",)
    seed: int = 0
    budget: float = 0.05  # fidelity an attacker may lose (WRT's success criterion), 0.05 = 5 pts
    calibration_models: int = 4  # unmarked models per task verified with every key
    calibration_epochs: int | None = None  # default: the task's epochs
    ladders: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    variants: tuple[str, ...] = tuple(VARIANTS)
    scheme_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclude_schemes: tuple[str, ...] = ()
    exclude_attacks: tuple[str, ...] = ()
    about: tuple[str, ...] = ()  # why the grid is what it is, in words (shown in the report)

    def __post_init__(self) -> None:
        if not self.tasks:
            raise NNMarkError("a bench grid needs at least one task")
        _check_shapes(self)
        if not 0 <= self.budget <= 1:
            raise NNMarkError(f"budget must be in [0, 1] (a fidelity fraction), got {self.budget}")
        if not _count(self.calibration_models, 0, MAX_CALIBRATION_MODELS):
            raise NNMarkError(
                f"calibration_models must be an integer in [0, {MAX_CALIBRATION_MODELS}], got "
                f"{self.calibration_models!r}"
            )
        if self.calibration_epochs is not None and not _count(
            self.calibration_epochs, 0, MAX_EPOCHS
        ):
            raise NNMarkError(
                f"calibration_epochs must be an integer in [0, {MAX_EPOCHS}], got "
                f"{self.calibration_epochs!r}"
            )
        if not _count(self.seed, 0, MAX_SEED):
            raise NNMarkError(f"seed must be an integer in [0, {MAX_SEED}], got {self.seed!r}")
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise NNMarkError(
                f"unknown attack variant(s) {', '.join(unknown)} (known: {', '.join(VARIANTS)})"
            )

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> BenchSpec:
        """A spec from a YAML/JSON mapping; `data`/`arch`/`epochs` at the top make one task."""
        doc = dict(doc or {})
        task_keys = {f.name for f in dataclasses.fields(Task)}
        top = {k: doc.pop(k) for k in list(doc) if k in task_keys}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise NNMarkError(
                f"unknown bench option(s) {', '.join(unknown)} (known: "
                f"{', '.join(sorted(known | task_keys))})"
            )
        tasks = doc.pop("tasks", None)
        if tasks is not None and top:
            raise NNMarkError("give either 'tasks' or top-level data/arch/epochs, not both")
        try:
            task_list = [Task(**t) for t in tasks] if tasks is not None else [Task(**top)]
        except TypeError as exc:
            raise NNMarkError(f"bad task: {exc}") from None
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items()}
        try:
            return cls(tasks=tuple(task_list), **fields)
        except TypeError as exc:
            raise NNMarkError(f"bad bench config: {exc}") from None

    def resolved_schemes(self) -> list[str]:
        """The single-mark schemes of the grid: the given ones, or every registered one."""
        from nnmark.schemes import SCHEMES

        names = list(self.schemes) or SCHEMES.names()
        for n in names:
            SCHEMES.get(n)  # unknown names fail here, before anything is trained
        return [n for n in names if n not in self.exclude_schemes]

    def resolved_composites(self) -> list[str]:
        """The composite marks: 'auto' becomes one white-box + one black-box scheme."""
        from nnmark.schemes import SCHEMES

        out = []
        for c in self.composites:
            if c == "auto":
                pool = self.resolved_schemes()
                white = [n for n in pool if SCHEMES.get(n).kind == "whitebox"]
                black = [n for n in pool if SCHEMES.get(n).kind == "blackbox"]
                if white and black:
                    # Uchida and content are the seeds' reference marks; otherwise the first.
                    w = "uchida" if "uchida" in white else white[0]
                    b = "content" if "content" in black else black[0]
                    out.append(f"{w}+{b}")
                continue
            for part in c.split("+"):
                SCHEMES.get(part)
            out.append(c)
        return list(dict.fromkeys(out))

    def resolved_attacks(self) -> list[str]:
        from nnmark.attacks import ATTACKS

        names = list(self.attacks) or ATTACKS.names()
        for n in names:
            ATTACKS.get(n)
        return [n for n in names if n not in self.exclude_attacks]

    def resolved_variants(self) -> list[str]:
        """The grid's variants whose attack is in the grid."""
        attacks = set(self.resolved_attacks())
        return [v for v in self.variants if VARIANTS[v][0] in attacks]

    def check_options(self) -> None:
        """Refuse, before anything trains, a `scheme_options` or `attack_options` entry its
        scheme's or attack's config does not take (a typo once trained the whole grid and
        failed every cell of that scheme): one NNMarkError line naming the entry. A scheme's
        options are its whole config (less a grid's `bits`), so they are built as training
        would; an attack's are completed by each cell's strength, so only their names and types
        are checked (a bad strength is that cell's failure). A variant's options are its
        attack's (`VARIANTS`)."""
        from nnmark.config import build_config, check_options
        from nnmark.schemes import SCHEMES

        for where, table in (
            ("scheme_options", self.scheme_options),
            ("attack_options", self.attack_options),
        ):
            if not isinstance(table, dict):
                raise NNMarkError(f"{where} must be a mapping of names to options")
            for name, opts in table.items():
                if not isinstance(opts, dict):
                    raise NNMarkError(f"{where} of {name}: a mapping of option: value")
                try:
                    if where == "scheme_options":
                        cls = SCHEMES.get(name).Config
                        build_config(cls, {k: v for k, v in opts.items() if k != "bits"})
                    else:
                        base = VARIANTS[name][0] if name in VARIANTS else name
                        check_options(ATTACKS.get(base).Config, opts)
                except NNMarkError as exc:
                    raise NNMarkError(f"{where} of {name}: {exc}") from None

    def ladder(self, name: str) -> tuple[str, tuple[float, ...]] | None:
        """(option, three values) for attack `name`, or None when it has no strength ladder."""
        if name in self.ladders:
            ((opt, values),) = self.ladders[name].items()
            return opt, tuple(values)
        if name in VARIANTS:
            return VARIANTS[name][2], VARIANTS[name][3]
        return LADDERS.get(name)

    def _step(self, name: str, level: int | None) -> tuple[str, str | None, float | None]:
        base, fixed = (VARIANTS[name][0], VARIANTS[name][1]) if name in VARIANTS else (name, {})
        opts = {**self.attack_options.get(base, {}), **fixed, **self.attack_options.get(name, {})}
        lad = self.ladder(name)
        option = value = None
        if lad is not None and level is not None:
            option, values = lad
            value = values[min(level, len(values) - 1)]
            opts[option] = int(value) if option in INTEGER_OPTIONS else value
        body = ",".join(f"{k}={v}" for k, v in opts.items())
        return base + (f":{body}" if body else ""), option, value

    def attack_cells(self) -> list[AttackCell]:
        """Every attack at each of its ladder's strengths (or once), the variants, the chains."""
        cells = []
        for name in [*self.resolved_attacks(), *self.resolved_variants()]:
            lad = self.ladder(name)
            if lad is None:
                cells.append(AttackCell(name, self._step(name, None)[0]))
                continue
            for level in range(len(lad[1])):
                spec, option, value = self._step(name, level)
                cells.append(AttackCell(name, spec, option, value, level))
        for chain in self.chains:
            parts = [p.strip() for p in chain.split("+") if p.strip()]
            for level in range(3):
                steps = [self._step(p, level) for p in parts]
                first = steps[0]
                cells.append(
                    AttackCell(chain, ",".join(s for s, _, _ in steps), first[1], first[2], level)
                )
        return cells

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_spec(path: Path) -> BenchSpec:
    """Read a grid from a YAML (or JSON) file; a bad file raises one NNMarkError line."""
    try:
        import yaml
    except ImportError:
        raise NNMarkError("--config needs pyyaml: pip install 'nnmark[report]'") from None
    if not path.is_file():
        raise NNMarkError(f"config file not found: {path}")
    with path.open("rb") as fh:  # at most one byte past the bound, whatever stat said
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise NNMarkError(f"{path}: more than {MAX_CONFIG_BYTES:,} bytes is not a bench grid")

    class NoAliases(yaml.SafeLoader):
        """A 566-byte file of nested aliases grew past 2.8 GB when the grid was copied (review,
        session 36): a grid has no use for them."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, "aliases (*name) are not read in a bench config", None
                )
            return super().compose_node(parent, index)

    try:
        doc = yaml.load(raw.decode(errors="replace"), Loader=NoAliases)  # a SafeLoader
    except yaml.YAMLError as exc:
        raise NNMarkError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (RecursionError, ValueError) as exc:  # nested 20,000 deep; an integer of 5,000 digits
        raise NNMarkError(f"{path}: not a bench grid ({type(exc).__name__})") from None
    if not doc:
        raise NNMarkError(
            f"{path}: the config is empty: give the grid's fields (docs/bench.md, examples/"
            "bench.yaml), or use --preset quick for the shipped grid"
        )
    if not isinstance(doc, dict):
        raise NNMarkError(f"{path}: a bench config is a mapping of options")
    return BenchSpec.from_dict(doc)


#: The shipped grids: one spec file per preset in nnmark/bench/presets/ (`<name>.json`, the same
#: fields as a `--config` file, with `about` saying why each choice), read once at import;
#: `{shared_data}` in a string stands for SHARED_DATA.
PRESET_DIR = Path(__file__).resolve().parent / "presets"


def load_preset(path: Path) -> BenchSpec:
    """A preset's spec file (JSON: read without the report extra's YAML parser)."""
    import json

    text = path.read_text().replace("{shared_data}", SHARED_DATA.as_posix())
    return BenchSpec.from_dict(json.loads(text))


PRESETS: dict[str, BenchSpec] = {p.stem: load_preset(p) for p in sorted(PRESET_DIR.glob("*.json"))}
