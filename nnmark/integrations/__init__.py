"""Where users already are: DDP, Lightning, Hugging Face, ONNX files, sharded checkpoints.

- `nnmark.integrations.ddp`: the schemes' hooks under DistributedDataParallel (`fit_ddp`,
  `SchemeHooks` for a loop of your own).
- `nnmark.integrations.lightning`: `Watermarked`, a wrapper for a LightningModule.
- `nnmark.integrations.hf`: `WatermarkTrainer`, a `transformers.Trainer` subclass.
- `nnmark.integrations.onnx`: ONNX export keeping the marked weights; ONNX files as suspects.
- `nnmark.integrations.sharded`: `model.safetensors.index.json` checkpoints read lazily.
- `nnmark.integrations.support`: which schemes Lightning and the HF Trainer run, without them.

Importing this package only registers suspect loaders by file suffix (for
nnmark.suspect.load_suspect); the heavy imports (onnx, onnxruntime, lightning, transformers)
happen only when such a file is opened or such a module is imported. See docs/integrations.md.
"""

from __future__ import annotations

from pathlib import Path

from nnmark.suspect import SUSPECT_COMPANIONS, SUSPECT_LOADERS, Suspect


def _onnx(path: Path) -> Suspect:
    from nnmark.integrations.onnx import OnnxSuspect

    return OnnxSuspect(path)


def _index(path: Path) -> Suspect:
    from nnmark.errors import NNMarkError
    from nnmark.integrations.sharded import ShardedSuspect

    if not path.name.endswith(".safetensors.index.json"):
        raise NNMarkError(f"{path}: a .json suspect must be a *.safetensors.index.json index")
    return ShardedSuspect(path)


def _onnx_files(path: Path) -> list[tuple[str, bool]]:
    from nnmark.integrations.onnx import external_files

    return external_files(path)


def _index_files(path: Path) -> list[tuple[str, bool]]:
    from nnmark.integrations.sharded import shard_files

    return shard_files(path) if path.name.endswith(".safetensors.index.json") else []


SUSPECT_LOADERS.register(".onnx")(_onnx)
SUSPECT_LOADERS.register(".json")(_index)
SUSPECT_COMPANIONS.register(".onnx")(_onnx_files)
SUSPECT_COMPANIONS.register(".json")(_index_files)
