"""Sharded safetensors checkpoints (`model.safetensors.index.json` + shards), read lazily.

The index's `weight_map` names the shard of every tensor; `tensor(name)` opens only that shard
with safetensors' `safe_open` and reads only that tensor, so verifying a white-box mark in a
checkpoint of many gigabytes reads the marked layer and the headers, nothing else. Every shard's
header must hold exactly the tensors the index places in it (a loader reads whole shards).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.io import plain_file_name, read_safetensors_header, unique_keys
from nnmark.suspect import Suspect

#: An index larger than this is refused before it is read (Hugging Face's indexes of models
#: with hundreds of billions of parameters are a few MB).
MAX_INDEX_BYTES = 64 << 20
#: Most tensors an index may place (each shard's header is bounded by nnmark.io.MAX_TENSORS
#: too): the tensor list is the other side's, and verify, inspect and the shard checks do work
#: per tensor (red team, session 27). An index of a mixture-of-experts model with hundreds of
#: experts per layer places on the order of 100,000.
MAX_INDEX_TENSORS = 1_000_000


def read_index(path: Path) -> dict[str, str]:
    """An index's weight_map (tensor name -> shard file beside it), every field checked and
    its size bounded before it is parsed."""
    if not path.is_file():
        raise NNMarkError(f"model file not found: {path}")
    size = path.stat().st_size
    if size > MAX_INDEX_BYTES:
        raise NNMarkError(f"{path}: {size:,} bytes is too large for a safetensors index")
    try:
        raw = path.read_bytes()
        if raw.count(b",") > 2 * MAX_INDEX_TENSORS:  # before parsing: an entry needs one
            raise NNMarkError(
                f"{path}: refused: the index places more than {MAX_INDEX_TENSORS:,} tensors"
            )
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys)
        weight_map = doc["weight_map"]
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError, RecursionError):
        raise NNMarkError(f"{path}: not a safetensors index (needs a weight_map)") from None
    if not isinstance(weight_map, dict) or not all(
        isinstance(name, str) and plain_file_name(shard) and str(shard).endswith(".safetensors")
        for name, shard in weight_map.items()
    ):
        raise NNMarkError(
            f"{path}: the weight_map must map tensor names to .safetensors files in "
            "the index's folder (no paths)"
        )
    if len(weight_map) > MAX_INDEX_TENSORS:
        raise NNMarkError(
            f"{path}: refused: the index places {len(weight_map):,} tensors, more than "
            f"{MAX_INDEX_TENSORS:,}"
        )
    return weight_map


def shard_files(path: Path) -> list[tuple[str, bool]]:
    """The shards an index names, each once, sorted; links followed (a Hugging Face cache's
    shards are links to its blobs): nnmark.suspect.SUSPECT_COMPANIONS."""
    return [(shard, True) for shard in sorted(set(read_index(path).values()))]


class ShardedSuspect(Suspect):
    def __init__(self, index_path: str | Path) -> None:
        self.path = Path(index_path)
        self.label = str(self.path)
        weight_map = read_index(self.path)
        self.weight_map: dict[str, str] = weight_map
        # a shard opened once (its header parsed once) and kept: reading and parsing the header
        # per tensor made N reads cost N x header (0.9 s per read for a shard of 100,000
        # tensors; red team, session 27); safe_open maps the file and holds no descriptor
        self._readers: dict[str, Any] = {}
        placed: dict[str, set[str]] = {}
        for name, shard in weight_map.items():
            placed.setdefault(shard, set()).add(name)
        for shard, names in placed.items():
            if not (self.path.parent / shard).is_file():
                raise NNMarkError(f"{self.path}: shard {shard} is missing")
            # every shard holds exactly what the index places in it: loaders that read whole
            # shards (accelerate, transformers) let a later shard's copy of a tensor win, so a
            # decoy under the marked layer's name, where the index points, was verified while
            # the model loaded the real one (red team, session 26)
            held = set(read_safetensors_header(self.path.parent / shard)[0])
            if held != names:
                odd = sorted(held ^ names)[0]
                raise NNMarkError(
                    f"{self.path}: shard {shard} {'holds' if odd in held else 'lacks'} "
                    f"{odd[:80]!r}, which the weight_map places "
                    f"{'elsewhere or nowhere' if odd in held else 'there'}: a loader reading "
                    "whole shards would load other tensors than the ones verified"
                )

    def tensor(self, name: str) -> torch.Tensor | None:
        shard = self.weight_map.get(name)
        if shard is None:
            return None
        from safetensors import safe_open

        path = self.path.parent / shard  # its header was checked complete when indexed
        try:
            if shard not in self._readers:
                self._readers[shard] = safe_open(str(path), framework="pt")
            return self._readers[shard].get_tensor(name)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise NNMarkError(f"{path}: cannot read tensor {name!r} ({exc})") from None

    def tensor_names(self) -> list[str]:
        return list(self.weight_map)

    def module(self) -> nn.Module:
        """Refused with what to give instead: an index names tensors, no architecture, so
        marks read from the model's answers (black-box) or activations have nothing to run."""
        raise NNMarkError(
            f"{self.label}: a sharded index is read by tensor name only, and this mark needs a "
            "runnable model: verify a .safetensors file with nnmark metadata, an .onnx export, "
            "or the served model with --remote"
        )
