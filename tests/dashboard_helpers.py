"""Shared by the dashboard tests: a real batch with every kind of failure, the counts
its journal holds, and the ``corepool dashboard`` server as a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import corepool as corepool_package

HOSTILE = "<script>alert(1)</script>"

TASKS = '''
import os, time

def work(x):
    if x == "raise" or x == "<script>alert(1)</script>":
        raise ValueError(f"bad input {x}")
    if x == "hang":
        time.sleep(60)
    if x == "crash":
        os._exit(3)
    return x * 2

def slow(x):
    time.sleep(0.05)
    if x % 10 == 3:
        raise ValueError(f"ends in 3: {x}")
    return x
'''


SOURCE = str(Path(corepool_package.__file__).resolve().parent.parent)


def env() -> dict[str, str]:
    """The environment of the subprocesses: they import the corepool this test run
    imported (its folder first on ``PYTHONPATH``, absolute: a relative ``src`` would
    not resolve from their temporary folders, and an installed corepool would run)."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [SOURCE, out.get("PYTHONPATH")]))
    out.pop("COREPOOL_BACKEND", None)
    return out


def corepool(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m corepool ARGS`` run to its end."""
    return subprocess.run([sys.executable, "-m", "corepool", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """``python -m corepool ARGS`` started in the background."""
    return subprocess.Popen([sys.executable, "-m", "corepool", *args], cwd=cwd, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    """Interrupt ``proc`` and wait for it."""
    if proc.poll() is None:
        proc.terminate()
    proc.communicate(timeout=20)


def troubled_batch(folder: Path) -> Path:
    """Run a batch whose failures are of every kind; returns its journal."""
    (folder / "tasks.py").write_text(TASKS)
    values = [*range(1, 41), "raise", "hang", "crash", None, HOSTILE]
    lines = [json.dumps(v) if v is not None else "{oops" for v in values]
    (folder / "in.jsonl").write_text("\n".join(lines) + "\n")
    done = corepool("run", "tasks.py:work", "in.jsonl", "-o", "out.jsonl", "--timeout", "1",
                    "--retries", "1", "--no-progress", cwd=folder)
    assert done.returncode == 1, done.stderr
    return folder / "out.jsonl.journal.db"


def journal_counts(db: Path) -> dict[str, int]:
    """``ok``, ``failed`` and ``failed-KIND`` as the journal holds them (bad lines of
    the last run included)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ok = conn.execute("SELECT count(*) FROM tasks WHERE ok = 1").fetchone()[0]
        counts = {"ok": ok}
        for kind, n in conn.execute(
                "SELECT kind, count(*) FROM tasks WHERE ok = 0 GROUP BY kind"):
            counts[f"failed-{kind}"] = n
        run = conn.execute("SELECT max(id) FROM runs").fetchone()[0]
        bad = conn.execute("SELECT count(*) FROM bad_lines WHERE run = ?", (run,)).fetchone()[0]
    if bad:
        counts["failed-input"] = bad
    counts["failed"] = sum(n for key, n in counts.items() if key.startswith("failed-"))
    counts["done"] = counts["ok"] + counts["failed"]
    return counts


def wait_for_journal(db: Path, proc: subprocess.Popen[str], limit: float = 30) -> None:
    """Until the run has bound its journal to its function."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                if conn.execute("SELECT 1 FROM meta WHERE name = 'target'").fetchone():
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.05)
    raise AssertionError("the run did not start its journal")


def serve(db: Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """``corepool dashboard DB OPTIONS``: the process and the URL it printed."""
    proc = start("dashboard", str(db), *options, cwd=db.parent)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("corepool dashboard: http://"), (line, proc.stderr)
    return proc, line.split(": ", 1)[1].strip()


def fetch(url: str, method: str = "GET",
          headers: dict[str, str] | None = None) -> tuple[int, str]:
    """Status and body of one request."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
