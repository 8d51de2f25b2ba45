"""Running a test's program as users run theirs: ``python program.py`` in a directory
of its own, so that its functions live in its own ``__main__``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parent.parent / "src")


def run_program(tmp_path: Path, code: str, *argv: str, timeout: float = 100) -> Any:
    """Run ``code`` as ``program.py`` in ``tmp_path``; the JSON of its last stdout line."""
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run(
        [sys.executable, str(script), *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])
