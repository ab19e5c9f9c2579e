"""Sharded safetensors checkpoints (`model.safetensors.index.json` + shards), read lazily.

The index's `weight_map` names the shard of every tensor; `tensor(name)` opens only that shard
with safetensors' `safe_open` and reads only that tensor, so verifying a white-box mark in a
checkpoint of many gigabytes reads the marked layer and the headers, nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nnmark.errors import NNMarkError
from nnmark.io import read_safetensors_header
from nnmark.suspect import Suspect


class ShardedSuspect(Suspect):
    def __init__(self, index_path: str | Path) -> None:
        self.path = Path(index_path)
        self.label = str(self.path)
        try:
            doc = json.loads(self.path.read_text())
            self.weight_map: dict[str, str] = dict(doc["weight_map"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise NNMarkError(
                f"{self.path}: not a safetensors index (needs a weight_map)"
            ) from None
        for shard in set(self.weight_map.values()):
            if not (self.path.parent / shard).is_file():
                raise NNMarkError(f"{self.path}: shard {shard} is missing")

    def tensor(self, name: str) -> torch.Tensor | None:
        shard = self.weight_map.get(name)
        if shard is None:
            return None
        from safetensors import safe_open

        path = self.path.parent / shard
        read_safetensors_header(path)  # a truncated shard is a clear error, not a crash
        try:
            with safe_open(str(path), framework="pt") as fh:
                return fh.get_tensor(name)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise NNMarkError(f"{path}: cannot read tensor {name!r} ({exc})") from None

    def tensor_names(self) -> list[str]:
        return list(self.weight_map)
