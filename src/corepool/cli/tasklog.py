"""The last lines each task of ``corepool run`` logged, kept for the journal if it fails.

Tasks' records come back to the runner's process (``corepool.forwarding``), so a
handler on its root logger sees them with their task's index. While a run is on,
:func:`collecting` puts one there and lowers the root to INFO so that workers send
INFO records at all; what the runner printed before does not change: handlers that
took everything keep the old level, and with no handler at all one like logging's
last resort (WARNING and up, to stderr) stands in for it. A failed task's lines go
into its journal row (column ``logged``); a task that succeeded drops them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator

__all__ = ["KEPT_LINES", "TaskLogTail", "collecting", "current"]

#: Lines kept per task (the last ones).
KEPT_LINES = 20
_FORMAT = "%(levelname)s %(name)s: %(message)s"


class TaskLogTail(logging.Handler):
    """The last :data:`KEPT_LINES` lines logged by each task not yet finished."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter(_FORMAT))
        self.tails: dict[int, deque[str]] = {}
        self._tails_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        index = getattr(record, "corepool_task", None)
        if index is None:
            return
        lines = self.format(record).splitlines()
        with self._tails_lock:
            tail = self.tails.get(index)
            if tail is None:
                tail = self.tails[index] = deque(maxlen=KEPT_LINES)
            tail.extend(lines)

    def pop(self, index: int) -> str | None:
        """The lines of task ``index`` (finished: forgotten); None if it logged none."""
        if not self.tails:
            return None
        with self._tails_lock:
            tail = self.tails.pop(index, None)
        return "\n".join(tail) if tail else None


_current: TaskLogTail | None = None


def current() -> TaskLogTail | None:
    """The collector of the run going on in this process, if any."""
    return _current


@contextlib.contextmanager
def collecting() -> Iterator[TaskLogTail]:
    """Collect the tasks' lines while the block runs (start the pool inside it: a pool
    takes the logging levels its workers use when it starts)."""
    global _current
    root = logging.getLogger()
    before = root.level
    tail = TaskLogTail()
    changed: list[logging.Handler] = []
    added: logging.Handler | None = None
    if before > logging.INFO:
        for handler in root.handlers:
            if handler.level == logging.NOTSET:
                handler.setLevel(before)
                changed.append(handler)
        if not root.handlers and logging.lastResort is not None:
            added = logging.StreamHandler(sys.stderr)
            added.setLevel(logging.lastResort.level)
        root.setLevel(logging.INFO)
    if added is not None:
        root.addHandler(added)
    root.addHandler(tail)
    _current = tail
    try:
        yield tail
    finally:
        _current = None
        root.removeHandler(tail)
        if added is not None:
            root.removeHandler(added)
        for handler in changed:
            handler.setLevel(logging.NOTSET)
        root.setLevel(before)
