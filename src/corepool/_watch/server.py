"""A read-only live page over HTTP: the one server of every corepool dashboard.

The standard library's threaded HTTP server, in a daemon thread. ``GET /`` is the
page, ``GET /api/view`` the JSON it polls (see :mod:`.html`); any other path is 404,
any other method 501, and nothing changes anything. It binds 127.0.0.1 unless told
otherwise; on any other address (even another loopback one) every request must carry
the random token printed in the URL, or gets 403. Without a token, requests must name
a local host (``Host: 127.0.0.1:PORT``, ``localhost``), against DNS rebinding.

A subclass says what to show: :meth:`LiveServer.page` and :meth:`LiveServer.api`
(raising :class:`Unavailable` for a 503).
"""

from __future__ import annotations

import hmac
import html
import http.server
import secrets
import socket
import threading
import urllib.parse
from typing import Any

__all__ = ["LOCAL_HOSTS", "LiveServer", "Unavailable"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class Unavailable(Exception):
    """The view cannot be computed now (answered with 503 and this text)."""


class LiveServer:
    """The server of one live page; subclasses render it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = None if host in LOCAL_HOSTS else secrets.token_urlsafe(16)
        owner = self

        class Handler(_Handler):
            live = owner

        self.server = (_Server6 if ":" in host else _Server)((host, port), Handler)
        self._thread: threading.Thread | None = None

    def page(self, api: str) -> str:
        """The whole page, polling ``api``."""
        raise NotImplementedError

    def api(self) -> bytes:
        """The JSON the page polls."""
        raise NotImplementedError

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
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                        name="corepool-dashboard", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread = None
        self.server.server_close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(http.server.BaseHTTPRequestHandler):
    live: LiveServer
    server_version = "corepool-dashboard"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal belongs to the program being watched."""

    def do_GET(self) -> None:
        """The page, or its JSON; nothing else."""
        live = self.live
        parts = urllib.parse.urlsplit(self.path)
        if not live.allowed(parts.query, self.headers.get("Host")):
            self._refuse(403, "forbidden: this dashboard needs its token")
            return
        if parts.path not in ("/", "/api/view"):
            self._refuse(404, "not found")
            return
        try:
            if parts.path == "/":
                token = f"?token={live.token}" if live.token else ""
                body = live.page(f"/api/view{token}").encode()
                self._send(200, "text/html; charset=utf-8", body)
            else:
                self._send(200, "application/json", live.api())
        except Unavailable as exc:
            self._refuse(503, str(exc))

    def _refuse(self, status: int, text: str) -> None:
        """An error as a small page that names its own icon: a browser shown a plain
        text error asks for ``/favicon.ico`` too, and logs a second error for it."""
        body = ('<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" '
                f'href="data:,"><title>{status}</title></head><body><p>{html.escape(text)}'
                "</p></body></html>\n")
        self._send(status, "text/html; charset=utf-8", body.encode())

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
