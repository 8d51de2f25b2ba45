"""``corepool status FILE.db``: what a ``corepool run`` journal holds, read-only."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import psutil

from .journal import JournalError, RunInfo, Summary, read_summary

__all__ = ["render", "run", "to_json"]


def _run_state(run: RunInfo) -> str:
    if run.state == "running" and not psutil.pid_exists(run.pid):
        return "killed (ended without a clean stop; run the same command to resume)"
    return run.state


def _throughput(run: RunInfo, done: int) -> float | None:
    end = run.ended if run.ended is not None else time.time()
    seconds = end - run.started
    executed = run.executed if run.ended is not None else done
    return executed / seconds if seconds > 0 else None


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
        "first_failures": [{"line": line, **error} for line, error in summary.first_failures],
        "runs": len(summary.runs),
        "last_run": None if last is None else {
            "state": _run_state(last),
            "command": last.command,
            "executed": last.executed if last.ended is not None else summary.last_run_done,
            "failed": last.failed,
            "pending": last.pending,
            "tasks_per_second": _throughput(last, summary.last_run_done),
        },
    }


def render(summary: Summary) -> str:
    """The status report as text."""
    data = to_json(summary)
    lines = [
        f"function: {data['function']} (mode {data['mode']})",
        f"done:     {data['done']} tasks: {data['ok']} ok, {data['failed']} failed",
    ]
    for kind, count in sorted(summary.failed_by_kind.items()):
        lines.append(f"  {kind:<10} {count}")
    last = data["last_run"]
    if last is not None:
        rate = last["tasks_per_second"]
        pending = "unknown" if last["pending"] is None else str(last["pending"])
        lines += [
            f"runs:     {data['runs']}; last run {last['state']}: ran {last['executed']} "
            f"tasks" + (f" at {rate:.1f} tasks/s" if rate else "") + f", pending {pending}",
            f"resume:   {last['command']}",
        ]
    if summary.first_failures:
        lines.append("first failures:")
        for line, error in summary.first_failures:
            lines.append(f"  line {line}: [{error.get('kind')}] {error.get('type')}: "
                         f"{str(error.get('message', '')).splitlines()[0][:200]}"
                         if error.get("message") else
                         f"  line {line}: [{error.get('kind')}] {error.get('type')}")
    return "\n".join(lines)


def run(path: str, *, as_json: bool = False) -> int:
    """``corepool status``: 0 when the journal was read, 2 when it cannot be."""
    try:
        summary = read_summary(path)
    except JournalError as exc:
        print(f"corepool status: {exc}", file=sys.stderr)
        return 2
    if "target" not in summary.meta:
        print(f"corepool status: {path} is not a corepool run journal", file=sys.stderr)
        return 2
    print(json.dumps(to_json(summary), indent=2) if as_json else render(summary))
    return 0
