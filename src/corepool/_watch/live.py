"""``corepool.watch``: a live web page of a pool, or of every corepool call in a program.

::

    with corepool.Pool() as pool, corepool.watch(pool) as page:
        print(page.url)               # http://127.0.0.1:PORT/
        pool.map(work, inputs)

    page = corepool.watch()           # no pool: corepool.map / imap / starmap too
    results = corepool.map(work, inputs)
    page.close()

While a watch is on, :class:`~corepool.core.PoolCore` tells its
:class:`~.recorder.Recorder` when a job starts, as each piece of results is read,
when the job ends, and as each single call finishes (``PoolCore.watcher``: an
instance attribute for one pool, the class attribute for every pool). When no watch
is on that attribute is None, one test per job and per piece, and nothing of this
package is imported. The page is served by :class:`~.server.LiveServer`, the server
of ``corepool dashboard``, with its rules: 127.0.0.1 by default, a random token in
the URL on any other address, read-only, every value escaped.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .html import POLL_SECONDS
from .page import api_body, fragment, live_page
from .recorder import Recorder
from .server import LiveServer
from .workers import WorkersView

__all__ = ["Watch", "watch"]


def _core_of(pool: Any) -> Any:
    from ..core import PoolCore

    if isinstance(pool, PoolCore):
        return pool
    core = getattr(pool, "_core", None)
    if not isinstance(core, PoolCore):
        raise TypeError(f"corepool.watch() watches a corepool.Pool or Executor (or, with "
                        f"no argument, every pool), not {type(pool).__name__}")
    return core


class Watch(LiveServer):
    """A live page served while it is open; :attr:`url` is its address. Close it (or
    leave its ``with`` block) to stop serving and recording."""

    def __init__(self, pool: Any = None, *, port: int = 0, host: str = "127.0.0.1") -> None:
        from ..core import PoolCore

        self.core = None if pool is None else _core_of(pool)
        super().__init__(host, port)
        self.recorder = Recorder()
        self._owner: Any = PoolCore if self.core is None else self.core
        self._previous = self._owner.__dict__.get("watcher")
        if self.core is not None:
            self.recorder.cores[id(self.core)] = self.core
        self._workers = WorkersView()
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any], str] | None = None
        self._owner.watcher = self.recorder
        self.start()

    @property
    def what(self) -> str:
        """What is watched, for the page's title."""
        if self.core is None:
            return "every pool of this process"
        return f"a pool of {self.core.workers} {self.core.backend_name} workers"

    def _render(self) -> tuple[dict[str, Any], str]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= POLL_SECONDS / 2:
                view = self.recorder.view()
                cores = [core for core in list(self.recorder.cores.values())
                         if not core.terminated]
                self._cached = (now, view, fragment(view, cores, self._workers))
            return self._cached[1], self._cached[2]

    def page(self, api: str) -> str:
        """The live page."""
        return live_page(self._render()[1], api, self.what)

    def api(self) -> bytes:
        """The view's data and its fragment."""
        view, body = self._render()
        return api_body(view, body)

    def close(self) -> None:
        """Stop recording and serving (the page stops updating)."""
        if self._owner.__dict__.get("watcher") is self.recorder:
            if self._previous is None and self._owner is not self.core:
                self._owner.watcher = None
            elif self._previous is None:
                del self._owner.watcher
            else:
                self._owner.watcher = self._previous
        super().close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<corepool.watch {self.what} at {self.url}>"


def watch(pool: Any = None, *, port: int = 0, host: str = "127.0.0.1") -> Watch:
    """Serve a live page of ``pool`` (a :class:`corepool.Pool` or
    :class:`corepool.Executor`) or, with no pool, of every pool in this process,
    ``corepool.map`` / ``imap`` / ``starmap`` included: progress and rate of each job,
    its failures so far (kind, type, message, input), and each worker's pid, state,
    current task and how long it has run, memory and CPU.

    ``port`` 0 picks a free one; ``host`` is 127.0.0.1 unless given, and on any other
    address the URL carries a random token that every request must have. The page is
    read-only. Jobs started after the call are shown. Returns the :class:`Watch`
    (``.url``, ``.close()``, a context manager).

    Examples:
        >>> import corepool
        >>> with corepool.Pool(2) as pool, corepool.watch(pool) as page:
        ...     _ = pool.map(abs, range(100))
        ...     page.url.startswith("http://127.0.0.1:")
        True
    """
    return Watch(pool, port=port, host=host)
