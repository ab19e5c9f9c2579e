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


def _index(path: Path) -> Suspect:
    from nnmark.errors import NNMarkError
    from nnmark.integrations.sharded import ShardedSuspect

    if not path.name.endswith(".safetensors.index.json"):
        raise NNMarkError(f"{path}: a .json suspect must be a *.safetensors.index.json index")
    return ShardedSuspect(path)


SUSPECT_LOADERS.setdefault(".onnx", _onnx)
SUSPECT_LOADERS.setdefault(".json", _index)
