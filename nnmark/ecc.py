"""Error-correcting payloads: a short text carried as a BCH codeword (bchlib, the Linux kernel's
BCH library), sized to what the host can hold.

A payload is UTF-8 text plus a CRC-16 (CCITT), encoded with the binary BCH code of the largest
correction capacity t whose codeword fits in `capacity` bits. BCH suits watermark channels,
whose errors are independent bit flips (byte-wise Reed-Solomon does not). Decoding corrects up
to t flipped bits; beyond t the decoder either reports failure or, rarely, lands on another
codeword, which the CRC then rejects (a wrong payload slips through with probability about
2^-16): `verify` reports a decode failure, never a wrong message.

>>> bits, params = encode_message("ACME", 128)
>>> len(bits) <= 128, params["t"]
(True, 11)
>>> flipped = [b ^ (i < 11) for i, b in enumerate(bits)]
>>> decode_bits(flipped, params).message
'ACME'
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nnmark.errors import NNMarkError


@dataclass(frozen=True)
class DecodeResult:
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


def encode_message(message: str, capacity: int) -> tuple[tuple[int, ...], dict[str, Any]]:
    """Codeword bits (at most `capacity`) and the code's parameters (kept in the key)."""
    raw = message.encode("utf-8")
    data = raw + binascii.crc_hqx(raw, 0xFFFF).to_bytes(2, "big")
    data_bits = 8 * len(data)
    best: tuple[int, int, int] | None = None  # (t, m, ecc_bits)
    for m in range(5, 14):
        n = 2**m - 1
        if data_bits > n:
            continue
        t_max = (min(capacity, n) - data_bits) // m
        for t in range(t_max, 0, -1):
            ecc_bits = _code(m, t).ecc_bits
            if data_bits + ecc_bits <= min(capacity, n):
                if best is None or t > best[0]:
                    best = (t, m, ecc_bits)
                break
    if best is None:
        need = data_bits + 5 * 1
        raise NNMarkError(
            f"message of {len(raw)} bytes needs at least {need} bits with error correction; "
            f"the mark holds {capacity}"
        )
    t, m, ecc_bits = best
    ecc = _code(m, t).encode(bytearray(data))
    bits = _bits(data, data_bits) + _bits(bytes(ecc), ecc_bits)
    return tuple(bits), {
        "code": "bch",
        "m": m,
        "t": t,
        "data_bytes": len(data),
        "ecc_bits": ecc_bits,
    }


def decode_bits(bits: Sequence[int], params: dict[str, Any]) -> DecodeResult:
    """Correct up to t flipped bits and return the message, or report failure."""
    m, t, nbytes, ecc_bits = params["m"], params["t"], params["data_bytes"], params["ecc_bits"]
    code = _code(m, t)
    data = _bytes(bits[: 8 * nbytes], nbytes)
    ecc = _bytes(list(bits[8 * nbytes : 8 * nbytes + ecc_bits]), code.ecc_bytes)
    nerr = code.decode(data, ecc)
    if nerr < 0:
        return DecodeResult(False, None, 0, t)
    code.correct(data, ecc)
    raw, crc = bytes(data[:-2]), int.from_bytes(data[-2:], "big")
    if binascii.crc_hqx(raw, 0xFFFF) != crc:
        return DecodeResult(False, None, nerr, t)
    try:
        return DecodeResult(True, raw.decode("utf-8"), nerr, t)
    except UnicodeDecodeError:
        return DecodeResult(False, None, nerr, t)
