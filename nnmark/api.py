"""The library functions behind the CLI verbs: `train`, `embed`, `attack`, `verify`."""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nnmark.attacks import build_attack
from nnmark.config import build_config, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.device import device_of, exact_fp32, resolve_device, seeded
from nnmark.errors import NNMarkError
from nnmark.io import ModelInfo, model_sha256
from nnmark.keys import MAX_BITS, OwnerKey
from nnmark.models import create_model
from nnmark.schemes import SCHEMES, Scheme, scheme_for
from nnmark.stats import DEFAULT_ALPHA, bonferroni_combine, decide, fisher_combine
from nnmark.suspect import Suspect, arch_mismatch, as_suspect
from nnmark.train import Precision, ProgressFn, TrainConfig, fit
from nnmark.verdict import Verdict

log = logging.getLogger(__name__)


def new_model(arch: str, data: DataBundle, *, seed: int | None = None, **kwargs: Any) -> nn.Module:
    """A fresh zoo model sized for `data` (channels, classes, input size).

    With `seed`, the initial weights depend on that seed alone (not on the global RNG state).
    """
    kwargs = {**data.model_kwargs(), **kwargs}
    if seed is None:
        return create_model(arch, **kwargs)
    with seeded(seed):
        return create_model(arch, **kwargs)


def model_info(model: nn.Module, data: DataBundle) -> ModelInfo:
    """The metadata a model file needs to rebuild `model` (a zoo model) with no pickle."""
    arch = getattr(model, "nnmark_arch", None)
    if arch is None:
        raise ValueError("model was not built by nnmark.models.create_model")
    return ModelInfo(
        arch=arch,
        arch_kwargs=dict(model.nnmark_kwargs),
        task=data.task,
        input_shape=data.input_shape,
        num_classes=int(model.nnmark_kwargs.get("num_classes", data.num_classes)),
    )


def train(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    progress: ProgressFn | None = None,
    device: torch.device | str | None = None,
    amp: Precision | None = None,
    workers: int = 0,
) -> nn.Module:
    """Train without a mark (the plain reference model). Returns a trained copy, on `device`
    (default: where `model` is; "auto": a GPU when present), in mixed precision with `amp`,
    fed by `workers` DataLoader processes. With `teacher`, distilled from its outputs: no label
    is read."""
    model = copy.deepcopy(model)
    return fit(
        model,
        data,
        (),
        config,
        teacher=teacher,
        progress=progress,
        device=device,
        amp=amp,
        workers=workers,
    )


#: What `embed` takes as the scheme: a registered name ("uchida", "uchida+content"), a scheme
#: class (`Uchida`), a config instance (`UchidaConfig(lam=0.1)`: the scheme its type belongs to,
#: with those options), or a list of them (a composite mark).
SchemeSpec = str | type[Scheme] | Any


def embed(
    model: nn.Module,
    data: DataBundle,
    scheme: SchemeSpec,
    *,
    options: dict[str, Any] | None = None,
    key: OwnerKey | None = None,
    owner: str = "owner",
    bits: int | None = None,
    payload: Sequence[int] | None = None,
    config: TrainConfig | None = None,
    teacher: nn.Module | None = None,
    progress: ProgressFn | None = None,
    message: str | None = None,
    device: torch.device | str | None = None,
    amp: Precision | None = None,
    workers: int = 0,
    reference: nn.Module | None = None,
    plain: TrainConfig | None = None,
) -> tuple[nn.Module, OwnerKey]:
    """Embed a mark while training `model` (a copy): train-, fine-tune- or distill-to-embed.

    A fresh model is train-to-embed; a trained one is fine-tune-to-embed; with `teacher` no label
    is read (distill-to-embed). The mark is added to `key` (a new key for `owner` if None).
    `scheme` may name several schemes, "uchida+content": all are embedded in one training (a
    composite mark, verified together). With `message`, the payload is that text as a BCH
    codeword repeated to fill the mark's bits (`bits`, default 255; tartaglione / watermas: one
    per marked entry; Scheme.encode_payload, nnmark.ecc); `verify` reports the decoded text.
    It trains on `device` (default: where `model` is), in mixed precision with `amp` ("bf16",
    "fp16"; the penalties stay fp32); the key does not depend on the device (a model marked on a
    GPU verifies on a CPU). With `reference` (a model that never saw the key; for fine-tune-to-
    embed, `model` itself, as `nnmark embed` passes), a new key commits to it before its first
    secret (OwnerKey.with_reference): the one model `verify --reference-unmarked` realigns to.
    Without it nothing is committed, and the key's marks cannot be realigned. `config` None
    trains `TrainConfig()`; `nnmark embed` marks a trained model at `default_recipe(scheme,
    finetune=True)` (tartaglione: 4 epochs): pass that to match it.

    With `plain`, `model` is first trained at that recipe without any mark (from `teacher`'s
    outputs where given: still no label read), and the result is marked at `config`. That is
    how a scheme whose paper marks a trained model (`scheme_situation` "finetune": tartaglione,
    frontier; a composite with one such part) is distilled into a fresh student, as `nnmark
    embed --distill` does: `plain, config = distill_recipes(scheme)`. `progress` counts the two
    phases as one run of `plain.epochs + config.epochs` epochs. The plain student is not
    committed as the key's reference: it is not returned, so no verifier could be handed it,
    and a committed reference triples every white-box p-value (`_looks`). To commit it, train
    it yourself (`train(model, data, plain, teacher=teacher)`) and pass it as `model` and
    `reference`: its SHA-256 then enters every secret, as fine-tune-to-embed's starting model.

    >>> from nnmark.data import load_data
    >>> data = load_data("digits")
    >>> marked, key = embed(new_model("cnn", data), data, "uchida", bits=32,
    ...                     config=TrainConfig(epochs=2))
    >>> verify(marked, key).verdict
    'found'
    """
    if bits is not None and not (isinstance(bits, int) and 1 <= bits <= MAX_BITS):
        raise NNMarkError(f"bits must be an integer from 1 to {MAX_BITS}, got {bits!r}")
    key = key or OwnerKey.new(owner)
    if not key.marks and key.arch is None:
        key = _with_arch(key, model)
    if reference is not None and plain is not None:
        # the marks go into the plain-trained student, not into `model`: a reference of `model`
        # (untrained) would be the wrong model to realign suspects to
        raise NNMarkError("a reference is the model the mark starts from: not with plain=")
    if reference is not None:
        digest = model_sha256(reference)
        if key.marks and key.reference != digest:
            raise NNMarkError(
                "a reference model is committed before a key's first mark: this key has marks "
                "and commits to another reference (or none)"
            )
        key = key if key.marks else key.with_reference(digest)
    resolved = resolve_schemes(scheme, options)
    names = ", ".join(cls.name for cls, _ in resolved)
    # taken and ignored before (usability review, session 38)
    if bits is not None and not any(cls.takes_bits for cls, _ in resolved):
        raise NNMarkError(f"bits are a payload's length; {names} carries no payload")
    if message is not None and all(cls.kind != "whitebox" for cls, _ in resolved):
        raise NNMarkError(f"a message is a white-box mark's payload; {names} carries none")
    model = copy.deepcopy(model)
    mark_progress = progress
    if plain is not None:
        # a mark too short to ever be found is refused before the plain phase, not after it;
        # a mark made from the trained model's behaviour (frontier) is planned only from it
        early = [(cls, cfg) for cls, cfg in resolved if not cls.needs_trained]
        _plan_marks(model, data, key, early, bits=bits, payload=payload, message=message)
        total = plain.epochs + (config or TrainConfig()).epochs
        mark_progress = _counted(progress, plain.epochs, total)
        model = fit(
            model,
            data,
            (),
            plain,
            teacher=teacher,
            progress=_counted(progress, 0, total),
            device=device,
            amp=amp,
            workers=workers,
        )
    key, bound = _plan_marks(
        model, data, key, resolved, bits=bits, payload=payload, message=message
    )
    for b in bound:
        warn_unreachable(b)
    model = fit(
        model,
        data,
        bound,
        config,
        teacher=teacher,
        progress=mark_progress,
        device=device,
        amp=amp,
        workers=workers,
    )
    realigning = [b.mark.index for b in bound if b.realigns_to_marked]
    if realigning:  # verify --reference MARKED realigns only to this model (realign.py)
        key = key.with_stored(realigning, "marked_sha256", model_sha256(model))
    return model, key


def _plan_marks(
    model: nn.Module,
    data: DataBundle,
    key: OwnerKey,
    resolved: list[tuple[type[Scheme], Any]],
    *,
    bits: int | None,
    payload: Sequence[int] | None,
    message: str | None,
) -> tuple[OwnerKey, list[Scheme]]:
    """`key` with a mark of each scheme in `model` planned, and the bound schemes that embed
    them; a mark that can never be found is refused (check_reachable)."""
    bound = []
    for cls, cfg in resolved:
        ecc = None
        chosen = tuple(payload) if payload else None
        if message is not None and cls.kind == "whitebox":
            chosen, ecc = cls.encode_payload(message, model, cfg, bits=bits, data=data)
        mark = cls.plan(model, key, cfg, bits=bits, payload=chosen, data=data)
        if ecc is not None:
            mark = dataclasses.replace(mark, message=message, data={**mark.data, "ecc": ecc})
        check_reachable(mark, cls)
        key = key.with_mark(mark)
        bound.append(cls(mark, [data, *cls.config_data(cfg)]))
    return key, bound


def _counted(progress: ProgressFn | None, before: int, total: int) -> ProgressFn | None:
    """`progress` for one phase of a run of `total` epochs, `before` of them done already."""
    if progress is None:
        return None
    return lambda epoch, _, loss: progress(before + epoch, total, loss)


def scheme_situation(
    scheme: SchemeSpec, options: dict[str, Any] | None = None
) -> Literal["train", "finetune"]:
    """How `scheme` is embedded by default (Scheme.situation): "finetune" (it marks a trained
    model) when any part of a composite does, else "train" (from scratch). The bench marks a
    "finetune" scheme into the task's trained plain model; `distill_recipes` distils a plain
    student first."""
    parts = [cls for cls, _ in resolve_schemes(scheme, options)]
    return "finetune" if any(c.situation == "finetune" for c in parts) else "train"


def distill_recipes(
    scheme: SchemeSpec, options: dict[str, Any] | None = None
) -> tuple[TrainConfig | None, TrainConfig]:
    """(plain, config): how distill-to-embed trains a fresh student with `scheme`, the recipe
    `nnmark embed --distill` uses, for `embed(..., teacher=, plain=, config=)`. A scheme that
    marks from scratch is distilled with its mark at the default recipe (plain None); one that
    marks a trained model (`scheme_situation` "finetune") has a plain student distilled first
    at the default recipe, then marked at its fine-tune recipe (tartaglione: 4 epochs at R = 4,
    not 20 from scratch, which costs accuracy: benchmarks/results/landscape_robustness.md).

    >>> plain, config = distill_recipes("tartaglione")
    >>> plain.epochs, config.epochs
    (20, 4)
    >>> distill_recipes("uchida")[0] is None
    True
    """
    if scheme_situation(scheme, options) == "train":
        return None, default_recipe(scheme, options=options)
    return TrainConfig(), default_recipe(scheme, finetune=True, options=options)


def default_recipe(
    scheme: SchemeSpec | None, *, finetune: bool = False, options: dict[str, Any] | None = None
) -> TrainConfig:
    """The library's recipe for `scheme` (None or "none": no mark): TrainConfig's defaults; to
    mark a trained model (`finetune`), as many epochs as the scheme's own recipe asks
    (Scheme.finetune_epochs), the longest of a composite's parts. The recipe every scheme is
    tested at, and the one `nnmark train` / `nnmark embed` use unless told otherwise."""
    base = TrainConfig()
    if scheme is None or scheme == "none" or not finetune:
        return base
    classes = [cls for cls, _ in resolve_schemes(scheme, options)]
    epochs = max(base.epochs if c.finetune_epochs is None else c.finetune_epochs for c in classes)
    return dataclasses.replace(base, epochs=epochs)


def _with_arch(key: OwnerKey, model: nn.Module) -> OwnerKey:
    """`key` committed to the architecture its white-box marks will live in: a zoo model's name
    and kwargs, any other module's tensor names (OwnerKey.with_module)."""
    arch = getattr(model, "nnmark_arch", None)
    if arch is not None:
        return key.with_arch(arch, dict(model.nnmark_kwargs))
    try:
        return key.with_module(model)
    except NNMarkError as exc:  # e.g. over MAX_ARCH_TENSORS tensors: mark it all the same
        log.warning("the key commits to no architecture: %s", exc)
        return key


def resolve_schemes(
    scheme: SchemeSpec, options: dict[str, Any] | None = None
) -> list[tuple[type[Scheme], Any]]:
    """(scheme class, built config) per mark of `scheme` (see SchemeSpec). `options` apply to a
    name or a class ({scheme: {option: value}} for several); a config instance is complete."""
    if isinstance(scheme, str):
        parts: list[Any] = [n.strip() for n in scheme.split("+") if n.strip()]
    elif isinstance(scheme, list | tuple):
        parts = list(scheme)
    else:
        parts = [scheme]
    if not parts:
        raise NNMarkError("no scheme given")
    several = len(parts) > 1
    if several and options and not all(isinstance(v, dict) for v in options.values()):
        raise NNMarkError("with several schemes ('a+b'), options are {scheme: {option: value}}")
    out: list[tuple[type[Scheme], Any]] = []
    for part in parts:
        if isinstance(part, str):
            cls = SCHEMES.get(part)
        elif isinstance(part, type) and issubclass(part, Scheme):
            cls = SCHEMES.get(part.name)
        else:
            owners = [
                SCHEMES.get(n) for n in SCHEMES.names() if SCHEMES.get(n).Config is type(part)
            ]
            if len(owners) != 1:
                raise NNMarkError(
                    f"embed: {type(part).__name__} is not a scheme name, class or config"
                )
            # through build_config as the options are, so its values take their fields' types
            # (a float option given as 1 is written 1.0: a key has one spelling, Scheme.__init__)
            out.append((owners[0], build_config(type(part), config_to_dict(part))))
            continue
        opts = (options or {}).get(cls.name, {}) if several else options or {}
        out.append((cls, build_config(cls.Config, opts)))
    return out


def attack(
    model: nn.Module,
    spec: str,
    data: DataBundle | None = None,
    *,
    options: dict[str, Any] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Run an attack or a chain spec (`prune:fraction=0.5,finetune:epochs=3`) on a copy, on
    `device` (default: where `model` is; its training runs there)."""
    if device is not None and (where := resolve_device(device)) != device_of(model):
        model = copy.deepcopy(model).to(where)  # the attack copies it again only on its device
    return build_attack(spec, options)(model, data, seed=seed)


def check_reachable(mark: Any, cls: type[Scheme], alpha: float = DEFAULT_ALPHA) -> None:
    """Refuse, before any training, a bit mark too short to ever be found on its bits: n bits
    reach at best p = 2^-n (all bits right), which must be below alpha. (A mark that also
    scores its bits, Evidence.scores, may read lower on the scores; a mark is not planned on
    them.)"""
    n = len(mark.bits)
    if cls.kind != "whitebox" or n == 0 or 2.0**-n < alpha:
        return
    need = math.floor(-math.log2(alpha)) + 1
    raise NNMarkError(
        f"{mark.scheme}: {n} bits reach at best p = {2.0**-n:.2g}, never alpha = {alpha:g}; "
        f"use at least {need} bits (40 for a claim without a timestamp)"
    )


def warn_unreachable(scheme: Scheme, alpha: float = DEFAULT_ALPHA) -> None:
    """Say, before any training, that a mark can never be claimed: its best p-value (all the
    evidence right) is not below alpha, e.g. a trigger set with one key label (one group: at
    best 1 / C). Not refused, as short bit marks are: researchers train such marks on purpose
    (Zhang's one-class content trigger, benchmarks/seed004_full.py)."""
    best = scheme.best_p_value()
    if best is not None and best >= alpha:
        log.warning(
            "%s: every trigger answered right gives at best p = %.2g, never alpha = %g: this "
            "mark can never be claimed (it needs more trigger groups with labels of their own)",
            scheme.name,
            best,
            alpha,
        )


def bound_scheme(
    key: OwnerKey, index: int, data: DataBundle | Sequence[DataBundle] | None = None
) -> Scheme:
    """The scheme of mark `index` with the data its derivation may need (checked by hash) and its
    calibration (derived data) attached if any."""
    scheme = scheme_for(key.marks[index], data_list(data))
    scheme.calibration = key.derived.get("calibration", {}).get(str(index))
    return scheme


def data_list(data: DataBundle | Sequence[DataBundle] | None) -> tuple[DataBundle, ...]:
    if data is None:
        return ()
    if isinstance(data, DataBundle):
        return (data,)
    return tuple(data)


#: Without a verified timestamp, a claim needs a forgery cost of at least this many CPU-years.
CLAIM_CPU_YEARS = 1000.0
SECONDS_PER_YEAR = 365.25 * 24 * 3600


@dataclass(frozen=True)
class Provenance:
    """What the key's signature and timestamp prove (nnmark.provenance checks them)."""

    signer: str | None = None
    #: When the stamp proves the key existed by: the TSA's genTime plus its accuracy.
    time: str | None = None
    tsa: str | None = None
    #: The TSA's accuracy (e.g. "1 s"), which `time` includes.
    accuracy: str | None = None
    note: str = ""
    #: The stamp was compared with when the suspect was first seen (`--suspect-seen`) and
    #: predates it: only then does it count.
    seen_checked: bool = False
    #: The verified stamp covers the signature too (nnmark.provenance.stamp_imprint): the
    #: signer had signed by `time`.
    signature_stamped: bool = False
    #: The key commits to this signer's fingerprint (OwnerKey.signer): no other can sign it.
    committed_signer: str | None = None

    @property
    def timestamped(self) -> bool:
        """A verified stamp that predates the suspect's first sighting: what the claim rule
        counts (a stamp alone says when the key existed, not that the suspect came later)."""
        return self.time is not None and self.seen_checked

    def sentence(self) -> str:
        parts = []
        if self.committed_signer and self.signer:
            parts.append(f"signed by {self.signer}, the signer the key commits to")
        elif self.committed_signer:
            parts.append(f"commits to signer {self.committed_signer} (not signed)")
        elif self.signer and self.signature_stamped:
            parts.append(f"signed by {self.signer} (the timestamp covers the signature)")
        elif self.signer:
            # whoever holds a key file can sign it anew: a signature no verified stamp covers
            # names who endorses the key, not who made it first (red team, session 26)
            parts.append(f"signed by {self.signer} (the signature is not timestamped)")
        if self.time:
            acc = f", genTime + accuracy {self.accuracy}" if self.accuracy else ""
            parts.append(f"committed no later than {self.time} (TSA {self.tsa}{acc})")
        text = ", ".join(parts) or "none"
        return f"{text}; {self.note}" if self.note else text


def provenance(
    key: OwnerKey, tsa_certs: Sequence[bytes] = (), suspect_seen: _dt.datetime | None = None
) -> Provenance:
    """Check the key's signature and timestamp; a present one that fails is an error (the key
    was changed after it was signed or stamped). A timestamp counts only when it is checked
    (a TSA certificate is given) and its genTime plus its accuracy (a TSA stamps within that
    much of the time it writes) predates `suspect_seen`, when the suspect was first seen:
    a key stamped after the suspect existed could have been searched for against it, and
    without that date nothing says it was not (two red teams, sessions 24 and 25: a frontier key
    written from a plain model's answers and stamped the same day was found). `suspect_seen`
    must not be in the future."""
    from nnmark.provenance import check_signature, check_timestamp, text_fingerprint

    seen = None
    if suspect_seen is not None:  # checked whatever the key holds: a wrong date is an error
        seen = (
            suspect_seen if suspect_seen.tzinfo else suspect_seen.replace(tzinfo=_dt.timezone.utc)
        )
        if seen > _dt.datetime.now(_dt.timezone.utc) + SEEN_SLACK:
            raise NNMarkError(
                f"the suspect cannot have been first seen in the future ({seen.isoformat()})"
            )
    signer = None
    if key.signature is not None:  # by the committed signer only, if the key commits to one
        signer = check_signature(key.commitment, key.signature, committed=key.signer)
    committed = None if key.signer is None else text_fingerprint(key.signer)
    who: dict[str, Any] = {"signer": signer, "committed_signer": committed}
    if key.timestamp is None:  # a date given for nothing is said, not dropped
        return Provenance(**who, note="" if seen is None else SEEN_UNUSED)
    if not tsa_certs:
        return Provenance(**who, note="a timestamp is attached but not checked (give --tsa-cert)")
    stamp = check_timestamp(key.commitment, key.timestamp, tsa_certs, signature=key.signature)
    # genTime is known only within its accuracy: the stamp proves existence by genTime + accuracy
    when = stamp.latest.astimezone(_dt.timezone.utc)
    acc = stamp.accuracy_text
    # the subject is whatever the certificate's maker wrote: the record names the trusted
    # certificate that vouched for it too (red team, session 26)
    tsa = f"{stamp.tsa}, trusted through certificate sha256:{stamp.anchor[:32]}"
    if seen is not None and when > seen:
        return Provenance(
            **who,
            note=f"timestamp {when.isoformat()} (TSA {tsa}, genTime + accuracy {acc}) "
            f"is later than the suspect was seen ({seen.isoformat()}): it proves nothing "
            "against it",
        )
    return Provenance(
        **who,
        time=when.isoformat(),
        tsa=tsa,
        accuracy=acc,
        signature_stamped=stamp.signed_by is not None,
        seen_checked=seen is not None,
        note="" if seen is not None else UNCOMPARED_STAMP,
    )


#: Why a stamp not compared with the suspect's first sighting is not counted.
UNCOMPARED_STAMP = (
    "the stamp is not counted: it was not compared with when the suspect was first seen "
    "(give --suspect-seen DATE); a key made for the suspect and stamped later would pass"
)
#: Why a first sighting given with a key that holds no timestamp changes nothing.
SEEN_UNUSED = (
    "--suspect-seen was given, but the key holds no timestamp to compare it with "
    "(nnmark key timestamp)"
)
#: Clock skew allowed between the verifier and whoever noted the first sighting.
SEEN_SLACK = _dt.timedelta(minutes=5)


def search_seconds(seconds: Sequence[float], p_values: Sequence[float], method: str) -> float:
    """CPU-seconds of the cheapest key search that reaches a combined key's evidence: each
    mark's secret is derived from that mark's own fields, so a forger re-derives one mark at a
    time, a mark's p-value uniform per derivation (`seconds[i]` each).

    * one part, or "bonferroni" (the combined p follows the smallest part's): search the
      cheapest mark until it alone reaches the smallest p, min(seconds) / min(p);
    * "fisher" (the combined p follows the product of the parts' p): the cheapest split of the
      product over the marks (water-filling: minimise sum seconds_i / p_i with the same product;
      searched marks all cost the same, the dearer ones are derived once), or the one-part route
      above; a forger may pursue both, so half the larger of the two.

    The water-filling cost is where the bound on a forger's chance of reaching that product
    reaches 1; with many marks a forger's odds of 1/2 come up to e times sooner."""
    # a NaN p (nothing read) is no evidence: p = 1, never an infinite cost (red team, session 26)
    floors = [min(max(p, 1e-300), 1.0) if not math.isnan(p) else 1.0 for p in p_values]
    one_part = min(seconds) / min(floors)
    if len(floors) == 1 or method != "fisher" or min(seconds) <= 0:  # unpriced: no split
        return one_part
    need = -sum(math.log(min(p, 1.0)) for p in floors)  # -log of the product to reach
    costs = sorted(seconds)
    best = math.inf
    for m in range(1, len(costs) + 1):  # search the m cheapest marks, derive the rest once
        log_level = (need + sum(math.log(c) for c in costs[:m])) / m
        if log_level < math.log(costs[m - 1]):
            continue  # a searched mark would need p > 1: fewer marks
        best = min(best, m * math.exp(min(log_level, 690.0)) + sum(costs[m:]))
    return max(best, one_part) / 2


def claim_threshold(alpha: float, seconds: float) -> float:
    """The p-value a claim must beat: alpha, and the p-value whose key search (one derivation
    of `seconds` per try) costs CLAIM_CPU_YEARS. A timestamp lowers neither (STAMP_WAIVES_NOTHING)."""
    return min(alpha, seconds / (CLAIM_CPU_YEARS * SECONDS_PER_YEAR))


def _claim_rule(v: Verdict, alpha: float, cost: float, prov: Provenance) -> str:
    if prov.timestamped:
        why = STAMP_WAIVES_NOTHING
    elif prov.time:
        why = UNCOMPARED_STAMP
    else:
        why = "no verified timestamp"
    rule = (
        f"p < alpha = {alpha:g} and a forgery cost of at least {CLAIM_CPU_YEARS:g} CPU-years "
        f"({why})"
    )
    if v.positive:
        return f"claimed: {rule}"
    if v.p_value < alpha and cost < CLAIM_CPU_YEARS:
        return (
            f"not claimed: p < alpha, but a key search reaches it in {cost:.3g} CPU-years, "
            f"and a claim needs {rule}: a stronger mark (more bits or triggers) gives a smaller p"
        )
    if v.p_value < alpha:  # p and cost meet the rule; something else stands in the way
        return f"not claimed: p and the forgery cost meet {rule}, but {v.reason or 'see reason'}"
    return f"not claimed: a claim needs {rule}; p is {v.p_value:.2g}"


#: Why a verified timestamp that predates the suspect does not lower the claim's bar. It shows
#: the key existed before the suspect was seen, not that the key was not searched for: before
#: stamping, the key's holder can grind keys against models of the task they trained
#: themselves and stamp the one their marks fit best; it fits future models of the task too
#: (`python benchmarks/proxy_search.py`: an unrelated key ground over 7,000 derivations against
#: 3 proxy CNNs reached alpha 0.01 on 7 of 7 never-marked models it never saw, 3 of 7 with
#: today's 20-group keys; frontier's stored triggers fit the same way, red team session 28).
STAMP_WAIVES_NOTHING = (
    "timestamped before the suspect was seen, which proves priority but waives no search "
    "cost: a key searched before the stamp against models of the task fits future models too"
)


#: Why a reading on a view the key's holder chose after the key's secrets is no evidence.
CHOSEN_VIEW = (
    "a search over such views costs no key derivation, so the p-value read on one (p_as_read) "
    "has no forgery cost, and a timestamp does not give it one (a view chosen before the stamp "
    "can be fitted to models of the task, as keys can: STAMP_WAIVES_NOTHING); it counts as p 1. "
    "Realign to the unmarked reference the key commits to (--reference-unmarked; nnmark embed "
    "commits one)"
)


def inadmissible(v: Verdict, why: str) -> Verdict:
    """`v` read on a view the key's holder chose after the key's secrets (`why`): not_found at
    p 1, whatever it read (kept as details.p_as_read). Review, session 34: a never-marked cnn,
    its channels reordered into a "marked reference" after an stdm key's secrets were known
    (a search over orders, 30 CPU-seconds), read at p 1e-14 realigned to it, priced as 140,000
    CPU-years of key search, and was claimed with a timestamp. p 1 keeps every combination
    monotone: adding such a view can never lower a key's p."""
    return dataclasses.replace(
        v,
        verdict="not_found",
        p_value=1.0,
        reason=f"{why}: {CHOSEN_VIEW}",
        details={**v.details, "p_as_read": v.p_value},
    )


def _finish(v: Verdict, alpha: float, search: float, prov: Provenance) -> Verdict:
    """One verdict under the claim rule: the user's alpha, the forgery cost (`search`: the
    CPU-seconds of the cheapest key search reaching it, search_seconds), priority."""
    cost = search / SECONDS_PER_YEAR
    return dataclasses.replace(
        v,
        alpha=alpha,
        forgery_cost=cost,
        claim_rule=_claim_rule(v, alpha, cost, prov),
        priority=prov.sentence(),
    )


def weights_not_exposed(scheme: str, kind: str, label: str) -> str:
    """Why a mark read from the weights (a white-box or integrity mark) is not read from
    `label`, a suspect reached through its predictions only (a served model): its verdict would
    otherwise blame the suspect ("suspect has no tensor conv3.weight")."""
    return (
        f"{scheme} is {KIND_NAMES.get(kind, kind)} mark: it is read from the model's weights, "
        f"which {label} does not expose (only its predictions); verify the model file"
    )


#: Each scheme kind with its article, as messages name it.
KIND_NAMES = {"whitebox": "a white-box", "integrity": "an integrity", "blackbox": "a black-box"}


def weights_only_marks(key: OwnerKey) -> str | None:
    """Why `key` cannot be verified through predictions alone (every mark is read from the
    weights: white-box or integrity), for `verify --remote` to refuse before any query; None
    when a black-box mark is among them (those are read, the others reported not read).

    >>> weights_only_marks(OwnerKey.new("o", nonce="00" * 16)) is None  # no marks: nothing read
    True
    """
    kinds = {m.scheme: SCHEMES.get(m.scheme).kind for m in key.marks}
    if not kinds or "blackbox" in kinds.values():
        return None
    if len(kinds) == 1:
        ((name, kind),) = kinds.items()
        what = f"{name} is {KIND_NAMES.get(kind, kind)} mark: it is"
    else:
        named = ", ".join(f"{n} ({KIND_NAMES.get(k, k).split()[-1]})" for n, k in kinds.items())
        what = f"the key's marks {named} are"
    return f"{what} read from the model's weights; verify the model file, not --remote"


def _read(
    sch: Scheme, views: list[Suspect], threshold: float, left: int | None, looks: int = 1
) -> tuple[Suspect, Verdict]:
    """The mark read from each of its views (Suspect.readings) with `left` queries: the view
    and verdict of the smallest p, that p multiplied by the number of views (Bonferroni), each
    view held to threshold / views, so one more way of reading is not one more free look. A
    view the key's holder chose after the secrets (realigned to the marked reference) is read
    and shown (p_as_read) but counts as p 1 and as no look (`inadmissible`). `looks`: the
    views the verifier could have asked for (`_looks`), counted even when fewer were read."""
    looks = max(looks, sum(v.chosen_after_secrets is None for v in views))
    read = []
    for view in views:
        view = view.with_budget(left)
        # a suspect of another architecture than the one the key commits to names its layers
        # for other places (nnmark.suspect.arch_mismatch): a white-box mark is not read by name
        why = view.unreadable
        if why is None and sch.kind != "blackbox" and not view.white_box:  # a served model
            why = weights_not_exposed(sch.name, sch.kind, view.label)
        if why is None and sch.kind == "whitebox":
            why = arch_mismatch(sch.mark, view.info, view.tensor_names())
        if why is not None:  # e.g. not realignable: not_found, with the reason
            v = sch.unreadable_verdict(why, threshold)
            v = dataclasses.replace(v, details={**v.details, "not_read": why})
            read.append((view, v))
        else:
            v = sch.verify(view, threshold / looks)
            if view.chosen_after_secrets is not None:
                v = inadmissible(v, view.chosen_after_secrets)
            read.append((view, v))
        if left is not None:
            left -= read[-1][1].queries or 0
    if len(read) == 1:
        view, v = read[0]
        if looks == 1:
            return view, v
        p = min(1.0, v.p_value * looks)
        return view, dataclasses.replace(v, p_value=p, details={**v.details, "looks": looks})
    # at the same p, an admissible view: a chosen one speaks only through its reason
    view, v = min(read, key=lambda r: (r[1].p_value, r[0].chosen_after_secrets is not None))
    p = min(1.0, v.p_value * looks)
    reads = {r[0].label: r[1].p_value for r in read}
    details = {**v.details, "read_from": view.label, "reads_p": reads}
    chosen = [r[1] for r in read if r[0].chosen_after_secrets is not None and r[1] is not v]
    if chosen and "p_as_read" in chosen[0].details:  # what the realigned view read, shown
        details["p_as_read"] = chosen[0].details["p_as_read"]
        if not v.positive:  # why the realigned reading did not count, then why this one
            why = (
                chosen[0].reason
                if v.reason is None
                else f"{chosen[0].reason}; as given: {v.reason}"
            )
            v = dataclasses.replace(v, reason=why)
    return view, dataclasses.replace(v, p_value=p, details=details)


#: Views of a white-box mark realigned to its committed unmarked reference
#: (RealignedSuspect.readings): realigned, realigned with the channel scales kept, as given.
UNMARKED_REFERENCE_LOOKS = 3


def _looks(sch: Scheme) -> int:
    """The readings a verifier may choose between for this mark: a white-box mark of a key
    that commits to an unmarked reference is read three ways with --reference-unmarked
    (UNMARKED_REFERENCE_LOOKS), as given alone without; all count either way, or running
    verify with and without the flag and keeping the better was a free look (forger review,
    session 39)."""
    # the mark's own commitment, as realignment reads it (a key's field may be edited apart)
    committed = sch.mark.reference is not None and sch.kind == "whitebox"
    return UNMARKED_REFERENCE_LOOKS if committed else 1


@exact_fp32()  # the same numbers on any device, whatever precision the caller set
def verify(
    suspect: Suspect | nn.Module | str,
    key: OwnerKey | str | Path,
    alpha: float = DEFAULT_ALPHA,
    *,
    data: DataBundle | Sequence[DataBundle] | None = None,
    tsa_certs: Sequence[bytes] = (),
    suspect_seen: _dt.datetime | None = None,
) -> Verdict:
    """Verify every mark of `key` in `suspect`; several marks give one combined verdict.

    `key` is an OwnerKey or a key file's path. `suspect` may be a path, an `nn.Module` (your
    own class works: only the named tensors are read by white-box schemes) or a `Suspect`.
    `data` are the data sets the key's derivations name (checked by content hash; the built-in
    digits is found alone); `tsa_certs` the certificates (PEM or DER) a timestamp is checked
    against; `suspect_seen` when the suspect was first seen (a timestamp after it does not
    count).

    The claim rule: found when p < alpha and the forgery cost (1 / p derivations of the key's
    KDF) is at least CLAIM_CPU_YEARS, timestamp or not (STAMP_WAIVES_NOTHING). A mark read
    from a view the key's holder chose after its secrets (realigned to the marked reference)
    is no evidence: p 1, what it read kept beside it (`inadmissible`).

    A path is read lazily, only the tensors and outputs the marks need, and the verdict names
    no digest of the file. To name the bytes read, as `nnmark verify` does, verify a
    `SuspectCopy` of it: every byte read once, hashed, and verified from a private copy.
    """
    if not isinstance(key, OwnerKey):  # a key file's path, as the CLI takes it
        key = OwnerKey.load(key)
    if not 0 < alpha < 1:  # NaN too: decide() compares with it
        raise NNMarkError(f"alpha must be in (0, 1), got {alpha}")
    s = as_suspect(suspect)
    prov = provenance(key, tsa_certs, suspect_seen)
    schemes = [bound_scheme(key, m.index, data) for m in key.marks]
    verdicts = []
    left = s.max_queries  # one budget for the whole key, spent mark after mark
    for sch in schemes:
        seconds = sch.mark.derivation_seconds  # a search re-derives this mark alone
        threshold = claim_threshold(alpha, seconds)
        view, v = _read(sch, s.readings(sch.mark), threshold, left, _looks(sch))
        if left is not None:
            left -= v.queries or 0
        search = search_seconds([seconds], [v.p_value], "one")
        verdicts.append(_finish(v, alpha, search, prov))
    if len(verdicts) == 1:
        return verdicts[0]
    checks = [v for sch, v in zip(schemes, verdicts) if sch.kind == "integrity"]
    owned = [(sch, v) for sch, v in zip(schemes, verdicts) if sch.kind != "integrity"]
    if not owned:
        return _all_intact(verdicts, [sch.mark.derivation_seconds for sch in schemes], alpha, prov)
    # An integrity mark says the file is the one its key's holder wrote, and anyone may write
    # one (into a stolen copy too): it is no evidence of ownership, so it stays out of the claim.
    parts_p = [v.p_value for _, v in owned]
    if len(owned) == 1:
        p, method, null = parts_p[0], "one", owned[0][1].null
    elif all(sch.independent_null for sch, _ in owned):
        p, method, null = fisher_combine(parts_p), "fisher", COMBINED_NULL
    else:
        p, method, null = bonferroni_combine(parts_p), "bonferroni", BONFERRONI_NULL
    search = search_seconds([sch.mark.derivation_seconds for sch, _ in owned], parts_p, method)
    found = decide(p, alpha) and search / SECONDS_PER_YEAR >= CLAIM_CPU_YEARS
    details: dict[str, Any] = {"combination": method}
    if checks:
        details["integrity"] = _integrity(checks)
        null += INTEGRITY_APART
    combined = Verdict(
        scheme="+".join(v.scheme for v in verdicts),
        verdict="found" if found else "not_found",
        statistic_name="p" if method == "one" else f"{method}_p",
        statistic=p,
        p_value=p,
        alpha=alpha,
        n=sum(v.n for _, v in owned),
        null=null,
        queries=None  # white-box parts send none
        if all(v.queries is None for v in verdicts)
        else sum(v.queries or 0 for v in verdicts),
        parts=tuple(verdicts),
        details=details,
    )
    return _finish(combined, alpha, search, prov)


def _integrity(checks: list[Verdict]) -> str:
    """The integrity marks' word beside an ownership claim: "not read" when one was not (a
    served model exposes no weights: "modified" told a story about weights nobody saw; diff
    review, session 38), else intact only when every one is."""
    if any(v.details.get("unread") or v.details.get("not_read") for v in checks):
        return "not read"
    return "intact" if all(v.verdict == "intact" for v in checks) else "modified"


def _all_intact(
    verdicts: list[Verdict], seconds: list[float], alpha: float, prov: Provenance
) -> Verdict:
    """Integrity marks alone: intact only when every one is (one modified part is a modified
    file), so the combined p is the largest part's (an intersection-union test), and a forger
    must reach every part: priced at the dearest."""
    ps = [1.0 if math.isnan(v.p_value) else v.p_value for v in verdicts]
    p = max(ps)
    search = max(search_seconds([s], [q], "one") for s, q in zip(seconds, ps))
    intact = all(v.verdict == "intact" for v in verdicts) and decide(p, alpha)
    intact = intact and search / SECONDS_PER_YEAR >= CLAIM_CPU_YEARS
    combined = Verdict(
        scheme="+".join(v.scheme for v in verdicts),
        verdict="intact" if intact else "modified",
        statistic_name="all_p",
        statistic=p,
        p_value=p,
        alpha=alpha,
        n=sum(v.n for v in verdicts),
        null=ALL_INTACT_NULL,
        queries=None,
        parts=tuple(verdicts),
        details={"combination": "all"},
    )
    return _finish(combined, alpha, search, prov)


INTEGRITY_APART = (
    "; the integrity marks are not part of it (anyone may write one into any model: "
    "details['integrity'] says whether they all read intact, or were not read)"
)
ALL_INTACT_NULL = (
    "every integrity mark must read intact: the largest part's p-value (an intersection-union test)"
)
COMBINED_NULL = (
    "Fisher's method over the marks' p-values: each part's null rests on the key's own "
    "randomness (masks, labels, projections from independent KDF streams), so given the model "
    "the parts' p-values are independent"
)
BONFERRONI_NULL = (
    "Bonferroni over the marks' p-values (k x the smallest): a part's null is calibrated, not "
    "the key's randomness alone, so the parts may be dependent"
)
