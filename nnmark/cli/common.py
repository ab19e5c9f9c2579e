"""What every command shares: the app, error handling (exit 2, one line), progress, loading."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from typer.core import TyperGroup

from nnmark.errors import NNMarkError

if TYPE_CHECKING:
    from nnmark.data.base import DataBundle
    from nnmark.io import ModelInfo
    from nnmark.keys import OwnerKey
    from nnmark.suspect import SuspectCopy
    from nnmark.verdict import Verdict

#: The commands in the order a user meets them (mark, verify, attack, then the tools around them);
#: typer lists them in the order their modules were imported.
COMMAND_ORDER = (
    "demo", "train", "embed", "verify", "identify", "attack", "evaluate", "inspect", "export",
    "serve", "key", "bench", "report", "calibrate", "forge",
)  # fmt: skip


class _Commands(TyperGroup):
    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (COMMAND_ORDER + (n,)).index(n))


# rich_markup_mode None: click's help layout, which reflows the docstrings' wrapped lines (rich's
# kept each line break, ragged at 80 columns) and shows no value type for flags (`<bool>`)
app = typer.Typer(
    name="nnmark",
    cls=_Commands,
    help="Watermark PyTorch models, attack them, and verify ownership with a p-value.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from nnmark._version import __version__

        out.print(f"nnmark {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """Watermark PyTorch models, attack them, and verify ownership with a p-value."""


def _reader_left() -> int:
    """The exit code when stdout's reader has gone: 141, as a shell reports SIGPIPE; stdout is
    pointed at /dev/null so that flushing it at exit raises nothing more."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141


class PlainConsole(Console):
    """A console that shows text as written: no markup, no emoji codes, and every character a
    terminal would act on (escape sequences, carriage returns) shown as '?'. What the commands
    print quotes files, keys and servers that are the other side's: a layer named
    "[green]found[/]" or "\x1b[2K" must not restyle or rewrite a verdict's line."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(highlight=False, markup=False, emoji=False, **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader left (`nnmark verify | head`); rich's own exit 1 would read as verify's
        "not found"."""
        raise SystemExit(_reader_left())

    def print(self, *objects: Any, soft_wrap: bool | None = None, **kwargs: Any) -> None:
        """Text is printed a line as a line (soft wrap): a result cut at 80 columns broke a piped
        log mid-value (`dice 0.8583, iou` / `0.7517`; review, session 39). Tables keep their
        layout, and prose may ask for word wrapping (soft_wrap=False)."""
        if soft_wrap is None and all(isinstance(o, str) for o in objects):
            soft_wrap = True
        super().print(*objects, soft_wrap=soft_wrap, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:  # every str printed or in a table
        shown = "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)
        return super().render_str(shown, **kwargs)


out = PlainConsole()
err = PlainConsole(stderr=True)


F = TypeVar("F", bound=Callable[..., Any])

#: Optional packages and the extra that installs them (pyproject.toml): a command that needs
#: one that is missing says which extra to install, in one line.
EXTRAS = {
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "matplotlib": "report",
    "yaml": "report",
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxscript": "onnx",
    "ray": "ray",
    "lightning": "lightning",
    "transformers": "hf",
    "accelerate": "hf",
    "art": "art",
    "galois": "ecc",
    "bchlib": "ecc",
}


def command(
    name: str | None = None, *, target: typer.Typer | None = None, **kwargs: Any
) -> Callable[[F], F]:
    """Register a command (on `app`, or on a sub-app `target`) whose user errors exit 2 with
    one line on stderr, no traceback."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kw: Any) -> Any:
            logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
            try:
                return fn(*args, **kw)
            except (typer.Exit, typer.Abort):
                raise
            except NNMarkError as exc:  # one line: a message may quote a library's many
                err.print(f"error: {_one_line(exc)}", markup=False)
                raise typer.Exit(2) from None
            except KeyboardInterrupt:  # 130, as a shell reports SIGINT; outputs untouched
                err.print("error: interrupted", markup=False)
                raise typer.Exit(130) from None
            except BrokenPipeError:  # `nnmark verify --json | head`: the reader left, not an error
                raise typer.Exit(_reader_left()) from None
            except ModuleNotFoundError as exc:
                extra = EXTRAS.get((exc.name or "").split(".")[0])
                if extra is None or os.environ.get("NNMARK_DEBUG"):
                    raise
                err.print(
                    f"error: this needs the optional {exc.name!r} package: "
                    f"pip install 'nnmark[{extra}]' (in a checkout: make setup installs every "
                    f"extra, or .venv/bin/pip install -e '.[{extra}]')",
                    markup=False,
                )
                raise typer.Exit(2) from None
            except Exception as exc:
                if os.environ.get("NNMARK_DEBUG"):
                    raise
                err.print(
                    f"error: {type(exc).__name__}: {_one_line(exc)} (set NNMARK_DEBUG=1 for a "
                    "traceback)",
                    markup=False,
                )
                raise typer.Exit(2) from None

        (target or app).command(name, **kwargs)(wrapper)
        return fn

    return deco


@contextmanager
def epoch_progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, int, float], None]]:
    """A rich progress bar fed by the training loop's per-epoch callback."""
    if not enabled or not sys.stderr.isatty() and os.environ.get("NNMARK_PROGRESS") != "1":
        yield lambda epoch, total, loss: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as progress:
        task = progress.add_task(label, total=None, loss="-")  # not "nan" before an epoch ends

        def update(epoch: int, total: int, loss: float) -> None:
            progress.update(task, completed=epoch, total=total, loss=f"{loss:.4f}")

        yield update


#: The most characters of an error line: a message may quote the other side's text (a name in
#: a key, a server's error), and a line of 60 MB is no message (red team, session 28).
ERROR_LINE = 500


def _one_line(exc: BaseException) -> str:
    """The message's first line, cut at ERROR_LINE characters."""
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= ERROR_LINE else line[: ERROR_LINE - 1] + "…"


def check_output(path: Path, force: bool = False) -> Path:
    """Fail before any work if an output cannot be written (or must not be overwritten)."""
    if path.is_dir():
        raise NNMarkError(f"output path is a directory: {path}")
    if path.exists() and not path.is_file():
        raise NNMarkError(f"output path is not a regular file (a device, FIFO or socket): {path}")
    if not path.parent.exists():
        raise NNMarkError(f"output folder does not exist: {path.parent}")
    if path.exists() and not force:
        raise NNMarkError(f"{path} exists; refusing to overwrite it (use --force)")
    try:  # a real probe: permissions, read-only mounts and full quotas all show here
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise NNMarkError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    return path


def check_model_output(path: Path, suffix: str = ".safetensors", force: bool = False) -> Path:
    """An output model's path, its suffix the format written (a model saved as `a.onnx` or `a.pt`
    was safetensors bytes that no command could read back under that name); an existing file is
    replaced only with `force` (a README line run after another replaced its marked model)."""
    if not path.name.endswith(suffix) or path.name == suffix:  # the loaders' own spelling
        what = "nnmark export writes ONNX" if suffix == ".safetensors" else "what export writes"
        raise NNMarkError(f"--out must be a {suffix} file, got {path.name!r} ({what})")
    return check_output(path, force)


def check_inputs(info: ModelInfo, bundle: DataBundle, data: str) -> None:
    """Refuse data the model was not built for (its input shape or its task, by its metadata),
    in one line before any work: a digits model on MNIST failed inside a matmul after an attack
    had written its output, and a classifier whose file says segmentation inside evaluate's
    counts."""
    if info.input_shape and tuple(info.input_shape) != tuple(bundle.input_shape):
        raise NNMarkError(
            f"model expects inputs {tuple(info.input_shape)}, data {data} has {bundle.input_shape}"
        )
    if info.task != bundle.task:
        raise NNMarkError(
            f"--data {data}: the model does not evaluate on it (a {info.task} model by its "
            f"metadata; {data} is {bundle.task} data)"
        )


def check_finite(model: Any, what: str, advice: str = "lower --lr") -> None:
    """Refuse to save a model whose weights went NaN or infinite (a learning rate too high):
    it would be written with exit 0 and a verdict of not_found, as if the mark did not take.
    `advice`: what to change (an attack has no --lr: its options)."""
    import torch

    bad = [
        name
        for name, t in model.state_dict().items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise NNMarkError(
            f"{what} diverged: {len(bad)} tensors hold NaN or infinite values (first: {bad[0]}); "
            f"nothing written: {advice}"
        )


def distinct_paths(outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]) -> None:
    """Refuse outputs that name the same file, or an input: one would silently replace the
    other (e.g. --out equal to --key-out leaves only the key)."""
    seen: dict[Path, str] = {}
    for what, path in {**inputs, **outputs}.items():
        if path is None:
            continue
        real = path.resolve()
        if real in seen and what in outputs:
            raise NNMarkError(f"{what} and {seen[real]} name the same file: {path}")
        seen.setdefault(real, what)


def parse_options(sets: list[str] | None) -> dict[str, str]:
    from nnmark.config import parse_sets

    return parse_sets(sets or [])


def print_json(obj: Any) -> None:
    out.print_json(json.dumps(obj))


MAX_CERT_BYTES = 1 << 20


def read_certs(paths: list[Path] | None) -> list[bytes]:
    """--tsa-cert files, each checked to hold certificates before any other work."""
    from nnmark.provenance import trusted_subjects

    certs = []
    for path in paths or []:
        if not path.is_file():
            raise NNMarkError(f"TSA certificate file not found: {path}")
        if path.stat().st_size > MAX_CERT_BYTES:
            raise NNMarkError(f"{path}: too large for a certificate file")
        data = path.read_bytes()
        try:
            trusted_subjects([data])
        except NNMarkError:
            raise NNMarkError(f"{path}: not a PEM or DER X.509 certificate") from None
        certs.append(data)
    return certs


def read_seen(text: str | None) -> _dt.datetime | None:
    """--suspect-seen: an ISO-8601 time, or None."""
    if text is None:
        return None
    try:
        return _dt.datetime.fromisoformat(text)
    except ValueError:
        raise NNMarkError(f"--suspect-seen must be an ISO-8601 time, got {text!r}") from None


#: --data on the commands that verify keys: the data sets a key's marks name.
KeyDataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="NAME:PATH of a data set the key re-derives its inputs from (checked by its "
        "content hash; repeatable; the built-in digits is found alone)",
    ),
]

#: --tsa-cert and --suspect-seen: what makes a key's timestamp count (verify, identify).
TsaCertOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--tsa-cert", help="Trusted TSA certificate or root CA for the key's timestamp (repeatable)"
    ),
]
SuspectSeenOpt = Annotated[
    str | None,
    typer.Option(
        "--suspect-seen",
        help="When the suspect was first seen (ISO-8601): a key timestamped later than that "
        "proves nothing against it",
    ),
]


def read_token(path: Path) -> str:
    """A bearer token from a file (its first line): printable, 16 to 4096 characters."""
    if not path.is_file():
        raise NNMarkError(
            f"token file {'is a directory' if path.is_dir() else 'not found'}: {path}"
        )
    if path.stat().st_size > 8192:
        raise NNMarkError(f"{path}: too large for a token file")
    lines = path.read_text(errors="replace").strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not 16 <= len(token) <= 4096 or not token.isprintable() or " " in token:
        raise NNMarkError(f"{path}: a token is one line of 16 to 4096 printable characters")
    return token


#: --force on every command that writes files: an existing output is replaced only when asked.
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Replace output files that exist (model, key, report)")
]

#: --max-params: the largest model a file's metadata may ask nnmark to build.
MaxParamsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-params",
        help="Largest model (parameters + buffers) a file's metadata may make nnmark build "
        "[default: 268435456, 1 GiB of float32]",
        min=1,
    ),
]

#: --device on every command that runs a model.
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where models run: auto (a GPU when present), cpu, cuda, cuda:N or mps; "
        "keys and verdicts do not depend on it",
    ),
]


#: --amp on the commands that train.
AmpOpt = Annotated[
    str | None,
    typer.Option(
        "--amp",
        help="Mixed precision for the forward passes: bf16 or fp16 (fp16 needs a GPU to pay "
        "off; the marks' penalties always run in fp32)",
    ),
]


#: --workers on the commands that train.
WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        min=0,
        max=64,
        help="DataLoader worker processes feeding the training (0: the main process; the "
        "batches and the result are the same either way)",
    ),
]


def pick_amp(amp: str | None) -> Any:
    """--amp checked before any work (the precisions nnmark.train knows)."""
    from nnmark.train import AMP_DTYPES

    if amp is not None and amp not in AMP_DTYPES:
        raise NNMarkError(f"--amp must be {' or '.join(AMP_DTYPES)}, got {amp!r}")
    return amp


def pick_device(spec: str) -> Any:
    """The torch device of --device, or exit 2 with one line when this machine lacks it."""
    from nnmark.device import resolve_device

    return resolve_device(spec)


SetOption = typer.Option(
    "--set", help="Scheme/attack option as key=value (repeatable); unknown keys exit 2."
)


#: --identity on the commands that make keys (train, embed).
IdentityOpt = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        help="Sign the key with this identity (from `nnmark key identity`); a new key commits "
        "to it before its first secret, so no other identity can ever sign it",
    ),
]


def signer_for(
    identity: Path | None, key: OwnerKey | None, owner: str
) -> tuple[OwnerKey | None, Any]:
    """(the key to embed with, the identity's private key), read before any training: a new
    key committed to --identity; an existing key kept, if it commits to no other signer."""
    from nnmark.keys import OwnerKey
    from nnmark.provenance import load_identity, public_key_text, text_fingerprint

    if identity is None:
        return key, None
    private = load_identity(identity)
    mine = public_key_text(private)
    if key is None:
        return OwnerKey.new(owner).with_signer(mine), private
    if key.signer not in (None, mine):
        raise NNMarkError(
            f"the key commits to signer {text_fingerprint(key.signer or '')}, and --identity "
            f"{identity} is {text_fingerprint(mine)}: only the committed signer can sign it"
        )
    return key, private


def signed(key: OwnerKey, private: Any) -> OwnerKey:
    """The key signed by `private` (None: as it is)."""
    import dataclasses

    from nnmark.provenance import sign_commitment

    if private is None:
        return key
    return dataclasses.replace(key, signature=sign_commitment(key.commitment, private))


@contextmanager
def suspect_copy(path: Path) -> Iterator[SuspectCopy]:
    """`path` and the files it names copied into a private folder (SuspectCopy), with a
    progress bar on a terminal; the suspect is loaded from `.path`, and errors raised meanwhile
    name the files as the user gave them. The copy is removed on the way out."""
    from nnmark.suspect import SuspectCopy

    columns = (TextColumn("reading the suspect"), BarColumn(), DownloadColumn())
    with terminated_as_exit():  # a model-sized copy must not outlive `timeout` or a CI cancel
        shown = err.is_terminal or os.environ.get("NNMARK_PROGRESS") == "1"
        with Progress(*columns, console=err, transient=True, disable=not shown) as bar:
            task = bar.add_task("copy", total=None)
            copy = SuspectCopy(
                path, lambda done, total: bar.update(task, completed=done, total=total)
            )
        try:
            yield copy
        except NNMarkError as exc:
            raise NNMarkError(copy.shown(str(exc))) from None
        finally:
            copy.cleanup()


@contextmanager
def terminated_as_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit(128 + signal) meanwhile, so `finally` clauses run
    (the default handler ends the process without them); the old handlers return after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signals = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    before = {sig: signal.signal(sig, leave) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def shown_doc(doc: Any, shown: Callable[[str], str]) -> Any:
    """A JSON document with `shown` applied to every string in it."""
    if isinstance(doc, str):
        return shown(doc)
    if isinstance(doc, dict):
        return {k: shown_doc(v, shown) for k, v in doc.items()}
    if isinstance(doc, list | tuple):
        return [shown_doc(v, shown) for v in doc]
    return doc


def shown_verdict(v: Verdict, shown: Callable[[str], str]) -> Verdict:
    """`v` with `shown` applied to the texts that may name the suspect's files (its reason,
    every string in its details, its parts')."""
    return dataclasses.replace(
        v,
        reason=None if v.reason is None else shown(v.reason),
        details=shown_doc(v.details, shown),
        parts=tuple(shown_verdict(part, shown) for part in v.parts),
    )


def suspect_lines(record: dict[str, Any] | None) -> list[str]:
    """The suspect's files and digests (SuspectCopy.record), one line each; a served one's URL
    (RemoteSuspect.record)."""
    if not record:
        return []
    if "url" in record:
        return [f"suspect: {record['url']} (model {record['model']}), from {record['at']}"]
    files = record.get("files", {}).items()
    return [f"suspect: {record['path']}, SHA-256 {record['sha256']}"] + [
        f"  with {name}, SHA-256 {digest}" for name, digest in files
    ]
