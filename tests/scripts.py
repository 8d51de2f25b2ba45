"""Run a test's program as a user would: ``python program.py`` in a temporary folder.

The program imports the same corepool as the test run (its folder goes first on
``PYTHONPATH``), and this tests folder's helper modules (``tasks``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import corepool

_SOURCE = os.path.dirname(os.path.dirname(corepool.__file__))
_TESTS = os.path.dirname(__file__)


def _command(code: str, folder: Path) -> tuple[list[str], dict[str, str]]:
    script = folder / "program.py"
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([_SOURCE, _TESTS])}
    env.pop("COREPOOL_BACKEND", None)
    return [sys.executable, str(script)], env


def run(
    code: str,
    folder: Path,
    timeout: float = 60,
    arguments: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as ``program.py`` in ``folder`` to the end (killed after ``timeout``),
    with command-line ``arguments`` and extra environment variables ``env``."""
    command, environment = _command(code, folder)
    return subprocess.run(
        [*command, *(arguments or [])],
        cwd=folder,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(code: str, folder: Path, **options: Any) -> subprocess.Popen[str]:
    """Start ``code`` as ``program.py`` in ``folder``; stdout and stderr are pipes."""
    command, env = _command(code, folder)
    return subprocess.Popen(
        command,
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )
