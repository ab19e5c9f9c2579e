"""Trained models (and their keys) cached under a name made from what produced them.

The name is a hash of the recipe (data, architecture, scheme and options, seed, epochs: whatever
the caller says makes the model) and the package version: a rerun, or another grid or benchmark
sharing the recipe, trains the model once, and a new release trains it again. Source bytes are
not hashed: editing a comment must not throw away every cached model (nor let the bench's
results, which are reused by cell, and its models disagree). During development, a new results
folder (or `--cache`) is a fresh start.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnmark.bench.store import content_id

if TYPE_CHECKING:
    from torch import nn

    from nnmark.data import DataBundle
    from nnmark.keys import OwnerKey

__all__ = ["ModelCache", "model_id"]

Made = tuple["nn.Module", "OwnerKey | None", "DataBundle"]


def model_id(label: str, recipe: Any) -> str:
    """`label-<hash of recipe and version>`: readable in a listing, unique per recipe."""
    from nnmark._version import __version__

    return f"{label.replace('+', '_')}-{content_id([recipe, __version__])}"


class ModelCache:
    """One folder of `<id>.safetensors` models and `<id>.nnkey` keys."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def model_path(self, ident: str) -> Path:
        return self.root / f"{ident}.safetensors"

    def key_path(self, ident: str) -> Path:
        return self.root / f"{ident}.nnkey"

    def has(self, ident: str, keyed: bool) -> bool:
        """The model (and, when `keyed`, its key in today's key format) is cached. A key of
        another format (nnmark.keys.REFUSED_VERSIONS: version 2 before session 31, under the
        same package version) would be refused on loading: its model is trained again."""
        if not self.model_path(ident).exists():
            return False
        return not keyed or self._current_key(ident)

    def _current_key(self, ident: str) -> bool:
        from nnmark.keys import VERSION

        try:
            return json.loads(self.key_path(ident).read_text()).get("version") == VERSION
        except (OSError, ValueError, AttributeError):  # absent, torn, not a key object
            return False

    def put(self, ident: str, model: nn.Module, data: DataBundle, key: OwnerKey | None) -> None:
        """Store a model (with the data it was trained on, for its metadata) and its key; the
        key is written last, so a half-stored pair reads as absent."""
        from nnmark.api import model_info
        from nnmark.io import save_model

        self.root.mkdir(parents=True, exist_ok=True)
        save_model(model, model_info(model, data), self.model_path(ident))
        if key is not None:
            key.save(self.key_path(ident))

    def load(self, ident: str) -> tuple[nn.Module, OwnerKey | None]:
        from nnmark.io import load_model
        from nnmark.keys import OwnerKey

        model, _ = load_model(self.model_path(ident))
        path = self.key_path(ident)
        return model.eval(), OwnerKey.load(path) if path.exists() else None

    def get(
        self, label: str, recipe: Any, make: Callable[[], Made], keyed: bool = False
    ) -> tuple[nn.Module, OwnerKey | None]:
        """The cached model of `recipe`, or `make()` (model, key or None, data) stored first."""
        ident = model_id(label, recipe)
        if not self.has(ident, keyed):
            model, key, data = make()
            self.put(ident, model, data, key)
        return self.load(ident)
