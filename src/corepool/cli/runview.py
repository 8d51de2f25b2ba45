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
import os
import sqlite3
import time
from typing import Any

import psutil

from .journal import JournalError, ro_connect, table_columns

__all__ = ["FAILURE_ROWS", "SLOWEST", "collect"]

FAILURE_ROWS = 200  # failures listed (the count covers all of them)
SLOWEST = 10
_BUCKETS = 60  # bars of the throughput chart, at most
_TEXT = 2_000  # characters of a message kept
_TRACEBACK = 20_000  # characters of a traceback kept


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
        timed = "micros" in table_columns(conn, "tasks")
        runs = _runs(conn)
        bad = _bad_lines(conn, runs[-1]["id"] if runs else None)
        scan = _Scan(conn, runs, timed)
        view = {
            "journal": os.path.abspath(path),
            "function": meta.get("target"),
            "mode": meta.get("mode"),
            "timed": timed,  # the journal has timing columns (no chart data: no task yet)
            "generated": time.time(),
            "summary": _summary(scan, runs, len(bad)),
            "runs": runs,
            "throughput": scan.throughput(),
            "durations": scan.durations(),
            "slowest": _slowest(conn) if timed else [],
            "failures": _failures(conn, runs, bad),
        }
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"cannot read the journal {path} ({exc})") from exc
    finally:
        conn.close()
    return view


def _runs(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    have = table_columns(conn, "runs")
    names = ("id", "started", "ended", "state", "command", "pid", "executed", "failed",
             "pending", "total", "rows", "rate", "updated", "retries", "retried")
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
        run["retried"] = run["retried"] or 0
    return runs


def _bad_lines(conn: sqlite3.Connection, run: int | None) -> list[tuple[int, str]]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    if "bad_lines" not in tables or run is None:
        return []
    return [(int(line), payload) for line, payload in conn.execute(
        "SELECT line, payload FROM bad_lines WHERE run = ? ORDER BY line", (run,))]


# Durations fall in fixed log-scale bins, 4 per decade from 1 µs to 10,000 s: the same
# edges for every view, so no scan is needed to find the range first.
_EDGES = [round(10 ** (i / 4)) for i in range(1, 41)]  # microseconds
_BIN_OF = "CASE " + " ".join(f"WHEN micros < {edge} THEN {i}"
                             for i, edge in enumerate(_EDGES)) + f" ELSE {len(_EDGES)} END"


class _Scan:
    """Everything the summary and the charts need, from one pass over the tasks (a
    GROUP BY on outcome, failed run, finish-time bucket and duration bin)."""

    def __init__(self, conn: sqlite3.Connection, runs: list[dict[str, Any]],
                 timed: bool) -> None:
        self.ok = 0
        self.by_kind: dict[str, int] = {}
        self.failed_runs: dict[int, int] = {}
        self.buckets: dict[int, list[int]] = {}
        self.bins: dict[int, int] = {}
        self.timed = self.micros = 0
        first = min((run["started"] for run in runs), default=0.0)
        last = max((run["started"] + run["elapsed"] for run in runs), default=first)
        self.start = int(first * 1000)
        self.width = max(200, int((last - first) * 1000) // _BUCKETS + 1)  # milliseconds
        if timed:
            sql = ("SELECT ok, kind, CASE WHEN ok = 0 THEN run END, (finished - ?) / ?, "
                   f"{_BIN_OF}, count(*), sum(micros), count(micros) FROM tasks "
                   "GROUP BY 1, 2, 3, 4, 5")
            rows = conn.execute(sql, (self.start, self.width))
        else:
            rows = conn.execute("SELECT ok, kind, CASE WHEN ok = 0 THEN run END, NULL, NULL, "
                                "count(*), NULL, 0 FROM tasks GROUP BY 1, 2, 3")
        for ok, kind, run, bucket, bin_, count, micros, timed_count in rows:
            if ok:
                self.ok += count
            else:
                kind = kind or "exception"
                self.by_kind[kind] = self.by_kind.get(kind, 0) + count
                self.failed_runs[run] = self.failed_runs.get(run, 0) + count
            if bucket is not None:
                counts = self.buckets.setdefault(max(0, int(bucket)), [0, 0])
                counts[0] += count
                counts[1] += 0 if ok else count
            if timed_count:
                self.bins[int(bin_)] = self.bins.get(int(bin_), 0) + timed_count
                self.timed += timed_count
                self.micros += micros

    def throughput(self) -> dict[str, Any] | None:
        """Tasks (and failed ones) finished per time bucket."""
        if not self.buckets:
            return None
        counts = [self.buckets.get(i, [0, 0]) for i in range(max(self.buckets) + 1)]
        return {"start": self.start / 1000, "width": self.width / 1000, "counts": counts}

    def durations(self) -> dict[str, Any] | None:
        """The duration histogram, from the first to the last bin holding a task."""
        if not self.bins:
            return None
        low, high = min(self.bins), max(self.bins)
        return {"low": (_EDGES[low - 1] if low else 0) / 1e6,
                "high": _EDGES[min(high, len(_EDGES) - 1)] / 1e6,
                "counts": [self.bins.get(i, 0) for i in range(low, high + 1)],
                "count": self.timed, "mean": self.micros / self.timed / 1e6}


def _summary(scan: _Scan, runs: list[dict[str, Any]], bad: int) -> dict[str, Any]:
    by_kind = dict(scan.by_kind)
    if bad:
        by_kind["input"] = bad
    failed = sum(by_kind.values())
    last = runs[-1] if runs else None
    elapsed = sum(run["elapsed"] for run in runs)
    executed = sum(run["executed"] or 0 for run in runs)
    retries = {run["id"]: run["retries"] for run in runs}
    return {
        "done": scan.ok + failed,
        "ok": scan.ok,
        "failed": failed,
        "failed_by_kind": dict(sorted(by_kind.items())),
        "retries": last["retries"] if last else 0,
        "retried": sum(run["retried"] for run in runs),
        "retried_failures": sum(count for run, count in scan.failed_runs.items()
                                if retries.get(run)),
        "elapsed": elapsed,
        "rate": executed / elapsed if elapsed > 0 and executed else None,
        "state": last["state"] if last else None,
        "total": last["total"] if last else None,
        "rows": last["rows"] if last else 0,
        "recent_rate": last["rate"] if last and last["state"] == "running" else None,
        "runs": len(runs),
    }


def _slowest(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [{"line": line, "seconds": micros / 1e6, "ok": bool(ok), "kind": kind}
            for line, micros, ok, kind in conn.execute(
                "SELECT line, micros, ok, kind FROM tasks WHERE micros IS NOT NULL "
                "ORDER BY micros DESC LIMIT ?", (SLOWEST,))]


def _failure(line: int, payload: str, attempts: int, logged: str | None) -> dict[str, Any]:
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
        "logged": _cut(logged, _TRACEBACK),
    }


def _failures(conn: sqlite3.Connection, runs: list[dict[str, Any]],
              bad: list[tuple[int, str]]) -> list[dict[str, Any]]:
    retries = {run["id"]: run["retries"] for run in runs}
    found = [_failure(line, payload, 0, None) for line, payload in bad[:FAILURE_ROWS]]
    logged = "logged" if "logged" in table_columns(conn, "tasks") else "NULL"  # older journals
    for line, run, payload, lines in conn.execute(
            f"SELECT line, run, payload, {logged} FROM tasks WHERE ok = 0 ORDER BY line LIMIT ?",
            (FAILURE_ROWS,)):
        found.append(_failure(int(line), payload, 1 + retries.get(run, 0), lines))
    found.sort(key=lambda failure: failure["line"])
    return found[:FAILURE_ROWS]
