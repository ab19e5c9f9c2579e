"""The one result type of every verification, white-box or black-box, alone or combined."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

VerdictWord = Literal["found", "not_found", "intact", "modified"]


@dataclass(frozen=True)
class Verdict:
    """What `verify` concludes, with the evidence a third party needs to check it.

    `verdict` is "found"/"not_found" for ownership marks and "intact"/"modified" for integrity
    marks; `null` says in a sentence what the p-value assumes.
    """

    scheme: str
    verdict: VerdictWord
    statistic_name: str
    statistic: float
    p_value: float
    alpha: float
    n: int
    null: str
    ber: float | None = None
    message: str | None = None
    queries: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    parts: tuple[Verdict, ...] = ()
    #: Expected CPU-years a search over keys needs to reach this p-value by chance (1 / p
    #: derivations of the key's memory-hard KDF), on the verifier's CPU.
    forgery_cost: float | None = None
    #: Which rule decided the claim (alpha, forgery cost, timestamp), in a sentence.
    claim_rule: str | None = None
    #: Who signed the key and when it provably existed ("none" without either).
    priority: str | None = None

    @property
    def positive(self) -> bool:
        """True when the owner's claim holds (found or intact)."""
        return self.verdict in ("found", "intact")

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 found / intact, 1 not_found / modified."""
        return 0 if self.positive else 1

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["parts"] = [p.to_dict() for p in self.parts]
        out: dict[str, Any] = _json_safe(d)
        return out


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
