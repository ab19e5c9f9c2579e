"""Data sources, one file each, registered by name; `load_data("NAME[:PATH]")` picks one.

Every source yields a `DataBundle` with fixed, seeded splits: `train`, `val`, `test` and a
disjoint `thief` split that the owner's training never reads (the attacker's own data).

>>> d = load_data("digits")
>>> d.task, d.num_classes, tuple(d.x.shape[1:]), sorted(d.splits)
('classification', 10, (1, 8, 8), ['test', 'thief', 'train', 'val'])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from nnmark.data.base import SPLITS, DataBundle, split_indices
from nnmark.errors import NNMarkError
from nnmark.registry import Registry

DATASETS: Registry[Callable[[str | None], DataBundle]] = Registry("dataset")


def load_data(spec: str) -> DataBundle:
    """Load `NAME` or `NAME:PATH` (e.g. `digits`, `mnist:../shared/data/mnist`)."""
    name, sep, path = spec.partition(":")
    loader = DATASETS.get(name.strip())
    return loader(path.strip() if sep else None)


def list_datasets() -> list[str]:
    """The names `--data` and `load_data` take (beside list_models, list_schemes, ...)."""
    return DATASETS.names()


#: Data sets that ship with nnmark: a verifier finds them without being told where.
BUILT_IN = ("digits",)

#: The shared data folder beside a checkout (`../shared/data`: MNIST, Fashion-MNIST, BBBC039;
#: its README names the files), where the presets, the tests and the benchmarks find the real
#: data sets; a user points `--data NAME:DIR` at any other copy.
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def resolve_data(ref: dict[str, str], provided: Sequence[DataBundle], what: str) -> DataBundle:
    """The data set a key names (`ref`: name and content hash) among `provided`, or a built-in
    one; a clear error names what is missing or different.

    Key inputs drawn from data (trigger sources, DeepSigns' class images) are re-derived at
    verification, so the verifier needs the very same data: the hash checks it.
    """
    want = ref.get("sha256")
    for bundle in provided:
        if bundle.content_hash(fresh=True) == want:  # as the data are now, not as first hashed
            return bundle
    if ref.get("name") in BUILT_IN:
        bundle = load_data(ref["name"])
        if bundle.content_hash() == want:
            return bundle
        raise NNMarkError(
            f"{what}: the built-in {ref['name']} data differ from the key's "
            f"(sha256 {want!s:.12} vs {bundle.content_hash():.12})"
        )
    kind = str(ref.get("name")).partition(":")[0]  # keys name a folder's kind, not its name
    same_name = [b for b in provided if b.name.partition(":")[0] == kind]
    if same_name:
        raise NNMarkError(
            f"{what}: --data {same_name[0].name} is not the data set the key was made with "
            f"(sha256 {same_name[0].content_hash():.12} vs the key's {want!s:.12})"
        )
    raise NNMarkError(
        f"{what} re-derives its key inputs from the data set {ref.get('name')!r} "
        f"(sha256 {want!s:.12}): pass it with --data NAME:PATH"
    )


from nnmark.data import cifar, digits, folder, idx, segmentation  # noqa: E402, F401

__all__ = [
    "BUILT_IN",
    "DATASETS",
    "SPLITS",
    "DataBundle",
    "NNMarkError",
    "load_data",
    "resolve_data",
    "split_indices",
]
