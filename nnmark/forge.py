"""The forger's toolbox: every way someone who never marked a model might try to make `verify`
claim it, each reporting what it achieved (docs/security.md is the threat model).

The forger knows nnmark's code, holds the suspect (weights, or its answers), can write any key
JSON (recomputing its commitment) and has a large but finite compute budget. Strategies:

- `honest`: plan a fresh key of the scheme for the model (never embedded): the null itself;
- `chosen_payload`: read the bits the model gives under a provisional key and commit them as the
  payload (for every bit-carrying scheme); the commitment then derives other secrets;
- `tampered`: edit every config and data field of an honest key to extremes and garbage (zero,
  negative, NaN-like, huge, wrong types, unknown fields), recomputing the commitment;
- `fabricated_triggers`: store ordinary images with the model's own answers as the key's
  triggers (frontier's fitted to its coins, a calibration that makes any answer look rare);
- `identity_edit`: take someone else's key for a model they marked, change owner and date,
  recompute the commitment (and keep their signature, which then fails);
- `nonce_search`: try nonces until a time budget is spent, keep the best p-value, and report
  the rate (derivations per second) and the extrapolated cost of reaching the claim rule;
- `late_timestamp`: the nonce search's best key with a genuine timestamp obtained after the
  suspect was seen (the claim rule does not count it);
- `split_search`: many small marks in one key, each searched alone (a mark's secret depends on
  its own fields) until it reads well on the model, then combined: the claim rule must price
  the combined p-value at the split search's cost, not at one search of the whole key.

A forged key is *accepted* when `verify` says found (or intact); every strategy must end
refused (an NNMarkError: the key is malformed or does not re-derive) or not_found.
`benchmarks/forgery.py` runs them all against every scheme.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import functools
import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from nnmark.api import CLAIM_CPU_YEARS, SECONDS_PER_YEAR, verify
from nnmark.config import build_config
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import OwnerKey, sha256_hex
from nnmark.schemes import SCHEMES
from nnmark.stats import DEFAULT_ALPHA
from nnmark.verdict import Verdict

Outcome = Literal["refused", "not_found", "found", "not_applicable"]


@dataclass
class Forgery:
    """What one forged key achieved."""

    strategy: str
    scheme: str
    outcome: Outcome
    detail: str = ""
    p_value: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the verdict's forgery cost (CPU-years), when a verdict was reached
    forgery_cost: float | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == "found"


@dataclass
class Target:
    """What the forger holds: the suspect, the task's data, and (maybe) someone else's key for
    it; `suspect_seen` is when the suspect was first seen (a later timestamp proves nothing)."""

    model: nn.Module
    data: DataBundle
    victim_key: OwnerKey | None = None
    suspect_seen: _dt.datetime | None = None
    alpha: float = DEFAULT_ALPHA
    tsa_url: str | None = None
    tsa_certs: Sequence[bytes] = ()


def _judge(
    strategy: str, scheme: str, build: Callable[[], OwnerKey], target: Target, **extra: Any
) -> Forgery:
    """Build the forged key (through its JSON, as a file would travel), verify it and hand it
    to `identify` as the one candidate: accepted if either claims the model."""
    from nnmark.fingerprint import identify

    try:
        key = build()
        key = OwnerKey.from_json(json.loads(json.dumps(key.to_json())), "forged key")
        v = verify(
            target.model,
            key,
            target.alpha,
            data=target.data,
            tsa_certs=target.tsa_certs,
            suspect_seen=target.suspect_seen,
        )
        named = identify(
            target.model,
            {"forged": key},
            target.alpha,
            data=target.data,
            tsa_certs=target.tsa_certs,
            suspect_seen=target.suspect_seen,
        ).named
    except NNMarkError as exc:
        return Forgery(strategy, scheme, "refused", str(exc), extra=extra)
    outcome: Outcome = "found" if v.positive or named is not None else "not_found"
    detail = _describe(v) + ("; identify named it" if named is not None else "")
    return Forgery(strategy, scheme, outcome, detail, v.p_value, extra, v.forgery_cost)


def _describe(v: Verdict) -> str:
    return f"{v.verdict}, p {v.p_value:.3g}" + (f" ({v.reason})" if v.reason else "")


def honest_key(
    scheme: str, model: nn.Module, data: DataBundle, owner: str = "forger", nonce: str | None = None
) -> OwnerKey:
    """A key the forger plans for the model with nnmark's own classes (never embedded)."""
    cls = SCHEMES.get(scheme)
    key = OwnerKey.new(owner, nonce=nonce)
    config: Any = build_config(cls.Config, _options(scheme, data))
    return key.with_mark(cls.plan(copy.deepcopy(model), key, config, data=data))


def _options(scheme: str, data: DataBundle) -> dict[str, Any]:
    """What a scheme needs to plan on digits-like data without training (a scheme of a trained
    model: no warmup, the model is trained; one that needs a source: the data set itself)."""
    cls = SCHEMES.get(scheme)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    options: dict[str, Any] = {"source": data.name} if cls.needs_source else {}
    if cls.needs_trained and "warmup" in names:
        options["warmup"] = 0
    return options


def _edited(key: OwnerKey, edit: Callable[[dict[str, Any]], None]) -> OwnerKey:
    """The key with its committed JSON edited and the commitment recomputed."""
    doc = key.to_json()
    edit(doc["committed"])
    doc["commitment"] = sha256_hex(doc["committed"])
    return OwnerKey.from_json(doc, "forged key")


# ---- strategies ---------------------------------------------------------------------------


def honest(scheme: str, target: Target) -> Iterator[Forgery]:
    yield _judge("honest", scheme, lambda: honest_key(scheme, target.model, target.data), target)


def chosen_payload(scheme: str, target: Target) -> Iterator[Forgery]:
    """Commit to the bits the model gives under a provisional key."""
    cls = SCHEMES.get(scheme)
    if cls.kind != "whitebox":
        yield Forgery("chosen_payload", scheme, "not_applicable", "no payload to choose")
        return
    provisional = honest_key(scheme, target.model, target.data)
    sch = cls(provisional.marks[0], [target.data])
    from nnmark.suspect import as_suspect

    ev = sch.evidence(as_suspect(target.model))
    if ev.bits is None:
        yield Forgery("chosen_payload", scheme, "not_applicable", ev.reason or "")
        return
    read = ev.bits
    unmasked = tuple(int(b) ^ int(m) for b, m in zip(read, sch.key_mask.tolist()))
    for name, payload in (("raw bits", read), ("unmasked bits", unmasked), ("all ones", None)):
        bits = payload or (1,) * len(read)

        def build(bits: tuple[int, ...] = tuple(bits)) -> OwnerKey:
            return _edited(
                provisional, lambda c: c["marks"][0].update(bits="".join(map(str, bits)))
            )

        yield _judge("chosen_payload", scheme, build, target, variant=name)


#: Values a tamperer writes into numeric fields.
EXTREMES: tuple[Any, ...] = (0, -1, 1e-300, 1e300, "nan", None, [1, 2], {"x": 1}, True)


def tampered(scheme: str, target: Target) -> Iterator[Forgery]:
    """Every config and data field of an honest key set to extremes and garbage."""
    base = honest_key(scheme, target.model, target.data)
    mark = base.to_json()["committed"]["marks"][0]
    for section in ("config", "data"):
        for name in list(mark[section]):
            for value in EXTREMES:
                edit = functools.partial(_set_field, section=section, name=name, value=value)
                build = functools.partial(_edited, base, edit)
                yield _judge(
                    "tampered", scheme, build, target, field=f"{section}.{name}", value=repr(value)
                )
    for section in ("data", "stored"):
        edit = functools.partial(_set_field, section=section, name="numel", value=10**9)
        build = functools.partial(_edited, base, edit)
        yield _judge("tampered", scheme, build, target, field=f"{section}.numel")


def _set_field(committed: dict[str, Any], *, section: str, name: str, value: Any) -> None:
    committed["marks"][0].setdefault(section, {})[name] = value


def fabricated_triggers(scheme: str, target: Target) -> Iterator[Forgery]:
    """Ordinary test images with the model's own answers stored as the key's triggers."""
    cls = SCHEMES.get(scheme)
    if cls.kind != "blackbox" or cls.task != "classification":
        yield Forgery("fabricated_triggers", scheme, "not_applicable", "no trigger set")
        return
    from nnmark.schemes._trigger import encode_images

    x, _ = target.data.tensors("test")
    base = honest_key(scheme, target.model, target.data)
    n = int(base.marks[0].config.get("n", 50))
    if "answers" in base.marks[0].stored:  # frontier: fit its per-adversary coins
        yield from _fabricated_frontier(scheme, base, x, n, target)
        return
    x = x[: min(n, 50)]
    with torch.no_grad():
        answers = target.model.eval()(x).argmax(1).tolist()
    stored = {"triggers": encode_images(x), "labels": answers, "adversarial": [1] * len(answers)}

    def fabricate(c: dict[str, Any]) -> None:
        m = c["marks"][0]
        m["stored"] = stored
        m["config"]["n"] = len(answers)

    def with_calibration() -> OwnerKey:
        key = _edited(base, fabricate)
        return key.with_derived("calibration", {"0": {"models": 1, "ucb": 0.0, "model_ucb": 0.0}})

    yield _judge("fabricated_triggers", scheme, lambda: _edited(base, fabricate), target)
    yield _judge("fabricated_triggers", scheme, with_calibration, target, variant="+calibration")


def coin_fitted_frontier(
    x: torch.Tensor, answers: torch.Tensor, keep: torch.Tensor, classes: int
) -> dict[str, Any]:
    """A frontier key's `stored` that puts each input's expected answer (`answers`: what the
    target model, or any model of the task, gives) on the side its coin (`keep`) picks, every
    input a true adversary: every query would match if the coins stayed as they were."""
    from nnmark.schemes._trigger import encode_images
    from nnmark.schemes.frontier import STORED_VERSION

    other = (answers + 1) % classes
    return {
        "triggers": encode_images(x),
        "labels": torch.where(keep, other, answers).tolist(),
        "answers": torch.where(keep, answers, other).tolist(),
        "adversarial": [1] * len(x),
        "version": STORED_VERSION,
    }


def _fabricated_frontier(
    scheme: str, base: OwnerKey, x: torch.Tensor, n: int, target: Target
) -> Iterator[Forgery]:
    """A frontier key fitted to its coins: each stored (label, answer) pair is chosen to put
    the model's own answer on the side the coin of the key's secret picks (every query would
    match), and the secret then binds the stored triggers (nnmark.keys.AFTER_EMBEDDING): the
    coins are drawn anew, and fitting them costs a derivation per try, as a nonce search."""
    if len(x) < n:
        yield Forgery("fabricated_triggers", scheme, "not_applicable", "too few test images")
        return
    x = x[:n]
    classes = int(base.marks[0].data["classes"])
    with torch.no_grad():
        answers = target.model.eval()(x).argmax(1)
    keep = torch.randint(0, 2, (n,), generator=base.marks[0].generator("coins")).bool()
    stored = coin_fitted_frontier(x, answers, keep, classes)

    def fabricate(c: dict[str, Any]) -> None:
        c["marks"][0]["stored"] = stored

    yield _judge("fabricated_triggers", scheme, lambda: _edited(base, fabricate), target)


def identity_edit(scheme: str, target: Target) -> Iterator[Forgery]:
    """Someone else's key, with owner and date changed and the commitment recomputed."""
    victim = target.victim_key
    if victim is None or victim.marks[0].scheme != scheme:
        yield Forgery("identity_edit", scheme, "not_applicable", "no victim key of this scheme")
        return

    def edit(c: dict[str, Any]) -> None:
        c["owner"] = "forger"
        c["created"] = "2000-01-01T00:00:00+00:00"

    def build() -> OwnerKey:
        doc = victim.to_json()
        edit(doc["committed"])
        doc["commitment"] = sha256_hex(doc["committed"])
        return OwnerKey.from_json(doc, "forged key")

    yield _judge("identity_edit", scheme, build, target)


def nonce_search(scheme: str, target: Target, budget_s: float = 2.0) -> Iterator[Forgery]:
    """Fresh nonces until the budget is spent; the best key, the rate, the extrapolated cost."""
    start = time.perf_counter()
    best: tuple[float, OwnerKey] | None = None
    tries = 0
    kdf_seconds = 0.0
    while time.perf_counter() - start < budget_s or tries == 0:
        nonce = secrets.token_hex(16)  # fresh: a search never meets a memoised derivation
        key = honest_key(scheme, target.model, target.data, nonce=nonce)
        try:
            v = verify(target.model, key, target.alpha, data=target.data)
        except NNMarkError:
            tries += 1
            continue
        kdf_seconds += key.derivation_seconds
        tries += 1
        if best is None or v.p_value < best[0]:
            best = (v.p_value, key)
    elapsed = time.perf_counter() - start
    rate = tries / elapsed
    per_try = kdf_seconds / max(tries, 1)
    extra = {
        "tries": tries,
        "seconds": round(elapsed, 3),
        "tries_per_second": round(rate, 3),
        "kdf_seconds_per_try": round(per_try, 4),
    }
    if best is None:
        yield Forgery("nonce_search", scheme, "refused", "no key could be planned", extra=extra)
        return
    # the claim rule's p-value at alpha: what a search would need to reach, and its cost
    needed = min(target.alpha, per_try / (CLAIM_CPU_YEARS * SECONDS_PER_YEAR))
    extra["claim_p"] = needed
    extra["cost_cpu_years_at_this_rate"] = 1.0 / needed / rate / SECONDS_PER_YEAR
    extra["best_p"] = best[0]
    found = _judge("nonce_search", scheme, lambda: best[1], target, **extra)
    yield found
    url = target.tsa_url
    if url:
        from nnmark.provenance import fetch_timestamp

        def stamped() -> OwnerKey:
            key = best[1]
            return dataclasses.replace(key, timestamp=fetch_timestamp(key.commitment, url))

        yield _judge("late_timestamp", scheme, stamped, target)


#: split_search: the cheapest KDF a key may name (keys.check_kdf), marks and bits per mark
SPLIT_KDF = {"name": "scrypt", "n": 1 << 10, "r": 1, "p": 1}
SPLIT_MARKS, SPLIT_BITS = 16, 6


def split_key(scheme: str, target: Target, max_tries: int = 4096) -> tuple[OwnerKey, int]:
    """16 marks of 6 bits (white-box), each re-derived alone (its message changed) until its
    own p-value is at most 2^-6: their Fisher combination reaches about 3e-14 after about
    1,000 derivations in all (a mark that also scores its bits reports the smaller p doubled,
    so it takes about twice as many, and its continuous p puts the combination lower: 1.4e-20
    on a digits cnn, uchida, session 30). Returns the key and the derivations it took."""
    from nnmark.suspect import as_suspect

    cls = SCHEMES.get(scheme)
    if cls.kind != "whitebox":
        raise NNMarkError("white-box marks only")
    suspect = as_suspect(target.model)
    config: Any = build_config(cls.Config, _options(scheme, target.data))
    key = OwnerKey.new("forger", kdf=SPLIT_KDF)
    tries = 0
    for _ in range(SPLIT_MARKS):
        planned = cls.plan(
            copy.deepcopy(target.model), key, config, bits=SPLIT_BITS, data=target.data
        )
        for _ in range(max_tries):
            tries += 1
            mark = dataclasses.replace(planned, message=secrets.token_hex(8))
            if cls(mark, [target.data]).verify(suspect, 1.0).p_value <= 2.0**-SPLIT_BITS:
                break
        else:
            raise NNMarkError("a mark never read well")
        key = key.with_mark(mark)
    return key, tries


def split_search(scheme: str, target: Target) -> Iterator[Forgery]:
    """`split_key`, judged."""
    key, tries = split_key(scheme, target)
    yield _judge("split_search", scheme, lambda: key, target, derivations=tries)


Strategy = Callable[[str, Target], Iterator[Forgery]]
STRATEGIES: dict[str, Strategy] = {
    "honest": honest,
    "chosen_payload": chosen_payload,
    "tampered": tampered,
    "fabricated_triggers": fabricated_triggers,
    "identity_edit": identity_edit,
    "nonce_search": nonce_search,
    "split_search": split_search,
}


def forge(
    target: Target,
    schemes: Sequence[str] | None = None,
    strategies: Sequence[str] | None = None,
    table: Mapping[str, Strategy] = STRATEGIES,
) -> list[Forgery]:
    """Run every strategy (or the named ones) against every scheme (or the named ones)."""
    out: list[Forgery] = []
    for scheme in schemes or SCHEMES.names():
        if SCHEMES.get(scheme).task not in ("any", target.data.task):
            continue
        for name in strategies or table:
            try:
                out.extend(table[name](scheme, target))
            except NNMarkError as exc:  # the forger's own plan failed: nothing forged
                out.append(Forgery(name, scheme, "not_applicable", str(exc)))
    return out
