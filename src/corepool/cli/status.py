"""``corepool status FILE.db``: what a ``corepool run`` journal holds, read-only.

Counts by state and kind, the first failures, and the last run: how it ended, or while
it runs, rows done of the total (known when the input was a file), the recent rate
and the ETA it gives.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import psutil

from .journal import JournalError, RunInfo, Summary, read_summary
from .recover import unreadable
from .report import eta_seconds, format_eta

LOGGED_SHOWN = 5  # a failed task's last logged lines shown under it

__all__ = ["render", "run", "to_json"]


def _run_state(run: RunInfo) -> str:
    if run.state == "running" and not psutil.pid_exists(run.pid):
        return "killed"
    return run.state


def _throughput(run: RunInfo) -> float | None:
    """Tasks run per second over the whole run (so far)."""
    end = run.ended if run.ended is not None else (run.updated or time.time())
    seconds = end - run.started
    return run.executed / seconds if seconds > 0 and run.executed else None


def _last_run(run: RunInfo) -> dict[str, Any]:
    state = _run_state(run)
    running = state == "running"
    eta = eta_seconds(run.total, run.rows, run.rate) if running else None
    return {
        "state": state,
        "command": run.command,
        "rows": run.rows,
        "total": run.total,
        "executed": run.executed,
        "failed": run.failed,
        "pending": run.pending,
        "tasks_per_second": _throughput(run),
        "recent_rows_per_second": run.rate if running else None,
        "eta_seconds": eta,
        "updated": run.updated,
    }


def to_json(summary: Summary) -> dict[str, Any]:
    """The status report as a JSON-ready dict."""
    last = summary.runs[-1] if summary.runs else None
    return {
        "function": summary.meta.get("target"),
        "mode": summary.meta.get("mode"),
        "done": summary.ok + summary.failed,
        "ok": summary.ok,
        "failed": summary.failed,
        "failed_by_kind": summary.failed_by_kind,
        "bad_input_lines": summary.bad_count,
        "first_failures": [{"line": line, **error} for line, error in summary.first_failures],
        "runs": len(summary.runs),
        "last_run": None if last is None else _last_run(last),
    }


def _progress_line(last: dict[str, Any]) -> str:
    total = last["total"]
    done = f"{last['rows']}/{total} rows ({100 * last['rows'] / total:.0f}%)" if total \
        else f"{last['rows']} rows of an input of unknown length (stdin)"
    rate = last["recent_rows_per_second"]
    speed = f"{rate:.1f} rows/s recently" if rate else "no rate yet"
    eta = f", ETA {format_eta(last['eta_seconds'])}" if last["eta_seconds"] is not None else ""
    return f"progress: {done}, {speed}{eta}"


def render(summary: Summary) -> str:
    """The status report as text."""
    data = to_json(summary)
    lines = [
        f"function: {data['function']} (mode {data['mode']})",
        f"done:     {data['done']} tasks: {data['ok']} ok, {data['failed']} failed",
    ]
    for kind, count in sorted(summary.failed_by_kind.items()):
        lines.append(f"  {kind:<10} {count}")
    if summary.bad_count:
        shown = ", ".join(map(str, summary.bad_lines))
        more = "" if summary.bad_count <= len(summary.bad_lines) else ", ..."
        lines.append(f"input:    {summary.bad_count} bad line(s) in the last run, not tasks "
                     f"(an 'input' row each in the output): line {shown}{more}")
    last = data["last_run"]
    if last is not None:
        rate = last["tasks_per_second"]
        state = last["state"]
        if state == "killed":
            state += " (ended without a clean stop; run the same command to resume)"
        pending = "unknown" if last["pending"] is None else str(last["pending"])
        lines.append(
            f"runs:     {data['runs']}; last run {state}: ran {last['executed']} tasks"
            + (f" at {rate:.1f} tasks/s" if rate else "")
            + ("" if last["state"] == "running" else f", pending {pending}")
        )
        if last["state"] == "running":
            lines.append(_progress_line(last))
        lines.append(f"resume:   {last['command']}")
    if summary.first_failures:
        lines.append("first failures:")
        for line, error in summary.first_failures:
            message = str(error.get("message") or "").splitlines()
            lines.append(f"  line {line}: [{error.get('kind')}] {error.get('type')}"
                         + (f": {message[0][:200]}" if message else ""))
            logged = str(error.get("logged") or "").splitlines()[-LOGGED_SHOWN:]
            lines.extend(f"    | {text[:200]}" for text in logged)
    return "\n".join(lines)


def run(path: str, *, as_json: bool = False) -> int:
    """``corepool status``: 0 when the journal was read, 2 when it cannot be."""
    try:
        summary = read_summary(path)
    except JournalError as exc:
        print(unreadable("status", path, exc), file=sys.stderr)
        return 2
    if "target" not in summary.meta:
        print(f"corepool status: {path} is not a corepool run journal", file=sys.stderr)
        return 2
    print(json.dumps(to_json(summary), indent=2) if as_json else render(summary))
    return 0
