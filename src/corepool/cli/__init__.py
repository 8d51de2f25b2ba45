"""The ``corepool`` command line: ``corepool demo``, ``corepool info``.

``corepool`` (the console script) and ``python -m corepool`` both call :func:`main`.
Each subcommand lives in its own module and is imported only when it runs.
"""

from __future__ import annotations

from .main import build_parser, main

__all__ = ["build_parser", "main"]
