"""The command line: a thin typer layer; each command parses options and calls one library
function. Command modules in this package register themselves on `app` when imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from nnmark.cli.common import app, err


def main() -> None:
    """Console entry point (`nnmark`): a usage error is one line on stderr and exit 2 (click
    would draw a box of several lines); bare `nnmark` still prints the help."""
    import sys

    import typer

    try:  # typer vendors its own click (0.2x); older ones use click itself
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx  # type: ignore[no-redef]

    try:
        code = app(standalone_mode=False)
    except cx.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 2
    except cx.UsageError as exc:
        name = exc.ctx.command_path if exc.ctx else "nnmark"
        err.print(f"error: {name}: {exc.format_message()}", markup=False)
        code = 2
    except cx.ClickException as exc:  # e.g. a file option that cannot be opened
        err.print(f"error: {exc.format_message()}", markup=False)
        code = 2
    except typer.Abort:
        err.print("error: aborted", markup=False)
        code = 2
    sys.exit(code if isinstance(code, int) else 0)


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "common" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["app", "main"]
