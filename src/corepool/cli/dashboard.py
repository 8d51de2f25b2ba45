"""``corepool report`` and ``corepool dashboard``: a journal as a web page.

``report`` writes the page once, self-contained. ``dashboard`` serves it live with
corepool's read-only page server (:mod:`corepool._watch.server`: ``GET /`` is the
page, ``GET /api/view`` the JSON it polls; 127.0.0.1 unless told otherwise, and then
only with a random token). The journal is read as ``corepool status`` reads it, so a
running batch is never blocked. The view is computed at most twice a second however
many pages poll it, and less often when it takes long: at most a twentieth of the time
goes to computing it (see :meth:`Dashboard.view`). ``corepool run --dashboard`` adds
its workers (:class:`RunWorkers`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .._watch.server import LOCAL_HOSTS, LiveServer, Unavailable
from .._watch.workers import WorkerStatus, WorkersView, cut, describe, worker_status
from .htmlview import POLL_SECONDS, api_body, page
from .journal import JournalError
from .recover import unreadable
from .runview import collect

__all__ = ["LOCAL_HOSTS", "Dashboard", "RunWorkers", "report", "serve"]

CACHE_SECONDS = POLL_SECONDS / 2  # the view is recomputed at most this often ...
CACHE_SHARE = 20  # ... and not before 20 times as long as it took to compute


def _error(command: str, path: str, exc: JournalError) -> int:
    print(unreadable(command, path, exc), file=sys.stderr)
    return 2


def report(path: str, output: str) -> int:
    """``corepool report``: write the page of the journal at ``path`` to ``output``."""
    try:
        view = collect(path)
    except JournalError as exc:
        return _error("report", path, exc)
    text = page(view)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        print(f"corepool report: cannot write {output} ({exc})", file=sys.stderr)
        return 2
    summary = view["summary"]
    print(f"corepool report: {output}: {summary['done']} tasks, {summary['ok']} ok, "
          f"{summary['failed']} failed", file=sys.stderr)
    return 0


class Dashboard(LiveServer):
    """The live view of one journal, served in a background thread.

    ``extra`` returns more HTML for the page (what only the running batch knows), or
    None.
    """

    def __init__(self, path: str, host: str = "127.0.0.1", port: int = 0,
                 extra: Callable[[], str] | None = None) -> None:
        super().__init__(host, port)
        self.path, self.extra = path, extra
        self.workers: RunWorkers | None = None  # corepool run --dashboard's
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._cost = 0.0

    def view(self) -> dict[str, Any]:
        """The journal's view, recomputed when older than CACHE_SECONDS and than
        CACHE_SHARE times its last computation: a batch with millions of tasks loses at
        most a twentieth of one core to the pages that watch it."""
        with self._lock:
            now = time.monotonic()
            if (self._cached is None
                    or now - self._cached[0] >= max(CACHE_SECONDS, CACHE_SHARE * self._cost)):
                try:
                    self._cached = (now, collect(self.path))
                except JournalError as exc:
                    raise Unavailable(str(exc)) from exc
                self._cost = time.monotonic() - now
            return self._cached[1]

    def page(self, api: str) -> str:
        """The live page."""
        view = self.view()
        return page(view, api=api, extra=self.extra() if self.extra else "")

    def api(self) -> bytes:
        """The view's data and its fragment."""
        view = self.view()
        return api_body(view, self.extra() if self.extra else "")


class RunWorkers:
    """``corepool run --dashboard``: the batch's workers, each with the input line it
    runs (once :meth:`attach` has given the pool and the batch's task positions)."""

    def __init__(self) -> None:
        self.core: Any = None
        self.lines: dict[int, tuple[Any, ...]] = {}
        self.view = WorkersView(self._label, self._show)

    def attach(self, core: Any, lines: dict[int, tuple[Any, ...]]) -> None:
        """Show ``core``'s workers; ``lines`` maps a running task's position to its
        record, whose last field is the input line."""
        self.core, self.lines = core, lines

    def _label(self, row: WorkerStatus) -> str:
        record = self.lines.get(row.task) if row.task is not None else None
        return f"line {record[-1]}" if record else f"task {row.task}"

    @staticmethod
    def _show(row: WorkerStatus) -> str:
        """A first run's tasks are raw lines: their text, not a ``bytes`` repr."""
        if isinstance(row.value, bytes):
            return cut(row.value.decode("utf-8", "replace").strip())
        return describe(row.job, row.value)

    def html(self) -> str:
        """The workers section (empty until the pool is attached)."""
        if self.core is None:
            return ""
        return self.view.html(worker_status(self.core), section="workers")


def serve(path: str, host: str, port: int) -> int:
    """``corepool dashboard``: serve the live view until Ctrl-C."""
    try:
        collect(path)  # refuse what is not a journal before listening
    except JournalError as exc:
        return _error("dashboard", path, exc)
    try:
        dashboard = Dashboard(path, host, port)
    except OSError as exc:
        print(f"corepool dashboard: cannot listen on {host}:{port} ({exc})", file=sys.stderr)
        return 2
    print(f"corepool dashboard: {dashboard.url}", flush=True)
    try:
        dashboard.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        dashboard.server.server_close()
    return 0
