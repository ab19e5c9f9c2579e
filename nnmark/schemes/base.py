"""The scheme protocol: five optional embedding hooks, then evidence and a verdict.

A scheme instance is bound to one `Mark` of an owner key (its config, layer and payload) and
derives every secret from `mark.generator(purpose)`. The seeds' schemes change training at
different points, so every hook has a no-op default and a scheme fills only what it needs:

=================  =========================================  ==============================
hook               called                                     filled by (e.g.)
=================  =========================================  ==============================
``plan``           once, to create the key entry              every scheme (layer, payload)
``encode_payload`` a text payload (``--message``), before plan  bit-carrying white-box schemes
``prepare``        before training                            freeze params, grow the head
``batches``        wraps each epoch's batches                 trigger sets, key samples
``penalty``        added to each batch's loss                 uchida, stdm, deepsigns
``step``           replaces the optimiser step                tartaglione, watermas
``finalize``       after training                             fragile (writes the hash)
``evidence``       reads the suspect                          every scheme
``verify``         evidence -> statistic -> p-value           every scheme
=================  =========================================  ==============================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnmark.config import build_config, config_to_dict
from nnmark.data import resolve_data
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.hooks import Batch, Hooks, LossFn, plain_step  # noqa: F401 (re-exported)
from nnmark.keys import Mark, OwnerKey, canonical_json, payload_bits
from nnmark.stats import DEFAULT_ALPHA, ber, binomial_pvalue, decide, normal_pvalue
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

#: Payload bits of a text message when neither --bits nor the host fixes them.
DEFAULT_MESSAGE_BITS = 255
#: The largest host (in values) a key may name: a key must not make its verifier allocate more.
MAX_HOST_VALUES = 1 << 28
#: The most values of one secret a key makes its verifier derive (a projection, the trigger
#: inputs): 2^26 floats, 256 MiB, checked from the key's fields before anything is allocated.
MAX_DERIVED_VALUES = 1 << 26

BIT_NULL = (
    "a model that never saw this key matches each key bit independently with probability 1/2: "
    "what is embedded is the payload XOR a secret mask from the key's KDF, so the matches are "
    "fair coins whatever the payload and whatever the model (exact binomial upper tail)"
)
#: The null of a mark whose bits come with scores (Evidence.scores): both tests, the smaller p
#: doubled (Bonferroni over the two).
SCORE_NULL = (
    BIT_NULL + "; and each bit's score is, for a model that never saw this key, an independent "
    "standard normal whatever the model (uchida: its logit over the host's norm, the key's "
    "projections being N(0, 1) from its KDF; stdm: the distance to its lattice point, uniform "
    "under the key's dither, through the normal quantile), so the signed scores' sum over "
    "sqrt(n) is standard normal (exact upper tail); p is the smaller of the two tails, doubled"
)


class NotRealignable(NNMarkError):
    """A mark that `verify --reference` cannot realign validly (the message says why)."""


@dataclass(frozen=True)
class Evidence:
    """What a scheme reads from a suspect: bits, answers or hashes, or why it could not."""

    bits: tuple[int, ...] | None = None
    reason: str | None = None
    #: Per bit, a score whose sign is the bit read and which, for a model that never saw the
    #: key, is an independent standard normal given the model (SCORE_NULL), or None. Weak
    #: marks (pooled fingerprints) leave many bits right by small margins: the scores count
    #: the margins where the bits count only their signs.
    scores: tuple[float, ...] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


def key_error(mark: Mark, field_name: str, problem: str) -> NNMarkError:
    """The one-line error for a key field that is malformed or does not re-derive."""
    return NNMarkError(f"key: mark {mark.index} ({mark.scheme}): field {field_name} {problem}")


def check_derived(mark: Mark, field_name: str, values: int, what: str) -> None:
    """Refuse a key whose `field_name` makes its verifier derive `values` values of `what`
    (trigger inputs, a projection) above MAX_DERIVED_VALUES, before anything is allocated."""
    if values > MAX_DERIVED_VALUES:
        raise key_error(
            mark, field_name, f"makes {values:,} {what} values (at most {MAX_DERIVED_VALUES:,})"
        )


def config_count(mark: Mark, name: str, default: int) -> int | None:
    """An integer option of the key's config (its range is checked by the scheme's Config when
    the scheme is bound), or None when it is not an integer (refused there)."""
    v = mark.config.get(name, default)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def check_shape(mark: Mark, name: str, value: Any, *, dims: tuple[int, int] = (1, 5)) -> list[int]:
    """A tensor shape from a key: positive integers, `dims` long, at most MAX_HOST_VALUES."""
    if (
        not isinstance(value, list)
        or not dims[0] <= len(value) <= dims[1]
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise key_error(mark, name, f"must be a list of {dims[0]} to {dims[1]} positive integers")
    if math.prod(value) > MAX_HOST_VALUES:
        raise key_error(mark, name, f"names {math.prod(value)} values (at most {MAX_HOST_VALUES})")
    return value


def check_int(mark: Mark, name: str, value: Any, lo: int, hi: int) -> int:
    """An integer field of a key (JSON's true is not one), in [lo, hi]."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise key_error(mark, name, f"must be an integer in [{lo}, {hi}]")
    return value


def check_host_layer(mark: Mark) -> None:
    """A white-box mark names its host layer, and its config names no other."""
    if mark.layer is None or mark.config.get("layer") not in (None, mark.layer):
        raise key_error(mark, "layer", "must name the host layer (and agree with the config)")


def check_fields(mark: Mark, allowed: set[str], required: set[str] | None = None) -> None:
    """`mark.data` holds exactly the fields a scheme derives from (and an ECC's parameters)."""
    unknown = sorted(set(mark.data) - allowed - {"ecc"})
    if unknown:
        raise key_error(mark, f"data.{unknown[0]}", "is not a field this scheme uses")
    missing = sorted((allowed if required is None else required) - set(mark.data))
    if missing:
        raise key_error(mark, f"data.{missing[0]}", "is missing")


class Scheme(Hooks):
    """Base class of every watermarking scheme; subclasses live one per file in this package.

    Capabilities are declared as class variables, read by the CLI, the benchmark and the tests:
    `kind`, `task`, `needs_data` (verification re-derives key inputs from a data set, checked
    by its content hash), `independent_null` (the null's randomness is the key's alone,
    so Fisher's method may combine this mark with others), `realigns_to_marked` (`verify
    --reference MARKED` can match a suspect to the owner's marked model with what the mark's
    statistic reads erased, `blind_reference`; the others refuse, and realign only to a model
    that never saw the key), `needs_trained` (the mark is made from a trained model's own
    behaviour, so it is fine-tuned in: frontier), `situation` (how the scheme's paper embeds
    it, the default of the bench and the docs: "train" from scratch, or "finetune" a trained
    model; every scheme can be embedded either way through `embed`).
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    kind: ClassVar[Literal["whitebox", "blackbox", "integrity"]] = "whitebox"
    task: ClassVar[str] = "any"
    paper: ClassVar[str] = ""
    needs_data: ClassVar[bool] = False
    independent_null: ClassVar[bool] = True
    realigns_to_marked: ClassVar[bool] = False
    needs_trained: ClassVar[bool] = False
    #: Its key inputs come from a second data set, named by the `source` option (unrelated's
    #: Fashion-MNIST items): what plans keys without a user (forge, the false-claim check, the
    #: bench) must give it one.
    needs_source: ClassVar[bool] = False
    situation: ClassVar[Literal["train", "finetune"]] = "train"
    #: Epochs of this scheme's default recipe when it marks a trained model (fine-tune-to-embed),
    #: where that differs from TrainConfig's: the length its defaults were measured at
    #: (nnmark.api.default_recipe; `nnmark embed` trains this long unless --epochs says).
    finetune_epochs: ClassVar[int | None] = None
    #: Options added after keys of this scheme were first issued: left out of a key while at
    #: their defaults, so keys written before them stay canonical and a default mark's key (every
    #: secret is derived from it) stays what it was.
    later_options: ClassVar[tuple[str, ...]] = ()
    #: Options added later whose default is not what the keys issued before them did: a key
    #: that holds none of them was embedded without them and reads them as these values (and
    #: stays canonical); a key that holds one must hold all, and new keys write every one.
    legacy_options: ClassVar[dict[str, Any]] = {}
    #: Options a key left out while they sat at a value that is no longer the default (former
    #: `later_options`, or ones that did not exist yet): an absent one reads as that value, one
    #: by one, and a key holds one only where it differs from it, so each config has one
    #: spelling (every secret is derived from it).
    former_defaults: ClassVar[dict[str, Any]] = {}
    config: Any
    #: Calibration of this mark on unmarked models (key.derived["calibration"]), set by verify.
    calibration: dict[str, Any] | None = None

    @classmethod
    def canonical_config(cls, config: Any) -> dict[str, Any]:
        """The config as a key holds it, every option as written (every secret is derived from
        it, and a key that spells it otherwise is refused); `later_options` only where set,
        `former_defaults` only where they differ from their former value."""
        out = config_to_dict(config)
        default = cls.Config() if cls.later_options else None
        former = cls.former_defaults
        return {
            k: v
            for k, v in out.items()
            if not (k in cls.later_options and getattr(default, k) == v)
            and not (k in former and former[k] == v)
        }

    def __init__(self, mark: Mark, data: Sequence[DataBundle] = ()) -> None:
        self.mark = mark
        written = dict(mark.config)
        if self.legacy_options and not any(k in written for k in self.legacy_options):
            written |= self.legacy_options  # a key from before them: what it was embedded with
        self.config = build_config(self.Config, {**self.former_defaults, **written})
        # compared as JSON text, not as dicts: 1 == True == 1.0 in Python, so `contrast: 1` or
        # `R: 3.0` would pass for the canonical `true` and `3`: a second spelling of one config.
        # One exception: an integer for a float option, as plan writes a config object holding
        # 1 for 1.0 (keys made so before embed normalised such objects still read)
        expected = self.canonical_config(self.config)
        for k, v in written.items():
            if type(v) is int and type(expected.get(k)) is float and expected[k] == v:
                expected[k] = v
        if canonical_json(expected) != canonical_json(written):
            raise key_error(
                mark, "config", "is not complete and canonical (every option, as written)"
            )
        self.data_sources = tuple(data)
        self._datasets: dict[str, DataBundle] = {}  # dataset(): found and hashed once
        self.check_key(mark)
        self.check_ecc(mark)
        mask = mark.mask()
        self.key_mask = mask
        #: What is embedded: the payload XOR the key's mask (fair coins for any payload).
        self.target = torch.tensor(mark.bits, dtype=torch.long) ^ mask

    # ---- key fields ---------------------------------------------------------------------
    @classmethod
    def check_key(cls, mark: Mark) -> None:
        """Refuse a mark whose committed fields are malformed or could not have come from
        `plan` (each scheme checks its own `data`; NNMarkError naming the field)."""
        check_fields(mark, set())
        if mark.stored:
            raise key_error(mark, "stored", "must be empty: this scheme re-derives everything")

    @staticmethod
    def check_ecc(mark: Mark) -> None:
        """An error-correcting payload must re-derive from its message: the same code, the
        same bits (nnmark.ecc.encode_message is deterministic)."""
        ecc = mark.data.get("ecc")
        if ecc is None:
            return
        if mark.message is None:
            raise key_error(mark, "data.ecc", "is set without a message")
        from nnmark.ecc import encode_message

        try:
            bits, params = encode_message(mark.message, len(mark.bits))
        except NNMarkError:
            raise key_error(mark, "data.ecc", "does not fit the payload length") from None
        if params != ecc or bits != mark.bits:
            raise key_error(mark, "data.ecc", "does not re-derive from the message")

    @classmethod
    def config_data(cls, config: Any) -> list[DataBundle]:
        """Data sets the config names beyond the owner's (unrelated's source): what embedding
        binds the scheme with besides the training data."""
        return []

    def dataset(self, field_name: str = "dataset") -> DataBundle:
        """The data set the key names in `data[field_name]`, checked by its content hash."""
        if field_name in self._datasets:  # one search per bound scheme (one verification): a
            # trigger set asked 4 times, each hashing every data set given (0.45 s of 0.46)
            return self._datasets[field_name]
        ref = self.mark.data.get(field_name)
        if not isinstance(ref, dict) or set(ref) != {"name", "sha256"}:
            raise key_error(self.mark, f"data.{field_name}", "must be {name, sha256}")
        what = f"mark {self.mark.index} ({self.mark.scheme})"
        self._datasets[field_name] = resolve_data(ref, self.data_sources, what)
        return self._datasets[field_name]

    # ---- creating a mark --------------------------------------------------------------
    @classmethod
    def plan(
        cls,
        model: nn.Module,
        key: OwnerKey,
        config: Any,
        *,
        bits: int | None = None,
        payload: tuple[int, ...] | None = None,
        data: DataBundle | None = None,
    ) -> Mark:
        """The key entry of a new mark on `model`: layer, payload and config, validated.

        The default carries `bits` pseudo-random payload bits (or the given `payload`) and no
        layer; white-box schemes override it to choose and check their host layer, trigger-set
        schemes to name the data their triggers are drawn from.
        """
        n = len(payload) if payload is not None else (bits or 0)
        chosen = (
            payload
            if payload is not None
            else payload_bits(key.owner, key.nonce, n, len(key.marks))
        )
        return key.new_mark(cls.name, cls.canonical_config(config), None, chosen)

    #: True when the host fixes the payload length (one bit per marked entry: tartaglione,
    #: watermas); False when the owner chooses it (`bits`), up to `capacity`.
    fixed_length: ClassVar[bool] = False
    #: Whether `plan` reads `bits` (a payload's length): the trigger sets and the fragile mark
    #: carry no payload, and `embed` refuses bits given to them alone (they were ignored).
    takes_bits: ClassVar[bool] = True

    @classmethod
    def capacity(cls, model: nn.Module, config: Any, data: DataBundle | None = None) -> int | None:
        """The most payload bits this mark can carry on `model` (None: no host limit)."""
        return None

    @classmethod
    def encode_payload(
        cls,
        message: str,
        model: nn.Module,
        config: Any,
        *,
        bits: int | None = None,
        data: DataBundle | None = None,
    ) -> tuple[tuple[int, ...], dict[str, Any]]:
        """`message` as payload bits (a BCH codeword repeated to fill them; nnmark.ecc) and the
        code's parameters, sized to what the host carries.

        A host that fixes the length (`fixed_length`) is filled exactly; otherwise the mark
        carries `bits` bits, by default DEFAULT_MESSAGE_BITS or the host's capacity if smaller.
        """
        from nnmark.ecc import encode_message

        cap = cls.capacity(model, config, data)
        if cls.fixed_length:
            if cap is None:
                raise NNMarkError(f"{cls.name}: the host's payload length is unknown")
            size = cap
        else:
            size = (
                bits if bits is not None else min(DEFAULT_MESSAGE_BITS, cap or DEFAULT_MESSAGE_BITS)
            )
        return encode_message(message, size)

    # ---- embedding hooks: the defaults of nnmark.hooks.Hooks (all optional) ----------------

    # ---- verification -------------------------------------------------------------------
    def evidence(self, suspect: Suspect) -> Evidence:
        raise NotImplementedError

    def unreadable_verdict(self, reason: str, alpha: float = DEFAULT_ALPHA) -> Verdict:
        """not_found with `reason`, when the suspect cannot be read at all (bit-carrying shape;
        a scheme with another statistic overrides it)."""
        return bit_verdict(self, Evidence(reason=reason), alpha)

    # ---- realignment (verify --reference, nnmark/defenses/realign.py) ---------------------
    def blind_reference(self, reference: nn.Module) -> nn.Module:
        """`verify --reference MARKED`: the owner's marked reference (a copy: change it in
        place and return it) with everything this mark's statistic reads erased, so that
        matching a suspect to it cannot move the suspect towards the mark. Raise
        NotRealignable (one line: why) when no such copy exists; that is the default for a
        white-box scheme. (A reference that never saw the key, `--reference-unmarked`, needs
        no blinding: nothing in it depends on the key.)"""
        raise NotRealignable(
            f"{self.name}: realignment to the marked reference is not supported (no way to "
            "match a suspect to it without the mark's own evidence is known); realign to a "
            "model that never saw the key instead (--reference-unmarked)"
        )

    def best_p_value(self) -> float | None:
        """The smallest p-value `verify` can report for this mark (every piece of evidence
        right), or None where it is not computed here: a mark whose best is not below alpha
        can never be claimed, however well it is learned."""
        return None

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        """Bit-carrying default: the raw bits read against the masked payload, exact binomial
        p-value; the payload read back (bits XOR mask) is the verdict's message."""
        ev = self.evidence(as_suspect(suspect))
        return bit_verdict(self, ev, alpha)


def bit_verdict(scheme: Scheme, ev: Evidence, alpha: float, null: str = BIT_NULL) -> Verdict:
    """Verdict of a bit-carrying mark; a suspect that cannot carry the mark is not_found.

    `ev.bits` are the raw bits read (what was embedded: payload XOR mask). The payload read back
    is the verdict's `message`; with an error-correcting payload (`data["ecc"]`, nnmark.ecc)
    the decoded text is, and `details["ecc"]` says whether decoding succeeded. The p-value comes
    from the raw bit agreement, and where the scheme scores each bit (Evidence.scores) from the
    scores too: the smaller of the two p-values, doubled (SCORE_NULL).
    """
    mark = scheme.mark
    expected = tuple(int(b) for b in scheme.target.tolist())
    n = len(expected)
    if ev.bits is None:
        return Verdict(
            scheme.name,
            "not_found",
            "ber",
            1.0,
            1.0,
            alpha,
            n,
            null,
            ber=1.0,
            reason=ev.reason,
            details={**ev.details, "unread": True},  # shown as "not read", not as BER 1
        )
    b = ber(ev.bits, expected)
    matches = n - int(round(b * n))
    p = binomial_pvalue(matches, n)
    details = dict(ev.details)
    if ev.scores is not None and len(ev.scores) == n:
        z, p_scores = normal_pvalue([(2 * e - 1) * s for e, s in zip(expected, ev.scores)])
        details["scores"] = {"z": z, "p": p_scores, "p_bits": p}
        p, null = min(1.0, 2 * min(p, p_scores)), SCORE_NULL
    read = [int(x) ^ int(m) for x, m in zip(ev.bits, scheme.key_mask.tolist())]
    message: str | None = "".join(map(str, read))
    ecc = mark.data.get("ecc")
    if ecc:
        from nnmark.ecc import decode_bits

        result = decode_bits(read, ecc)
        details["ecc"] = {
            "decoded": result.ok,
            "corrected": result.corrected,
            "t": result.t,
            "copies": int(ecc.get("copies", 1)),
        }
        message = result.message
    return Verdict(
        scheme.name,
        "found" if decide(p, alpha) else "not_found",
        "ber",
        b,
        p,
        alpha,
        n,
        null,
        ber=b,
        message=message,
        reason=ev.reason,
        details=details,
    )
