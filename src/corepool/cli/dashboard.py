"""``corepool report`` and ``corepool dashboard``: a journal as a web page.

``report`` writes the page once, self-contained. ``dashboard`` serves it live with the
standard library's threaded HTTP server: ``GET /`` is the page, ``GET /api/view`` the
JSON it polls (the view's data and its rendered HTML). Nothing else is served and no
request changes anything; the journal is read as ``corepool status`` reads it, so a
running batch is never blocked. The view is computed at most twice a second however
many pages poll it, and less often when it takes long: at most a twentieth of the time
goes to computing it (see :meth:`Dashboard.view`).

It binds 127.0.0.1 unless ``--host`` says otherwise; on any other address (even
another loopback one) every request must carry the random token printed in the URL,
or gets 403. Without a token, requests must name a local host (``Host:
127.0.0.1:PORT``, ``localhost``), against DNS rebinding.
"""

from __future__ import annotations

import hmac
import html
import http.server
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import psutil

from .htmlview import POLL_SECONDS, api_body, page
from .journal import JournalError
from .recover import damage_advice, is_damage
from .runview import collect

__all__ = ["Dashboard", "Workers", "report", "serve"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CACHE_SECONDS = POLL_SECONDS / 2  # the view is recomputed at most this often ...
CACHE_SHARE = 20  # ... and not before 20 times as long as it took to compute


def _error(command: str, path: str, exc: JournalError) -> int:
    advice = f"; {damage_advice(path)}" if is_damage(exc.__cause__) else ""
    print(f"corepool {command}: {exc}{advice}", file=sys.stderr)
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


class Dashboard:
    """The live view of one journal, served in a background thread.

    ``extra`` returns more HTML for the page (what only the running batch knows), or
    None.
    """

    def __init__(self, path: str, host: str = "127.0.0.1", port: int = 0,
                 extra: Callable[[], str] | None = None) -> None:
        self.path, self.extra = path, extra
        self.token = None if host in LOCAL_HOSTS else secrets.token_urlsafe(16)
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._cost = 0.0
        dashboard = self

        class Handler(_Handler):
            owner = dashboard

        self.server = (_Server6 if ":" in host else _Server)((host, port), Handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address (with the token, when one is needed)."""
        host, port = self.server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        if host in ("0.0.0.0", "::"):  # every address: name one others can reach
            host = socket.gethostname()
        shown = f"[{host}]" if ":" in host else host
        query = f"?token={self.token}" if self.token else ""
        return f"http://{shown}:{port}/{query}"

    def view(self) -> dict[str, Any]:
        """The journal's view, recomputed when older than CACHE_SECONDS and than
        CACHE_SHARE times its last computation: a batch with millions of tasks loses at
        most a twentieth of one core to the pages that watch it."""
        with self._lock:
            now = time.monotonic()
            if (self._cached is None
                    or now - self._cached[0] >= max(CACHE_SECONDS, CACHE_SHARE * self._cost)):
                self._cached = (now, collect(self.path))
                self._cost = time.monotonic() - now
            return self._cached[1]

    def allowed(self, query: str, host: str | None) -> bool:
        """Whether a request with this query string and Host header may see the view.

        Without a token, only requests addressed to a local name pass: a web page
        elsewhere cannot read the view by pointing its own name at 127.0.0.1 (DNS
        rebinding), since its requests carry that name."""
        if self.token is None:
            name = urllib.parse.urlsplit(f"//{host or ''}").hostname or ""
            return name in LOCAL_HOSTS
        given = urllib.parse.parse_qs(query).get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())

    def start(self) -> None:
        """Serve in a daemon thread (``corepool run --dashboard``)."""
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        name="corepool-dashboard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        if self._thread is not None:
            self.server.shutdown()
        self.server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    owner: Dashboard
    server_version = "corepool-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal belongs to the batch."""

    def do_GET(self) -> None:
        """The page, or its JSON; nothing else."""
        owner = self.owner
        parts = urllib.parse.urlsplit(self.path)
        if not owner.allowed(parts.query, self.headers.get("Host")):
            self._send(403, "text/plain", b"forbidden: this dashboard needs its token\n")
            return
        if parts.path not in ("/", "/api/view"):
            self._send(404, "text/plain", b"not found\n")
            return
        try:
            view = owner.view()
        except JournalError as exc:
            self._send(503, "text/plain", f"{exc}\n".encode())
            return
        extra = owner.extra() if owner.extra else ""
        if parts.path == "/":
            token = f"?token={owner.token}" if owner.token else ""
            body = page(view, api=f"/api/view{token}", extra=extra).encode()
            self._send(200, "text/html; charset=utf-8", body)
        else:
            self._send(200, "application/json", api_body(view, extra))

    def _send(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy",
                         "default-src 'none'; style-src 'unsafe-inline'; "
                         "script-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:")
        self.end_headers()
        self.wfile.write(body)


class Workers:
    """What only the running batch knows: its worker processes (pid, state, memory, CPU,
    age) and how many were replaced, as HTML for the live page."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._known: dict[int, psutil.Process] = {}
        self._gone = 0
        self._lock = threading.Lock()

    def html(self) -> str:
        """The workers section (CPU is measured between two calls)."""
        with self._lock:
            try:
                children = self._me.children()
            except psutil.Error:
                children = []
            alive = {child.pid for child in children}
            self._gone += sum(1 for pid in self._known if pid not in alive)
            self._known = {c.pid: self._known.get(c.pid, c) for c in children}
            rows, now = [], time.time()
            for pid, proc in sorted(self._known.items()):
                try:
                    with proc.oneshot():
                        rss, cpu = proc.memory_info().rss, proc.cpu_percent()
                        state, age = proc.status(), now - proc.create_time()
                except psutil.Error:
                    continue
                rows.append(f'<tr><td class="n">{pid}</td><td>{html.escape(state)}</td>'
                            f'<td class="n">{rss / 2**20:.1f} MiB</td>'
                            f'<td class="n">{cpu:.0f}%</td><td class="n">{age:.0f} s</td></tr>')
            gone = self._gone
        return ('<section id="workers"><h2>Workers</h2><p class="muted">processes of this '
                f"run (pid {self._me.pid}); {gone} ended or replaced so far</p>"
                '<table class="narrow"><tr>'
                '<th class="n">pid</th><th>state</th><th class="n">RSS</th>'
                '<th class="n">CPU</th><th class="n">age</th></tr>'
                f'{"".join(rows)}</table></section>')


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
