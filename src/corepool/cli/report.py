"""What ``corepool run`` tells the user on stderr: progress while it runs, a summary
at the end. ``corepool status`` shares the ETA arithmetic.

On a terminal the progress is a bar (rows done of the total when the input is a file,
rate, ETA, failures so far) that redraws in place; otherwise a plain line every
``COREPOOL_PROGRESS_INTERVAL`` seconds (default 10), which logs can keep.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._watch.html import clock as format_eta  # ``1:02:03``, ``2:03``, or ``?``

__all__ = ["Counts", "Progress", "RecentRate", "eta_seconds", "format_eta", "summary"]

DEFAULT_INTERVAL = 10.0
RATE_WINDOW = 20.0  # seconds of recent progress the rate (and ETA) is measured over


@dataclass
class Counts:
    """Rows of one run so far: ok, failed by kind, run here, reused from the journal."""

    ok: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    executed: int = 0
    executed_failed: int = 0
    reused: int = 0
    retried: int = 0  # attempts run again, as the pool counted them at the last flush

    def add_failure(self, kind: str) -> None:
        """Count one failed row of ``kind``."""
        self.failed[kind] = self.failed.get(kind, 0) + 1

    @property
    def failures(self) -> int:
        """Failed rows of every kind."""
        return sum(self.failed.values())

    @property
    def rows(self) -> int:
        """Rows written."""
        return self.ok + self.failures


class RecentRate:
    """Rows per second over the last :data:`RATE_WINDOW` seconds of samples."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, rows: int, now: float | None = None) -> float | None:
        """Record that ``rows`` were done by now; returns the recent rate, if known."""
        now = time.monotonic() if now is None else now
        self._samples.append((now, rows))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        first_time, first_rows = self._samples[0]
        seconds = now - first_time
        return (rows - first_rows) / seconds if seconds > 0 else None


def eta_seconds(total: int | None, done: int, rate: float | None) -> float | None:
    """Seconds left at ``rate`` rows per second, or None when it cannot be told."""
    if total is None or not rate or rate <= 0:
        return None
    return max(0, total - done) / rate


def progress_interval() -> float:
    """Seconds between plain progress lines (``COREPOOL_PROGRESS_INTERVAL``)."""
    try:
        return max(0.05, float(os.environ.get("COREPOOL_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class Progress:
    """Progress on stderr: a bar on a terminal, else a plain line now and then."""

    BAR_FORMAT = ("{n_fmt}/{total_fmt} {percentage:3.0f}%|{bar}| {rate_fmt} "
                  "ETA {remaining}{postfix}")
    BAR_FORMAT_NO_TOTAL = "{n_fmt} rows, {rate_fmt}, elapsed {elapsed}{postfix}"

    def __init__(self, total: int | None, *, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.bar: Any = None
        self.rows = self.failed = 0
        self._rate = RecentRate()
        self._started = time.monotonic()
        self._interval = progress_interval()
        self._next_line = self._started + self._interval
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, file=sys.stderr, unit="row", dynamic_ncols=True,
                            bar_format=self.BAR_FORMAT if total is not None
                            else self.BAR_FORMAT_NO_TOTAL)
            self.bar.set_postfix_str("0 failed", refresh=False)

    def update(self, rows: int, failed: int) -> float | None:
        """``rows`` written so far, ``failed`` of them failures; returns the recent rate."""
        rate = self._rate.add(rows)
        if self.bar is not None:
            if failed != self.failed:
                self.bar.set_postfix_str(f"{failed} failed", refresh=False)
            self.bar.update(rows - self.rows)
        self.rows, self.failed = rows, failed
        if self.enabled and self.bar is None and time.monotonic() >= self._next_line:
            self._next_line = time.monotonic() + self._interval
            print(self.line(rate), file=sys.stderr, flush=True)
        return rate

    def line(self, rate: float | None) -> str:
        """The plain progress line."""
        done = f"{self.rows}"
        if self.total:
            done += f"/{self.total} rows ({100 * self.rows / self.total:.0f}%)"
        else:
            done += " rows"
        eta = eta_seconds(self.total, self.rows, rate)
        speed = f"{rate:.1f} rows/s" if rate is not None else "rate ?"
        text = f"corepool run: {done}, {speed}, {self.failed} failed"
        return text + (f", ETA {format_eta(eta)}" if eta is not None else "")

    def close(self) -> None:
        """Leave the bar on the screen as it ended."""
        if self.bar is not None:
            self.bar.close()


def summary(counts: Counts, elapsed: float, journal: str, stopped: str | None) -> str:
    """The summary printed at the end of a run."""
    failed = counts.failures
    head = f"{counts.rows} rows: {counts.ok} ok, {failed} failed"
    if failed:
        head += " (" + ", ".join(f"{n} {k}" for k, n in sorted(counts.failed.items())) + ")"
    rate = counts.executed / elapsed if elapsed > 0 else 0.0
    text = (f"corepool run: {head}; ran {counts.executed} in {elapsed:.2f} s "
            f"({rate:.1f} tasks/s), {counts.reused} from the journal {journal}")
    return f"{text}\ncorepool run: stopped early: {stopped}" if stopped else text
