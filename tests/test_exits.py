"""Why a worker ended, in words: signal names and the OOM killer's count."""

from __future__ import annotations

import signal
from pathlib import Path

from corepool._engine import exits


def test_describe_exit() -> None:
    assert exits.describe_exit(3) == "exit code 3"
    assert exits.describe_exit(-signal.SIGSEGV) == "signal SIGSEGV"
    assert exits.describe_exit(None) == "an unknown cause"


def test_sigkill_after_an_oom_kill_says_out_of_memory(tmp_path: Path) -> None:
    events = tmp_path / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 2\n")
    explain = exits.ExitExplainer()
    explain._files = [events]
    explain._baseline = exits.read_oom_kills([events])
    assert "likely out of memory" not in explain(-signal.SIGKILL, 1)
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 3\n")
    assert "likely out of memory" in explain(-signal.SIGKILL, 1)
    assert "likely out of memory" not in explain(-signal.SIGKILL, 1)  # counted once


def test_segfault_and_abort_are_explained() -> None:
    explain = exits.ExitExplainer()
    assert "segmentation fault" in explain(-signal.SIGSEGV, 1)
    assert "abort" in explain(-signal.SIGABRT, 1)
