"""The package version, from one source: the installed distribution's metadata (pyproject.toml).

A module of its own, importing nothing of nnmark, so that any layer can read the version without
loading the package root (which imports every scheme and attack).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nnmark")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
