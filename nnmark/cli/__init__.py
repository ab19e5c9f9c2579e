"""The command line: a thin typer layer; each command parses options and calls one library
function. Command modules in this package register themselves on `app` when imported.
"""

from __future__ import annotations

import importlib
import pkgutil

from nnmark.cli.common import app


def main() -> None:
    """Console entry point (`nnmark`)."""
    app()


for _info in pkgutil.iter_modules(__path__):
    if _info.name != "common" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["app", "main"]
