"""What ``corepool report`` and ``corepool dashboard`` show, read from a journal.

:func:`collect` opens the journal read-only (as ``corepool status`` does: no lock, no
migration, no files left beside it) and returns one JSON-ready dict: the summary, the
throughput over time, the task durations, the slowest tasks and the failures. The work
is a few aggregate queries, so a dashboard polling a journal of millions of tasks
every second or two costs the running batch little. Journals written before tasks had
timing data still open: their charts are simply empty.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from typing import Any

import psutil

from .journal import JournalError, ro_connect

__all__ = ["FAILURE_ROWS", "SLOWEST", "collect"]

FAILURE_ROWS = 200  # failures listed (the count covers all of them)
SLOWEST = 10
_BUCKETS = 60  # bars of the throughput chart, at most
_BINS = 24  # bars of the duration histogram
_TEXT = 2_000  # characters of a message kept
_TRACEBACK = 20_000  # characters of a traceback kept


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _cut(text: Any, limit: int) -> str | None:
    if text is None:
        return None
    text = str(text)
    return str(text) if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more)"


def collect(path: str) -> dict[str, Any]:
    """The view of the journal at ``path`` (raises :class:`JournalError` when it is not
    a readable corepool journal)."""
    if not os.path.isfile(path):
        raise JournalError(f"no journal at {path}")
    conn = ro_connect(path)
    try:
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if "target" not in meta:
            raise JournalError(f"{path} is not a corepool run journal")
        timed = "micros" in _columns(conn, "tasks")
        runs = _runs(conn)
        bad = _bad_lines(conn, runs[-1]["id"] if runs else None)
        view = {
            "journal": os.path.abspath(path),
            "function": meta.get("target"),
            "mode": meta.get("mode"),
            "generated": time.time(),
            "summary": _summary(conn, runs, len(bad)),
            "runs": runs,
            "throughput": _throughput(conn) if timed else None,
            "durations": _durations(conn) if timed else None,
            "slowest": _slowest(conn) if timed else [],
            "failures": _failures(conn, runs, bad),
        }
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"cannot read the journal {path} ({exc})") from exc
    finally:
        conn.close()
    return view


def _runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    have = _columns(conn, "runs")
    names = ("id", "started", "ended", "state", "command", "pid", "executed", "failed",
             "pending", "total", "rows", "rate", "updated", "retries")
    columns = ", ".join(name if name in have else "NULL" for name in names)
    runs = [dict(zip(names, row, strict=True)) for row in
            conn.execute(f"SELECT {columns} FROM runs ORDER BY id")]
    now = time.time()
    for run in runs:
        if run["state"] == "running" and not psutil.pid_exists(run["pid"]):
            run["state"] = "killed"
        end = run["ended"] or (now if run["state"] == "running" else run["updated"])
        run["elapsed"] = max(0.0, (end or run["started"]) - run["started"])
        run["retries"] = run["retries"] or 0
    return runs


def _bad_lines(conn: sqlite3.Connection, run: int | None) -> list[tuple[int, str]]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if "bad_lines" not in tables or run is None:
        return []
    return [(int(line), payload) for line, payload in conn.execute(
        "SELECT line, payload FROM bad_lines WHERE run = ? ORDER BY line", (run,))]


def _summary(conn: sqlite3.Connection, runs: list[dict[str, Any]],
             bad: int) -> dict[str, Any]:
    ok = 0
    by_kind: dict[str, int] = {}
    for is_ok, kind, count in conn.execute(
            "SELECT ok, kind, count(*) FROM tasks GROUP BY ok, kind"):
        if is_ok:
            ok += count
        else:
            by_kind[kind or "exception"] = by_kind.get(kind or "exception", 0) + count
    if bad:
        by_kind["input"] = bad
    failed = sum(by_kind.values())
    last = runs[-1] if runs else None
    elapsed = sum(run["elapsed"] for run in runs)
    executed = sum(run["executed"] or 0 for run in runs)
    retried_failures = sum(
        count for (count,) in conn.execute(
            "SELECT count(*) FROM tasks JOIN runs ON tasks.run = runs.id "
            "WHERE tasks.ok = 0 AND runs.retries > 0")
    ) if "retries" in _columns(conn, "runs") else 0
    return {
        "done": ok + failed,
        "ok": ok,
        "failed": failed,
        "failed_by_kind": dict(sorted(by_kind.items())),
        "retries": last["retries"] if last else 0,
        "retried_failures": retried_failures,
        "elapsed": elapsed,
        "rate": executed / elapsed if elapsed > 0 and executed else None,
        "state": last["state"] if last else None,
        "total": last["total"] if last else None,
        "rows": last["rows"] if last else 0,
        "recent_rate": last["rate"] if last and last["state"] == "running" else None,
        "runs": len(runs),
    }


def _throughput(conn: sqlite3.Connection) -> dict[str, Any] | None:
    first, last = conn.execute(
        "SELECT min(finished), max(finished) FROM tasks WHERE finished IS NOT NULL").fetchone()
    if first is None:
        return None
    width = max(200, (last - first) // _BUCKETS + 1)  # milliseconds
    counts = [[0, 0] for _ in range((last - first) // width + 1)]
    for bucket, done, failed in conn.execute(
            "SELECT (finished - ?) / ? AS b, count(*), sum(ok = 0) "
            "FROM tasks WHERE finished IS NOT NULL GROUP BY b", (first, width)):
        counts[min(int(bucket), len(counts) - 1)] = [done, failed or 0]
    return {"start": first / 1000, "width": width / 1000, "counts": counts}


def _durations(conn: sqlite3.Connection) -> dict[str, Any] | None:
    """A histogram of task durations on a log scale (equal ratios per bin): tiny tasks
    and a few hung ones are both visible. The bin of each row is found by SQLite
    itself (a CASE over the bin edges), so no Python runs per task."""
    low, high, count, total = conn.execute(
        "SELECT min(micros), max(micros), count(micros), sum(micros) FROM tasks "
        "WHERE micros IS NOT NULL").fetchone()
    if not count:
        return None
    floor = math.log10(max(low, 1))
    step = max((math.log10(max(high, 1)) - floor) / _BINS, 1e-6)
    edges = [int(10 ** (floor + step * i)) for i in range(1, _BINS)]
    case = " ".join(f"WHEN micros < {edge} THEN {i}" for i, edge in enumerate(edges))
    counts = [0] * _BINS
    for index, n in conn.execute(
            f"SELECT CASE {case} ELSE {_BINS - 1} END AS b, count(*) FROM tasks "
            "WHERE micros IS NOT NULL GROUP BY b"):
        counts[int(index)] += n
    return {"low": low / 1e6, "high": high / 1e6, "counts": counts, "count": count,
            "mean": total / count / 1e6}


def _slowest(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"line": line, "seconds": micros / 1e6, "ok": bool(ok), "kind": kind}
            for line, micros, ok, kind in conn.execute(
                "SELECT line, micros, ok, kind FROM tasks WHERE micros IS NOT NULL "
                "ORDER BY micros DESC LIMIT ?", (SLOWEST,))]


def _failure(line: int, payload: str, attempts: int) -> dict[str, Any]:
    try:
        error = json.loads(payload)
    except ValueError:
        error = {"message": payload}
    if not isinstance(error, dict):
        error = {"message": error}
    return {
        "line": line,
        "kind": str(error.get("kind") or "exception"),
        "type": _cut(error.get("type"), 200),
        "message": _cut(error.get("message"), _TEXT),
        "traceback": _cut(error.get("traceback"), _TRACEBACK),
        "attempts": attempts,
    }


def _failures(conn: sqlite3.Connection, runs: list[dict[str, Any]],
              bad: list[tuple[int, str]]) -> list[dict[str, Any]]:
    retries = {run["id"]: run["retries"] for run in runs}
    found = [_failure(line, payload, 0) for line, payload in bad[:FAILURE_ROWS]]
    for line, run, payload in conn.execute(
            "SELECT line, run, payload FROM tasks WHERE ok = 0 ORDER BY line LIMIT ?",
            (FAILURE_ROWS,)):
        found.append(_failure(int(line), payload, 1 + retries.get(run, 0)))
    found.sort(key=lambda failure: failure["line"])
    return found[:FAILURE_ROWS]
