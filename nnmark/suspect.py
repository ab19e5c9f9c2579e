"""What verification reads: a suspect model, however the owner can reach it.

White-box schemes read named tensors (`tensor`), which a model file serves lazily (only the
tensors the key names are read from disk); activation schemes need the module; black-box
schemes only ever call `predict`. A served model (remote) has no tensors at all.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nnmark.device import device_of
from nnmark.errors import KeyInputsMismatch, NNMarkError
from nnmark.io import (
    ModelInfo,
    check_real,
    load_model,
    load_state_dict,
    module_identity,
    read_safetensors_header,
    unknown_architecture,
    zoo_identity,
)
from nnmark.registry import Registry

if TYPE_CHECKING:
    from nnmark.keys import Mark


class Suspect:
    """The base: everything unavailable unless a subclass provides it."""

    label: str = "suspect"
    info: ModelInfo | None = None
    #: Query budget for black-box verification (None: unlimited). Black-box schemes stop
    #: querying when it is spent and report the queries they used.
    max_queries: int | None = None

    #: Why no mark can be read from this suspect at all (e.g. it could not be realigned to the
    #: owner's reference); nnmark.api.verify then gives not_found with it, without the scheme.
    unreadable: str | None = None
    #: Why this view is the key holder's choice, made after the key's secrets (realigned to the
    #: marked reference, which they could have built for this suspect): what a mark reads on it
    #: is no evidence (nnmark.api.inadmissible). None: the view is not theirs to choose.
    chosen_after_secrets: str | None = None

    def for_mark(self, mark: Mark) -> Suspect:
        """What `mark` reads: this suspect, or a view of it (a realigned suspect gives white-box
        marks its realigned model and black-box ones the suspect as given)."""
        return self

    def readings(self, mark: Mark) -> list[Suspect]:
        """The views `mark` may be read from (`for_mark` first): `verify` reads each and claims
        on the smallest p times their number (Bonferroni), so a second way of reading a suspect
        (realigned, and as given) never loses what one of them shows nor adds a free look."""
        return [self.for_mark(mark)]

    def with_budget(self, left: int | None) -> Suspect:
        """This suspect with `left` queries to spend (None: unlimited): the marks of one key
        share the verifier's budget, each given what the ones before it left."""
        if left is None:
            return self
        view = copy.copy(self)
        view.max_queries = max(left, 0)
        return view

    #: Why what runs this suspect's tensors is its own and no key describes it (an ONNX file's
    #: graph): an integrity mark then certifies the tensors only, never the model.
    own_graph: str | None = None

    def architecture(self) -> str | None:
        """The zoo architecture that runs this suspect's tensors (io.zoo_identity), as the
        suspect states it; None when it names none (a user's own class, a bare state dict)."""
        return None

    def tensor(self, name: str) -> torch.Tensor | None:
        """A named parameter or buffer, or None if the suspect has no such tensor."""
        return None

    def tensor_names(self) -> list[str]:
        return []

    def module(self) -> nn.Module:
        raise NNMarkError(f"{self.label}: this scheme needs the model itself (white-box access)")

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The model's outputs (logits, or whatever the API returns) for a batch of inputs,
        run where the model is and returned on the CPU (verdicts do not depend on the device)."""
        model = self.module()
        try:
            return model(x.to(device_of(model))).cpu()
        except torch.OutOfMemoryError:
            raise  # the device's memory, not the key's inputs
        except RuntimeError as exc:  # e.g. a segmentation key's masks sent to a classifier
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise KeyInputsMismatch(
                f"{self.label}: the model does not run on the key's inputs of shape "
                f"{list(x.shape)} ({first})"
            ) from None

    @property
    def white_box(self) -> bool:
        return True


def _arch_words(name: str, structural: dict[str, Any]) -> str:
    """`resnet20 (blocks=3, shortcut=A)`, or the name alone when nothing sets its layers."""
    args = ", ".join(f"{k}={v}" for k, v in sorted(structural.items()))
    return f"{name} ({args})" if args else name


def structure(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """What of a zoo architecture's kwargs sets which layers exist and where (depth, blocks,
    shortcut), defaults filled in: widths aside, two models agreeing here name the same layers
    for the same places."""
    import inspect

    from nnmark.models import MODELS

    try:
        params = inspect.signature(MODELS.get(name)).parameters
    except (NNMarkError, KeyError, TypeError, ValueError):
        return {}
    out = {k: p.default for k, p in params.items() if k in STRUCTURE_KWARGS}
    out.update({k: v for k, v in kwargs.items() if k in STRUCTURE_KWARGS})
    return out


#: The kwargs of a zoo architecture that place its layers (`structure`).
STRUCTURE_KWARGS = ("depth", "blocks", "shortcut")


def _beyond(names: Sequence[str], expected: frozenset[str]) -> list[str]:
    """The tensor names an architecture's own (`expected`) does not hold, sorted."""
    return sorted(n for n in names if n not in expected and not n.endswith("num_batches_tracked"))


def _beyond_own_arch(mark: Mark, info: ModelInfo | None, names: Sequence[str]) -> str | None:
    """Why a mark whose key commits no architecture is not read: the suspect declares a zoo
    architecture and holds tensors it has not. Such a tensor is never run (the model loads and
    answers without it), and a key naming it was found at p 6e-104 on a never-marked cnn file
    with one such tensor added (review, session 34)."""
    from nnmark.models import zoo_names

    if info is None or not info.arch:
        return None
    try:
        expected = zoo_names(info.arch, dict(info.arch_kwargs))
    except NNMarkError:  # not a zoo architecture: nothing to compare with
        return None
    extra = _beyond(names, expected)
    if extra:
        return (
            f"the suspect holds tensors its own architecture ({info.arch}) has not (e.g. "
            f"{', '.join(extra[:3])}), which it never runs, and the key's {mark.scheme} mark "
            "commits to no architecture: not read"
        )
    return None


def arch_mismatch(mark: Mark, info: ModelInfo | None, names: Sequence[str]) -> str | None:
    """Why a white-box `mark` is not read from a suspect described by `info` holding tensors
    `names`, or None: its key commits to the architecture the mark lives in (OwnerKey.arch),
    and a suspect of another architecture names its layers for other places (a resnet20's
    marked block moved into a resnet32, the name the key reads holding noise, read not_found:
    red team, session 27). The tensors' names are compared too, since a file's metadata is
    whatever its maker wrote. For white-box marks only (the caller knows the scheme)."""
    from nnmark.models import zoo_names

    if mark.arch is None:  # a key that commits none (hand-written): the suspect's own, then
        return _beyond_own_arch(mark, info, names)
    if "tensors" in mark.arch:  # a module from outside the zoo (OwnerKey.with_module)
        return _module_mismatch(mark, names)
    name, kwargs = mark.arch["name"], mark.arch["kwargs"]
    want = (name, structure(name, kwargs))
    if info is not None:
        got = (info.arch, structure(info.arch, dict(info.arch_kwargs)))
        if want != got:
            return (
                f"the suspect's architecture is {_arch_words(info.arch, got[1])}, and the key's "
                f"{mark.scheme} mark lives in {_arch_words(name, want[1])}: its layers are named "
                "for other places, so the mark is not read by name (black-box marks of the key, "
                "if any, still are)"
            )
    try:
        expected = zoo_names(name, kwargs)
    except NNMarkError as exc:
        return f"the key's architecture cannot be built ({exc})"
    # fewer is fine (a user's own class holding the marked layer reads as documented); more
    # is another architecture, whose names need not mean the key's places
    extra = _beyond(names, expected)
    if extra:
        return (
            f"the suspect holds tensors a {name} {want[1]}, the architecture the key's "
            f"{mark.scheme} mark lives in, has not (e.g. {', '.join(extra[:3])}): its layers are "
            "named for other places, so the mark is not read by name (the black-box marks still "
            "are)"
        )
    return None


def _module_mismatch(mark: Mark, names: Sequence[str]) -> str | None:
    """The tensors the key commits to for a model from outside the zoo: fewer is fine, others
    are another architecture. A suspect's metadata names a zoo architecture at most, so only
    its tensors are compared."""
    committed = frozenset(mark.arch["tensors"] if mark.arch else ())
    extra = sorted(n for n in names if n not in committed and not n.endswith("num_batches_tracked"))
    if not extra:
        return None
    return (
        f"the suspect holds tensors the model the key's {mark.scheme} mark lives in (a module of "
        f"{len(committed):,} tensors) has not (e.g. {', '.join(n[:80] for n in extra[:3])}): its layers "
        "are named for other places, so the mark is not read by name (the black-box marks still "
        "are)"
    )


class UnreadableSuspect(Suspect):
    """Nothing to read, and why: nnmark.api.verify turns it into not_found with the reason
    (a realigned suspect that could not be matched; an ONNX graph that does not run the
    weights a white-box mark would read)."""

    def __init__(self, label: str, reason: str) -> None:
        self.label = label
        self.unreadable = reason


class ModuleSuspect(Suspect):
    """A live `nn.Module` (a user's own class works too)."""

    def __init__(self, model: nn.Module, info: ModelInfo | None = None, label: str = "model"):
        self.model = model
        self.info = info
        self.label = label
        # read once, shared with the copies `with_budget` makes (one per mark of a key)
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    def _sd(self) -> dict[str, torch.Tensor]:
        if "state" not in self._cache:
            inner = getattr(self.model, "module", self.model)  # unwrap DDP
            # white-box evidence is read from CPU copies: the same bits whatever the device
            self._cache["state"] = {k: v.detach().cpu() for k, v in inner.state_dict().items()}
        return self._cache["state"]

    def architecture(self) -> str | None:
        own = module_identity(self.model)
        if own is None and self.info is not None:
            return zoo_identity(self.info.arch, self.info.arch_kwargs)
        return own

    def tensor(self, name: str) -> torch.Tensor | None:
        return self._sd().get(name)

    def tensor_names(self) -> list[str]:
        return list(self._sd())

    def module(self) -> nn.Module:
        self.model.eval()
        return self.model


class FileSuspect(Suspect):
    """A model file on disk; safetensors tensors are read one at a time, lazily."""

    def __init__(
        self,
        path: str | Path,
        info: ModelInfo | None = None,
        max_params: int | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_params = max_params
        self.device = device or torch.device("cpu")  # where queries to the model run
        self.label = str(self.path)
        # built once, shared with the copies `with_budget` makes (one per mark of a key)
        self._built: dict[str, Any] = {}
        self._state: dict[str, torch.Tensor] | None = None
        if self.path.suffix == ".safetensors":
            self._header, meta = read_safetensors_header(self.path)
            self.info = info or ModelInfo.from_metadata(meta, self.label)
        else:
            self._state, found = load_state_dict(self.path)
            self._header = {}
            self.info = info or found
        if self.info is not None:
            from nnmark.models import MODELS

            if self.info.arch not in MODELS:
                raise NNMarkError(
                    f"{self.path}: metadata names an unknown architecture {self.info.arch!r}"
                )

    def architecture(self) -> str | None:
        return zoo_identity(self.info.arch, self.info.arch_kwargs) if self.info else None

    def tensor(self, name: str) -> torch.Tensor | None:
        if self._state is not None:
            return self._state.get(name)
        if name not in self._header:
            return None
        from safetensors import safe_open

        try:
            # opened once (its header parsed once), shared with the budget copies: opening
            # the file per tensor made reading N tensors O(N x header) (20,000 tiny tensors:
            # over two minutes for `inspect`)
            if "reader" not in self._built:
                self._built["reader"] = safe_open(str(self.path), framework="pt")
            value = self._built["reader"].get_tensor(name)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise NNMarkError(f"{self.path}: cannot read tensor {name!r} ({exc})") from None
        return check_real(self.path, name, value)

    def tensor_names(self) -> list[str]:
        return list(self._state) if self._state is not None else list(self._header)

    def module(self) -> nn.Module:
        if "module" not in self._built:
            if self.info is None:
                raise unknown_architecture(self.path)
            module, _ = load_model(self.path, self.info, self.max_params)
            self._built["module"] = module.to(self.device)
        return self._built["module"]


#: Free space a private copy of a suspect leaves on its disk.
COPY_MARGIN = 256 << 20
#: A suspect file larger than this with less than 1/64 of it on disk is refused as sparse.
SPARSE_FLOOR = 64 << 20


class SuspectCopy:
    """A suspect file and the files it names (SUSPECT_COMPANIONS: a sharded model's shards,
    an ONNX file's external data), each read once, hashed as it is copied into a private
    folder, from which verification then reads: the SHA-256 a verdict names is of the very
    bytes it read. Checking the files in place was not enough (review, session 35): a forger
    who controls the suspect's folder showed verify its own marked copy and the accused's
    file to the digest, by swapping the file, a link to it, or the folder, or by writing
    through a shared mapping (no new modification time); a network file system can answer
    two reads differently. The copy costs one write of what the digest reads anyway.

    `progress(done, total)`: bytes copied and known so far. `cleanup()` removes the copy, as
    leaving a `with` block does:

        with SuspectCopy("suspect.safetensors") as copy:
            verdict = nnmark.verify(copy.path, key)
            evidence = verdict.to_dict() | {"suspect": copy.record()}
    """

    def __init__(
        self, source: str | Path, progress: Callable[[int, int], object] | None = None
    ) -> None:
        import tempfile

        source = Path(source)
        self.source = source
        self._progress = progress
        self._done = self._total = 0
        self._dir = tempfile.TemporaryDirectory(prefix="nnmark-suspect-")  # mode 0700
        self.folder = Path(self._dir.name)
        self.path = self.folder / source.name
        self.digests: dict[str, str] = {}
        try:
            self._copy(source, self.path, follow=True)
            suffix = source.suffix.lower()
            companions = SUSPECT_COMPANIONS.find(suffix)
            for name, follow in companions(self.path) if companions else []:
                self._copy(source.parent / name, self.folder / name, follow, named_by=source)
        except NNMarkError as exc:  # the index's or graph's own errors name the copy
            self.cleanup()
            raise NNMarkError(self.shown(str(exc))) from None
        except BaseException:
            self.cleanup()
            raise

    def _copy(self, src: Path, dst: Path, follow: bool, named_by: Path | None = None) -> None:
        import hashlib
        import os
        import shutil
        import stat

        flags = os.O_RDONLY | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
        try:  # non-blocking: opening a FIFO waits for a writer otherwise
            fd = os.open(src, flags)
        except FileNotFoundError:
            if named_by is not None:
                raise NNMarkError(f"{named_by}: {src.name}, which it names, is missing") from None
            raise NNMarkError(f"model file not found: {src}") from None
        except OSError as exc:
            link = "" if follow else " (or a link, which is not followed)"
            raise NNMarkError(f"{src}: cannot be read{link} ({exc.strerror})") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # checked on the descriptor: fdopen refuses a folder
            os.close(fd)
            raise NNMarkError(f"{src}: not a regular file")
        with os.fdopen(fd, "rb") as fh:
            blocks = getattr(st, "st_blocks", None)
            if blocks is not None and st.st_size > SPARSE_FLOOR and blocks * 512 * 64 < st.st_size:
                # a few KB on disk can claim a terabyte, copied and hashed for an hour (review,
                # session 35: 1 TiB of external data beside an ONNX file was accepted). At 1/64:
                # a compressing file system stores a pruned model's zeros in less than half
                # its size, and that model is a suspect like any other
                raise NNMarkError(
                    f"{src}: {st.st_size:,} bytes, of which {blocks * 512:,} are on disk: a "
                    "sparse file (holes where the values should be) is refused"
                )
            free = shutil.disk_usage(self.folder).free
            if st.st_size > free - COPY_MARGIN:
                raise NNMarkError(
                    f"{src}: verifying copies it first ({st.st_size:,} bytes) and "
                    f"{self.folder.parent} has {free:,} bytes free; set TMPDIR to a folder "
                    "on a larger disk"
                )
            self._total += st.st_size
            h = hashlib.sha256()
            try:
                out = dst.open("xb")
            except FileExistsError:  # a companion named twice, or named like the file itself
                raise NNMarkError(f"{named_by}: names {src.name} twice, or itself") from None
            except OSError as exc:
                raise NNMarkError(f"{src}: cannot be copied for verification ({exc})") from None
            try:
                with out:
                    # exactly the size the guards checked: a file the other side grows while
                    # it is read (or a file system serving endless data) filled the disk
                    left = st.st_size
                    while left and (chunk := fh.read(min(left, 1 << 20))):
                        h.update(chunk)
                        out.write(chunk)
                        left -= len(chunk)
                        self._done += len(chunk)
                        if self._progress is not None:
                            self._progress(self._done, self._total)
                    if left or fh.read(1):
                        raise NNMarkError(f"{src}: the file changed size while it was read")
            except OSError as exc:  # a read error, or a full disk
                raise NNMarkError(f"{src}: cannot be copied for verification ({exc})") from None
        self.digests[dst.name] = h.hexdigest()

    def record(self) -> dict[str, Any]:
        """{"path", "sha256"} of the suspect file as given, and `files`: {name: sha256} of
        the ones it names."""
        own, *others = self.digests
        entry: dict[str, Any] = {"path": str(self.source), "sha256": self.digests[own]}
        if others:
            entry["files"] = {name: self.digests[name] for name in others}
        return entry

    def shown(self, text: str) -> str:
        """`text` with the copy's paths as the user gave them."""
        return text.replace(str(self.path), str(self.source)).replace(
            str(self.folder), str(self.source.parent)
        )

    def cleanup(self) -> None:
        self._dir.cleanup()

    def __enter__(self) -> SuspectCopy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


#: Suspect loaders by file suffix; integrations (e.g. ONNX) add theirs here when the package
#: root imports nnmark.integrations (an upper layer registering down, never the reverse).
SUSPECT_LOADERS: Registry[Callable[[Path], Suspect]] = Registry("suspect loader")
#: The files beside a suspect of that suffix that it names, as (name, follow links), read
#: from the suspect file itself: what SuspectCopy copies with it.
SUSPECT_COMPANIONS: Registry[Callable[[Path], list[tuple[str, bool]]]] = Registry(
    "suspect companions"
)


def load_suspect(
    path: str | Path, max_params: int | None = None, device: torch.device | None = None
) -> Suspect:
    """A suspect from a file: safetensors / .pt / .pth natively, other suffixes by loader.
    `max_params`: the largest zoo model its metadata may ask to build (nnmark.models);
    `device`: where its forward passes run (white-box reads stay on the CPU)."""
    p = Path(path)
    suffix = p.suffix.lower()
    loader = SUSPECT_LOADERS.find(suffix)
    if loader is not None:
        if not p.is_file():
            raise NNMarkError(f"model file not found: {p}")
        return loader(p)
    return FileSuspect(p, max_params=max_params, device=device)


def as_suspect(obj: Any) -> Suspect:
    """A Suspect from a Suspect, an nn.Module or a path."""
    if isinstance(obj, Suspect):
        return obj
    if isinstance(obj, nn.Module):
        return ModuleSuspect(obj)
    if isinstance(obj, str | Path):
        return load_suspect(obj)
    raise TypeError(f"cannot verify a {type(obj).__name__}")
