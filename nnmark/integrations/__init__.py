"""Where users already are: ONNX files (and, later, distributed and framework trainers).

Importing this package registers suspect loaders by file suffix (nnmark.suspect.load_suspect);
the heavy imports (onnx, onnxruntime) happen only when such a file is opened.
"""

from __future__ import annotations

from pathlib import Path

from nnmark.suspect import SUSPECT_LOADERS, Suspect


def _onnx(path: Path) -> Suspect:
    from nnmark.integrations.onnx import OnnxSuspect

    return OnnxSuspect(path)


SUSPECT_LOADERS.setdefault(".onnx", _onnx)
