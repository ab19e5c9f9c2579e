"""Error-correcting payloads: a short text carried as a BCH codeword (bchlib, the Linux kernel's
BCH library), fitted to exactly the bits the host carries.

A payload is the UTF-8 text plus a CRC-16 (CCITT) of it, encoded with a binary BCH code. BCH
suits watermark channels, whose errors are independent bit flips (byte-wise Reed-Solomon does
not). Decoding corrects up to t flipped bits; beyond t the decoder either reports failure or,
rarely, lands on another codeword, which the CRC then rejects (a wrong payload slips through with
probability about 2^-16 of those rare miscorrections): the result is a failure, never a wrong
message. `benchmarks/ecc_trials.py` measures both sides.

Fitting the host: a mark carries `capacity` bits (Uchida and ST-DM: `--bits`; Tartaglione and
WaterMAS: one bit per marked entry, 897 on the digits CNN, 200k on a 20M-parameter MLP), but a
BCH codeword is at most 2^13 - 1 bits long and bchlib corrects at most t = 64. So the codeword
is repeated cyclically over all `capacity` bits and each codeword bit is decoded as the majority
of its copies (an odd number of them: with an even count the last copy is dropped, which is
what any tie-break amounts to) before BCH decoding: a concatenated repetition + BCH code. The
code length (hence the number of copies) is the one that tolerates the highest raw bit error
rate p*, i.e. whose expected number of wrong codeword bits after the majority vote,
n * P(majority of r copies wrong at p), reaches t at the largest p; with one copy that is t / n.
With a single copy the code is the strongest BCH code that fits, as before.

The p-value of the verdict still comes from the raw agreement of all `capacity` bits with the
(repeated) codeword, which is exact: the schemes' key-derived signs / dithers make an unmarked
model's bits fair coins whatever the payload.

>>> bits, params = encode_message("ACME", 128)
>>> len(bits), params["t"], params["n"], params["copies"]
(128, 11, 118, 1)
>>> flipped = [b ^ (i < 11) for i, b in enumerate(bits)]
>>> decode_bits(flipped, params)
DecodeResult(ok=True, message='ACME', corrected=11, t=11)
"""

from __future__ import annotations

import binascii
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nnmark.errors import NNMarkError

CRC_BYTES = 2
M_RANGE = range(5, 14)  # GF(2^m): full code lengths 31 .. 8191 bits
MAX_T = 64  # the largest t bchlib accepts
MAX_COPIES = 63  # codeword lengths tried: capacity // r for odd r up to this


@dataclass(frozen=True)
class DecodeResult:
    """Outcome of decoding: ok with the exact message, or a reported failure (message None)."""

    ok: bool
    message: str | None
    corrected: int
    t: int


def _bits(data: bytes, n: int) -> list[int]:
    return [(data[i // 8] >> (7 - i % 8)) & 1 for i in range(n)]


def _bytes(bits: Sequence[int], nbytes: int) -> bytearray:
    out = bytearray(nbytes)
    for i, b in enumerate(bits[: nbytes * 8]):
        if b:
            out[i // 8] |= 1 << (7 - i % 8)
    return out


def _code(m: int, t: int) -> Any:  # a bchlib.BCH (bchlib has no stubs)
    import bchlib

    return bchlib.BCH(t=t, m=m)


def _crc(raw: bytes) -> bytes:
    return binascii.crc_hqx(raw, 0xFFFF).to_bytes(CRC_BYTES, "big")


@functools.lru_cache(maxsize=256)
def _strongest(data_bits: int, capacity: int) -> tuple[int, int, int] | None:
    """(t, m, ecc_bits) of the largest t whose shortened codeword fits; smallest m on ties."""
    best: tuple[int, int, int] | None = None
    for m in M_RANGE:
        n_full = 2**m - 1
        room = min(capacity, n_full) - data_bits
        # a BCH code over GF(2^m) spends at most m parity bits per corrected bit; bchlib
        # accepts t <= MAX_T
        t = min(room // m, MAX_T)
        while t >= 1:
            try:
                ecc_bits = _code(m, t).ecc_bits
            except RuntimeError:  # bchlib rejects t too large for this m
                t -= 1
                continue
            if ecc_bits <= room:
                if best is None or t > best[0]:
                    best = (t, m, ecc_bits)
                break
            t -= 1
    return best


def bits_needed(message: str) -> int:
    """The fewest codeword bits that carry `message` with at least one correctable error."""
    data_bits = 8 * (len(message.encode("utf-8")) + CRC_BYTES)
    for m in M_RANGE:
        ecc_bits = _code(m, 1).ecc_bits
        if data_bits + ecc_bits <= 2**m - 1:
            return data_bits + ecc_bits
    raise NNMarkError(f"message of {data_bits // 8 - CRC_BYTES} bytes is too long for BCH here")


def _majority_error(p: float, r: int) -> float:
    """P(the majority of r independent copies is wrong) at raw bit error rate p, r odd."""
    return sum(math.comb(r, i) * p**i * (1 - p) ** (r - i) for i in range(r // 2 + 1, r + 1))


def tolerable_error_rate(n: int, t: int, copies: int) -> float:
    """The raw bit error rate p* at which n codeword bits, each the majority of `copies`
    copies, are wrong t times on average: the design margin of the concatenated code."""
    r = copies if copies % 2 else copies - 1
    lo, hi = 0.0, 0.5
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if n * _majority_error(mid, r) < t else (lo, mid)
    return lo


def encode_message(message: str, capacity: int) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Exactly `capacity` bits carrying `message`, and the code's parameters (kept in the key).

    A BCH codeword, repeated cyclically to fill `capacity` bits; the code length is chosen to
    tolerate the highest raw bit error rate (see the module docstring). A message that cannot
    fit with even t = 1 is an NNMarkError naming the bits it needs.
    """
    raw = message.encode("utf-8")
    data = raw + _crc(raw)
    data_bits = 8 * len(data)
    best: tuple[float, int, int, int] | None = None  # (p*, t, m, ecc_bits)
    tried: set[int] = set()
    for r in range(1, MAX_COPIES + 1, 2):
        room = min(capacity // r, 2 ** M_RANGE[-1] - 1)
        if room in tried or room < data_bits:
            continue
        tried.add(room)
        code = _strongest(data_bits, room)
        if code is None:
            continue
        t, m, ecc_bits = code
        score = tolerable_error_rate(data_bits + ecc_bits, t, capacity // (data_bits + ecc_bits))
        if best is None or score > best[0]:
            best = (score, t, m, ecc_bits)
    if best is None:
        raise NNMarkError(
            f"message of {len(raw)} bytes needs at least {bits_needed(message)} bits with error "
            f"correction (BCH t=1, CRC-16); the mark holds {capacity}"
        )
    score, t, m, ecc_bits = best
    ecc = _code(m, t).encode(bytearray(data))
    word = _bits(data, data_bits) + _bits(bytes(ecc), ecc_bits)
    n = len(word)
    bits = [word[i % n] for i in range(capacity)]
    return tuple(bits), {
        "code": "bch",
        "library": "bchlib",
        "m": m,
        "t": t,
        "n": n,  # codeword bits (shortened from 2^m - 1)
        "k": data_bits,  # information bits: message + CRC
        "message_bytes": len(raw),
        "crc": "crc16-ccitt",
        "data_bytes": len(data),
        "ecc_bits": ecc_bits,
        "length": capacity,  # bits carried: the codeword repeated cyclically
        "copies": capacity // n,  # copies every codeword bit has at least
        "tolerable_error_rate": round(score, 6),
    }


def majority(bits: Sequence[int], n: int) -> list[int]:
    """Codeword bit j = the majority of bits j, j + n, j + 2n, ... (an even count drops the
    last copy, so there is never a tie)."""
    ones = [0] * n
    count = [0] * n
    for i, b in enumerate(bits):
        ones[i % n] += int(b)
        count[i % n] += 1
    out = []
    for j in range(n):
        c, k = count[j], ones[j]
        if c % 2 == 0:  # drop the last copy
            k -= int(bits[j + (c - 1) * n])
            c -= 1
        out.append(int(2 * k > c))
    return out


def decode_bits(bits: Sequence[int], params: dict[str, Any]) -> DecodeResult:
    """Correct up to t flipped bits and return the exact message, or report failure.

    Repeated codewords are first reduced by majority vote (`majority`); `corrected` counts the
    BCH corrections after it. Failure (ok False, message None): more errors than the code can
    locate, a miscorrection caught by the CRC, or bits of the wrong length.
    """
    try:
        m, t = int(params["m"]), int(params["t"])
        nbytes, ecc_bits = int(params["data_bytes"]), int(params["ecc_bits"])
        n = 8 * nbytes + ecc_bits
        length = int(params.get("length", n))  # keys before repetition: the codeword alone
    except (KeyError, TypeError, ValueError):
        raise NNMarkError("key file: malformed error-correction parameters") from None
    if len(bits) != length or length < n:
        return DecodeResult(False, None, 0, t)
    bits = majority(bits, n) if length > n else list(bits)
    code = _code(m, t)
    data = _bytes(bits[: 8 * nbytes], nbytes)
    ecc = _bytes(list(bits[8 * nbytes :]), code.ecc_bytes)
    nerr = code.decode(data, ecc)
    if nerr < 0:
        return DecodeResult(False, None, 0, t)
    code.correct(data, ecc)
    raw, crc = bytes(data[:-CRC_BYTES]), bytes(data[-CRC_BYTES:])
    if _crc(raw) != crc:
        return DecodeResult(False, None, nerr, t)
    try:
        return DecodeResult(True, raw.decode("utf-8"), nerr, t)
    except UnicodeDecodeError:
        return DecodeResult(False, None, nerr, t)
