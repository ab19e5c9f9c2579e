"""The scheme protocol: five optional embedding hooks, then evidence and a verdict.

A scheme instance is bound to one `Mark` of an owner key (its config, layer and payload) and
derives every secret from `mark.seed(purpose)`. The seeds' schemes change training at different
points, so every hook has a no-op default and a scheme fills only what it needs:

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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from nnmark.config import build_config, config_to_dict
from nnmark.data.base import DataBundle
from nnmark.errors import NNMarkError
from nnmark.keys import Mark, OwnerKey, payload_bits
from nnmark.stats import DEFAULT_ALPHA, ber, binomial_pvalue, decide
from nnmark.suspect import Suspect, as_suspect
from nnmark.verdict import Verdict

Batch = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]

#: Payload bits of a text message when neither --bits nor the host fixes them.
DEFAULT_MESSAGE_BITS = 255

BIT_NULL = (
    "an unmarked model matches each key bit independently with probability 1/2 "
    "(exact binomial upper tail of the matching bits)"
)


@dataclass(frozen=True)
class Evidence:
    """What a scheme reads from a suspect: bits, answers or hashes, or why it could not."""

    bits: tuple[int, ...] | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def plain_step(
    model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
) -> float:
    """One ordinary optimiser step on loss_fn (task loss plus every scheme's penalty)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DistributedDataParallel (or similar) wrapper."""
    return getattr(model, "module", model)


class Scheme:
    """Base class of every watermarking scheme; subclasses live one per file in this package."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    kind: ClassVar[Literal["whitebox", "blackbox", "integrity"]] = "whitebox"
    paper: ClassVar[str] = ""
    config: Any
    #: Calibration of this mark on unmarked models (key.derived["calibration"]), set by verify.
    calibration: dict[str, Any] | None = None

    def __init__(self, mark: Mark) -> None:
        self.mark = mark
        self.config = build_config(self.Config, mark.config)

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
        schemes to draw their triggers (from `data`, the owner's training data).
        """
        n = len(payload) if payload is not None else (bits or 0)
        chosen = (
            payload
            if payload is not None
            else payload_bits(key.owner, key.nonce, n, len(key.marks))
        )
        return key.new_mark(cls.name, config_to_dict(config), None, chosen)

    #: True when the host fixes the payload length (one bit per marked entry: tartaglione,
    #: watermas); False when the owner chooses it (`bits`), up to `capacity`.
    fixed_length: ClassVar[bool] = False

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

    # ---- embedding hooks (all optional) -------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def batches(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        return batches

    def penalty(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return torch.zeros(())

    def step(
        self, model: nn.Module, batch: Batch, loss_fn: LossFn, optimizer: torch.optim.Optimizer
    ) -> float:
        return plain_step(model, batch, loss_fn, optimizer)

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    # ---- verification -------------------------------------------------------------------
    def evidence(self, suspect: Suspect) -> Evidence:
        raise NotImplementedError

    def verify(self, suspect: Suspect | nn.Module, alpha: float = DEFAULT_ALPHA) -> Verdict:
        """Bit-carrying default: BER against the payload, exact binomial p-value."""
        ev = self.evidence(as_suspect(suspect))
        return bit_verdict(self.name, self.mark.bits, ev, alpha, self.mark.data.get("ecc"))


def bit_verdict(
    scheme: str,
    expected: tuple[int, ...],
    ev: Evidence,
    alpha: float,
    ecc: dict[str, Any] | None = None,
) -> Verdict:
    """Verdict of a bit-carrying mark; a suspect that cannot carry the mark is not_found.

    With an error-correcting payload (`ecc`, see nnmark.ecc) the decoded text becomes the
    verdict's `message` and `details["ecc"]` says whether decoding succeeded; the p-value still
    comes from the raw bit agreement.
    """
    n = len(expected)
    if ev.bits is None:
        return Verdict(
            scheme,
            "not_found",
            "ber",
            1.0,
            1.0,
            alpha,
            n,
            BIT_NULL,
            ber=1.0,
            reason=ev.reason,
            details=ev.details,
        )
    b = ber(ev.bits, expected)
    matches = n - int(round(b * n))
    p = binomial_pvalue(matches, n)
    details = dict(ev.details)
    message: str | None = "".join(map(str, ev.bits))
    if ecc:
        from nnmark.ecc import decode_bits

        result = decode_bits(ev.bits, ecc)
        details["ecc"] = {
            "decoded": result.ok,
            "corrected": result.corrected,
            "t": result.t,
            "copies": int(ecc.get("copies", 1)),
        }
        message = result.message
    return Verdict(
        scheme,
        "found" if decide(p, alpha) else "not_found",
        "ber",
        b,
        p,
        alpha,
        n,
        BIT_NULL,
        ber=b,
        message=message,
        reason=ev.reason,
        details=details,
    )
