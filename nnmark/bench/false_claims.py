"""The key-marginal false-claim check: many keys against many never-marked models of several
architectures and training recipes, every scheme, as issued and with `--reference`.

A verdict's false-claim rate must be at most alpha for a random key against any unmarked model
it could meet, not only for the one key a test drew (issue 13). Protocol:

* unmarked models: `models_per` seeds for every architecture and every recipe (two by default:
  Adam at lr 1e-3 for 10 epochs, SGD with momentum at lr 0.05 for 20), trained once and cached;
* keys: `keys` per scheme, planned with nnmark's own classes and never embedded (white-box keys
  per architecture, since they name a host layer; trigger-set keys once). Frontier's keys are
  crafted on a trained CNN of the owner's recipe, and their claims are counted at p < alpha
  alone (the rule under a timestamp before session 29; stricter for a null check than today's,
  which also asks the search-cost bound);
* every key is verified on every unmarked model it can meet; for the schemes that realign to
  the marked model (`Scheme.realigns_to_marked`: stdm) also realigned to the key's own marked
  model (`--reference`, same architecture; each such key is embedded once with the scheme's
  default recipe), and for every white-box scheme realigned to the owner's model before the
  mark (`--reference-unmarked`: the first unmarked model of the architecture, on which the keys
  are planned);
* segmentation keys (segtrigger) on `seg_models` unmarked U-Nets, when segmentation data is given.

Counts: claims at alpha 1e-6 under the full claim rule (`nnmark.api.verify`), claims at p < 1e-6
and at p < 0.05 from the scheme's own test run at that alpha (a sequential test stops at
different looks), each rate with its exact 95 % interval; the p-values for a histogram.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnmark.bench.cache import ModelCache, model_id
from nnmark.errors import NNMarkError
from nnmark.stats import DEFAULT_ALPHA, clopper_pearson

LOOSE_ALPHA = 0.05
CREATED = "2026-01-01T00:00:00+00:00"  # the keys' creation time: the check is reproducible
RECIPES: tuple[dict[str, Any], ...] = (
    {"name": "adam", "epochs": 10, "lr": 1e-3, "optimizer": "adam"},
    {"name": "sgd", "epochs": 20, "lr": 0.05, "optimizer": "sgd", "momentum": 0.9},
)


@dataclass(frozen=True)
class FalseClaimSpec:
    """What the check sweeps (the defaults are issue 13's minimum)."""

    data: str = "digits"
    archs: tuple[str, ...] = ("cnn", "mlp", "resnet20")
    recipes: tuple[dict[str, Any], ...] = RECIPES
    models_per: int = 5  # per architecture and recipe
    keys: int = 10  # per scheme (and per architecture for white-box keys)
    reference_keys: int = 5  # keys per realignable scheme and architecture with --reference
    reference_archs: tuple[str, ...] = ("cnn", "mlp")
    schemes: tuple[str, ...] | None = None  # None: every registered scheme
    seg_data: str | None = None  # e.g. seg:DIR (32 x 32 tiles of it are used)
    seg_models: int = 6
    extra_data: tuple[str, ...] = ()  # data sets keys may draw from (unrelated's source)
    unrelated_source: str | None = None

    def key_nonce(self, *parts: object) -> str:
        return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


@dataclass
class Outcome:
    scheme: str
    mode: str  # "issued" or "reference"
    key: int
    model: str
    p: float
    claim_rule: bool  # found under the full claim rule at alpha 1e-6
    claim_strict: bool  # the scheme's own test at alpha 1e-6 (no cost rule)
    claim_loose: bool  # the scheme's own test at alpha 0.05
    reason: str | None = None


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        rows: dict[str, Any] = {}
        for key in sorted({(o.scheme, o.mode) for o in self.outcomes}):
            group = [o for o in self.outcomes if (o.scheme, o.mode) == key]
            n = len(group)
            loose = sum(o.claim_loose for o in group)
            lo, hi = clopper_pearson(loose, n)
            rows[f"{key[0]} ({key[1]})"] = {
                "scheme": key[0],
                "mode": key[1],
                "pairs": n,
                "keys": len({o.key for o in group}),
                "models": len({o.model for o in group}),
                "claims_rule_1e-6": sum(o.claim_rule for o in group),
                "claims_p_1e-6": sum(o.claim_strict for o in group),
                "claims_0.05": loose,
                "fpr_0.05": loose / n if n else 0.0,
                "fpr_0.05_ci95": [lo, hi],
                "min_p": min((o.p for o in group), default=1.0),
                "meets": sum(o.claim_strict for o in group) == 0 and lo <= LOOSE_ALPHA,
            }
        return rows


# ---- models ---------------------------------------------------------------------------------


def _cache(root: Path, name: str, recipe: Any, make: Callable[[], tuple[nn.Module, Any]]) -> str:
    """Train `make()` (model, data) into root/models unless its recipe is cached; its id."""
    cache = ModelCache(root / "models")
    ident = model_id(name, recipe)
    if not cache.has(ident, keyed=False):
        model, data = make()
        cache.put(ident, model, data, None)
    return ident


def _train_plain(args: tuple[str, str, dict[str, Any], int, str]) -> str:
    """One unmarked model (a worker process): returns its cache id."""
    root, arch, recipe, seed, data_spec = args
    from nnmark.api import new_model, train
    from nnmark.data import load_data
    from nnmark.train import TrainConfig

    torch.set_num_threads(1)
    opts = {k: v for k, v in recipe.items() if k != "name"}

    def make() -> tuple[nn.Module, Any]:
        data = load_data(data_spec)
        model = train(new_model(arch, data, seed=seed), data, TrainConfig(seed=seed, **opts))
        return model, data

    name = f"plain_{arch}_{recipe['name']}_{seed}"
    return _cache(Path(root), name, [arch, recipe, seed, data_spec], make)


def unmarked(spec: FalseClaimSpec, root: Path, jobs: int) -> dict[str, list[tuple[str, nn.Module]]]:
    """Every unmarked model, by architecture: (name, model)."""
    todo = [
        (str(root), arch, recipe, 1000 * (i + 1) + j, spec.data)
        for arch in spec.archs
        for i, recipe in enumerate(spec.recipes)
        for j in range(spec.models_per)
    ]
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            idents = list(pool.map(_train_plain, todo))
    else:
        idents = [_train_plain(t) for t in todo]
    cache = ModelCache(root / "models")
    out: dict[str, list[tuple[str, nn.Module]]] = {a: [] for a in spec.archs}
    for (_, arch, recipe, seed, _data), ident in zip(todo, idents, strict=True):
        out[arch].append((f"plain_{arch}_{recipe['name']}_{seed}", cache.load(ident)[0]))
    return out


# ---- keys and verdicts ------------------------------------------------------------------------


def _options(scheme: str, spec: FalseClaimSpec) -> dict[str, Any]:
    from nnmark.schemes import SCHEMES

    if SCHEMES.get(scheme).needs_source:
        if not spec.unrelated_source:
            raise NNMarkError(f"{scheme} needs a source data set (unrelated_source)")
        return {"source": spec.unrelated_source}
    return {}


def plan_key(
    scheme: str,
    model: nn.Module,
    data: Any,
    spec: FalseClaimSpec,
    *tag: object,
    commit: bool = False,
) -> Any:
    """A key of `scheme` planned on `model` (never embedded), reproducibly; with `commit`, it
    commits to `model` as its unmarked reference, as `embed` would."""
    from nnmark.config import build_config
    from nnmark.io import model_sha256
    from nnmark.keys import OwnerKey
    from nnmark.schemes import SCHEMES

    cls = SCHEMES.get(scheme)
    key = OwnerKey.new("false-claim owner", nonce=spec.key_nonce(scheme, *tag), created=CREATED)
    key = key.with_reference(model_sha256(model)) if commit else key
    config: Any = build_config(cls.Config, _options(scheme, spec))
    return key.with_mark(cls.plan(copy.deepcopy(model), key, config, data=data))


def judge(
    key: Any,
    suspect: Any,
    data: Sequence[Any],
    at_alpha: bool,
) -> tuple[float, bool, bool, bool, str | None]:
    """(p, claim under the rule, claim at p < 1e-6, claim at 0.05) for one key and suspect;
    `at_alpha`: the rule is p < alpha alone (what a timestamp allowed before session 29: a
    null check is stricter with it)."""
    from nnmark.api import bound_scheme, verify

    scheme = bound_scheme(key, 0, data)
    view = suspect.for_mark(key.marks[0])  # a realigned suspect: the view this mark reads
    if view.unreadable is not None:  # refused or not alignable: not_found, with the reason
        return 1.0, False, False, False, view.unreadable
    suspect = view
    strict = scheme.verify(suspect, DEFAULT_ALPHA)
    loose = scheme.verify(suspect, LOOSE_ALPHA)
    if at_alpha:
        rule = strict.positive
    else:
        rule = verify(suspect, key, DEFAULT_ALPHA, data=data).positive
    return strict.p_value, rule, strict.positive, loose.positive, strict.reason


def run_false_claims(
    spec: FalseClaimSpec,
    root: Path,
    *,
    jobs: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """The whole check into `root` (models cached under root/models); returns the outcomes."""
    from nnmark.data import load_data
    from nnmark.schemes import SCHEMES

    say = progress or (lambda _msg: None)
    start = time.time()
    root.mkdir(parents=True, exist_ok=True)
    data = load_data(spec.data)
    ctx = _Context(spec, root, data, [data, *(load_data(s) for s in spec.extra_data)], say)
    models = unmarked(spec, root, jobs)
    say(f"{sum(len(v) for v in models.values())} unmarked models ready")
    report = Report()
    for scheme in spec.schemes or SCHEMES.names():
        cls = SCHEMES.get(scheme)
        if cls.task == "segmentation":
            continue
        _issued(ctx, report, scheme, models)
        if cls.kind == "whitebox" and cls.realigns_to_marked:
            _against_reference(ctx, report, scheme, models)
        if cls.kind == "whitebox":
            _against_twin(ctx, report, scheme, models)
    if spec.seg_data:
        report.outcomes += _segmentation(spec, root)
    report.seconds = round(time.time() - start, 1)
    return report


@dataclass(frozen=True)
class _Context:
    """What every part of one check reads: the spec, the cache, the data, a progress line."""

    spec: FalseClaimSpec
    root: Path
    data: Any
    sources: list[Any]
    say: Callable[[str], None]


Models = dict[str, list[tuple[str, nn.Module]]]


def _issued(ctx: _Context, report: Report, scheme: str, models: Models) -> None:
    """Keys as issued against every never-marked model (of the key's architecture, for a mark
    in the weights); a stitched key is not judged on the model it was crafted on."""
    from nnmark.schemes import SCHEMES
    from nnmark.suspect import ModuleSuspect

    spec = ctx.spec
    cls = SCHEMES.get(scheme)
    per_arch = cls.kind != "blackbox"
    for arch in spec.archs if per_arch else (spec.archs[0],):
        owner_model = models[arch][0][1]
        for i in range(spec.keys):
            try:
                key = plan_key(scheme, owner_model, ctx.data, spec, arch, i)
            except NNMarkError as exc:
                report.notes.append(f"{scheme} on {arch}: cannot plan ({exc})")
                break
            meets = [m for a in spec.archs if not per_arch or a == arch for m in models[a]]
            for name, model in meets:
                if cls.needs_trained and model is owner_model:
                    continue  # the key was crafted on it
                suspect = ModuleSuspect(model, label=name)
                out = judge(key, suspect, ctx.sources, cls.needs_trained)
                report.outcomes.append(Outcome(scheme, "issued", i, name, *out))
        ctx.say(f"{scheme} on {arch}: {sum(o.scheme == scheme for o in report.outcomes)} pairs")


def _against_reference(ctx: _Context, report: Report, scheme: str, models: Models) -> None:
    """`verify --reference`: each never-marked model realigned to the key's own marked model."""
    from nnmark.api import bound_scheme
    from nnmark.defenses.realign import realign_suspect
    from nnmark.suspect import ModuleSuspect

    for arch in ctx.spec.reference_archs:
        for i in range(ctx.spec.reference_keys):
            reference, key = _reference(ctx.root, ctx.spec, scheme, arch, i, ctx.data)
            bound = [bound_scheme(key, 0, ctx.sources)]
            for name, model in models[arch]:
                aligned = realign_suspect(ModuleSuspect(model, label=name), reference, bound)
                # the owner's best case, counted at p < alpha alone
                out = judge(key, aligned, ctx.sources, True)
                report.outcomes.append(Outcome(scheme, "reference", i, name, *out))
        ctx.say(f"{scheme} --reference on {arch}: done")


def _against_twin(ctx: _Context, report: Report, scheme: str, models: Models) -> None:
    """`verify --reference-unmarked`: keys planned on the owner's model before the mark (the
    first never-marked model), every other model realigned to it."""
    from nnmark.api import bound_scheme
    from nnmark.defenses.realign import realign_suspect
    from nnmark.suspect import ModuleSuspect

    spec = ctx.spec
    for arch in spec.reference_archs:
        twin_name, twin = models[arch][0]
        keys = [
            plan_key(scheme, twin, ctx.data, spec, "twin", arch, i, commit=True)
            for i in range(spec.keys)
        ]
        bound = [bound_scheme(keys[0], 0, ctx.sources)]
        for name, model in models[arch][1:]:
            # the alignment does not depend on the key: one realignment serves every key
            s = ModuleSuspect(model, label=name)
            aligned = realign_suspect(s, twin, bound, unmarked=True)
            for i, key in enumerate(keys):
                out = judge(key, aligned, ctx.sources, False)
                report.outcomes.append(Outcome(scheme, "reference-unmarked", i, name, *out))
        ctx.say(f"{scheme} --reference-unmarked on {arch} ({twin_name}): done")


def _reference(
    root: Path, spec: FalseClaimSpec, scheme: str, arch: str, i: int, data: Any
) -> tuple[nn.Module, Any]:
    """The key's own marked model (the scheme's default recipe) and its key, cached."""
    from nnmark.api import embed, new_model
    from nnmark.keys import OwnerKey
    from nnmark.train import TrainConfig

    nonce = spec.key_nonce("reference", scheme, arch, i)

    def make() -> tuple[nn.Module, Any, Any]:
        key = OwnerKey.new("reference owner", nonce=nonce, created=CREATED)
        net = new_model(arch, data, seed=7 + i)
        marked, key = embed(net, data, scheme, key=key, config=TrainConfig(seed=7 + i))
        return marked, key, data

    recipe = [scheme, arch, i, nonce, data.name, "commits its marked model"]
    return ModelCache(root / "models").get(f"reference_{scheme}_{arch}_{i}", recipe, make, True)


def _segmentation(spec: FalseClaimSpec, root: Path) -> list[Outcome]:
    import torch.nn.functional as F

    from nnmark.api import new_model, train
    from nnmark.data import load_data
    from nnmark.data.base import DataBundle
    from nnmark.suspect import ModuleSuspect
    from nnmark.train import TrainConfig

    assert spec.seg_data is not None
    full = load_data(spec.seg_data)
    seg = DataBundle(
        "seg32",
        "segmentation",
        F.avg_pool2d(full.x, 4),
        (F.avg_pool2d(full.y, 4) > 0.5).float(),
        full.splits,
        1,
    )
    out: list[Outcome] = []
    nets = []
    for s in range(spec.seg_models):
        cfg = TrainConfig(epochs=20, seed=s, lr=3e-3, batch_size=16)

        def make(s: int = s, cfg: TrainConfig = cfg) -> tuple[nn.Module, Any]:
            return train(new_model("unet", seg, seed=s, width=8), seg, cfg), seg

        ident = _cache(root, f"unet_{s}", [spec.seg_data, "unet8", s, repr(cfg)], make)
        nets.append((f"unet_{s}", ModelCache(root / "models").load(ident)[0]))
    for i in range(spec.keys):
        key = plan_key("segtrigger", nets[0][1], seg, spec, "seg", i)
        for name, model in nets:
            r = judge(key, ModuleSuspect(model, label=name), [seg], False)
            out.append(Outcome("segtrigger", "issued", i, name, *r))
    return out


# ---- rendering ---------------------------------------------------------------------------------


def write_outputs(
    report: Report, out: Path, command: str, machine: dict[str, Any], name: str = "false_claims"
) -> None:
    """NAME.json, NAME.md and NAME.png (p-value histograms) in `out`."""
    from nnmark.io import atomic_write_text

    summary = report.summary()
    doc = {
        "command": command,
        "machine": machine,
        "seconds": report.seconds,
        "notes": report.notes,
        "summary": summary,
        "outcomes": [dataclasses.asdict(o) for o in report.outcomes],
    }
    atomic_write_text(out / f"{name}.json", json.dumps(doc, indent=1) + "\n")
    atomic_write_text(
        out / f"{name}.md", render_markdown(summary, report.notes, command, machine, name)
    )
    _histograms(report, out / f"{name}.png")


def render_markdown(
    summary: dict[str, Any],
    notes: list[str],
    command: str,
    machine: dict[str, Any],
    name: str = "false_claims",
) -> str:
    lines = [
        "# False claims over keys, architectures and recipes",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine.get('cpu')}, {machine.get('cpu_count')} cores, torch {machine.get('torch')}",
        "",
        "Claims of never-marked models: under the full claim rule at alpha 1e-6 (`rule`), at "
        "p < 1e-6 without the cost rule, and at alpha 0.05 with its exact 95 % interval. "
        "A row meets the requirement when it has 0 claims at 1e-6 and the interval at 0.05 "
        "reaches 0.05 or lies below it.",
        "",
        "| scheme | mode | keys | models | pairs | rule 1e-6 | p < 1e-6 | at 0.05 | FPR 0.05 [95 % CI] | min p | meets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary.values():
        lo, hi = row["fpr_0.05_ci95"]
        lines.append(
            f"| {row['scheme']} | {row['mode']} | {row['keys']} | {row['models']} | "
            f"{row['pairs']} | {row['claims_rule_1e-6']} | {row['claims_p_1e-6']} | "
            f"{row['claims_0.05']} | {row['fpr_0.05']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{row['min_p']:.2g} | {'yes' if row['meets'] else 'NO'} |"
        )
    if notes:
        lines += ["", "Notes:", *(f"- {n}" for n in notes)]
    lines += ["", f"![p-values of never-marked models, per scheme]({name}.png)", ""]
    return "\n".join(lines)


def _histograms(report: Report, path: Path) -> None:
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(o.scheme, o.mode) for o in report.outcomes})
    if not groups:
        return
    cols = 4
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (scheme, mode) in zip(axes.flat, groups):
        ps = [o.p for o in report.outcomes if (o.scheme, o.mode) == (scheme, mode)]
        ax.hist(ps, bins=20, range=(0, 1), color="#4477aa")
        ax.axvline(LOOSE_ALPHA, color="#cc3311", lw=1)
        ax.set_title(f"{scheme} ({mode}), n={len(ps)}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups) :]:
        ax.axis("off")
    fig.suptitle("p-values of never-marked models (uniform or above: the null holds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
