"""Error-correcting payloads: a short text carried as a BCH codeword (bchlib, the Linux kernel's
BCH library), sized to what the host can hold.

A payload is the UTF-8 text plus a CRC-16 (CCITT) of it, encoded with the binary BCH code of the
largest correction capacity t whose (shortened) codeword fits in `capacity` bits. BCH suits
watermark channels, whose errors are independent bit flips (byte-wise Reed-Solomon does not).
Decoding corrects up to t flipped bits; beyond t the decoder either reports failure or, rarely,
lands on another codeword, which the CRC then rejects (a wrong payload slips through with
probability about 2^-16 of those rare miscorrections): the result is a failure, never a wrong
message. `benchmarks/ecc_trials.py` measures both sides.

>>> bits, params = encode_message("ACME", 128)
>>> len(bits) <= 128, params["t"], params["n"]
(True, 11, 118)
>>> flipped = [b ^ (i < 11) for i, b in enumerate(bits)]
>>> decode_bits(flipped, params)
DecodeResult(ok=True, message='ACME', corrected=11, t=11)
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nnmark.errors import NNMarkError

CRC_BYTES = 2
M_RANGE = range(5, 14)  # GF(2^m): full code lengths 31 .. 8191 bits


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


def _code(m: int, t: int):  # type: ignore[no-untyped-def]
    import bchlib

    return bchlib.BCH(t=t, m=m)


def _crc(raw: bytes) -> bytes:
    return binascii.crc_hqx(raw, 0xFFFF).to_bytes(CRC_BYTES, "big")


def _strongest(data_bits: int, capacity: int) -> tuple[int, int, int] | None:
    """(t, m, ecc_bits) of the largest t whose shortened codeword fits; smallest m on ties."""
    best: tuple[int, int, int] | None = None
    for m in M_RANGE:
        n_full = 2**m - 1
        room = min(capacity, n_full) - data_bits
        t = room // m  # a BCH code over GF(2^m) spends at most m parity bits per corrected bit
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


def encode_message(message: str, capacity: int) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Codeword bits (at most `capacity`) and the code's parameters (kept in the key).

    The strongest code (largest t) that fits is chosen; a message that cannot fit with even
    t = 1 is an NNMarkError naming the bits it needs.
    """
    raw = message.encode("utf-8")
    data = raw + _crc(raw)
    data_bits = 8 * len(data)
    best = _strongest(data_bits, capacity)
    if best is None:
        raise NNMarkError(
            f"message of {len(raw)} bytes needs at least {bits_needed(message)} bits with error "
            f"correction (BCH t=1, CRC-16); the mark holds {capacity}"
        )
    t, m, ecc_bits = best
    ecc = _code(m, t).encode(bytearray(data))
    bits = _bits(data, data_bits) + _bits(bytes(ecc), ecc_bits)
    return tuple(bits), {
        "code": "bch",
        "library": "bchlib",
        "m": m,
        "t": t,
        "n": data_bits + ecc_bits,  # codeword bits (shortened from 2^m - 1)
        "k": data_bits,  # information bits: message + CRC
        "message_bytes": len(raw),
        "crc": "crc16-ccitt",
        "data_bytes": len(data),
        "ecc_bits": ecc_bits,
    }


def decode_bits(bits: Sequence[int], params: dict[str, Any]) -> DecodeResult:
    """Correct up to t flipped bits and return the exact message, or report failure.

    Failure (ok False, message None): more errors than the code can locate, a miscorrection
    caught by the CRC, or bits of the wrong length.
    """
    try:
        m, t = int(params["m"]), int(params["t"])
        nbytes, ecc_bits = int(params["data_bytes"]), int(params["ecc_bits"])
    except (KeyError, TypeError, ValueError):
        raise NNMarkError("key file: malformed error-correction parameters") from None
    if len(bits) != 8 * nbytes + ecc_bits:
        return DecodeResult(False, None, 0, t)
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
