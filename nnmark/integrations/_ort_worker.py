"""Runs a suspect's ONNX graph in a child process under a memory limit (run as a script).

An ONNX file is the other side's program: onnxruntime would build a 16 GiB ConstantOfShape or
loop 2^40 times if the graph says so. This script imports only numpy and onnxruntime, lowers
its own address-space limit before onnxruntime is loaded, and answers framed requests on its
standard streams; the parent (`nnmark.integrations.onnx.OrtWorker`) kills it past a deadline.

Frames: 8-byte little-endian length, then the bytes. Requests are `.npy` arrays (no pickle);
answers are one status byte (0: `.npy` array follows; 1: an error message follows). The first
answer, before any request, says whether the session could be built.
"""

from __future__ import annotations

import io
import struct
import sys
from typing import BinaryIO


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if data is None or len(data) < n:
        raise EOFError
    return data


def _answer(out: BinaryIO, status: int, body: bytes) -> None:
    out.write(struct.pack("<Q", 1 + len(body)) + bytes([status]) + body)
    out.flush()


def main(path: str, memory: int) -> None:
    import resource

    # never above an inherited hard limit (raising it is refused: the worker died at start)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        memory = min(memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    out = sys.stdout.buffer
    try:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        _answer(out, 1, f"{type(exc).__name__}: {exc}".encode()[:2000])
        return
    _answer(out, 0, b"")
    stdin = sys.stdin.buffer
    while True:
        try:
            (n,) = struct.unpack("<Q", _read(stdin, 8))
            x = np.load(io.BytesIO(_read(stdin, n)), allow_pickle=False)
        except EOFError:
            return
        try:
            y = np.ascontiguousarray(session.run(None, {name: x})[0])
            buf = io.BytesIO()
            np.save(buf, y, allow_pickle=False)
            _answer(out, 0, buf.getvalue())
        except BaseException as exc:  # noqa: BLE001 - MemoryError, ORT's errors: one line back
            _answer(out, 1, f"{type(exc).__name__}: {exc}".encode()[:2000])


if __name__ == "__main__":
    if len(sys.argv) > 3:  # the parent's import path: `-I` drops PYTHONPATH and user packages
        import json

        sys.path[:] = json.loads(sys.argv[3])
    main(sys.argv[1], int(sys.argv[2]))
