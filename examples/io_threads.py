"""I/O-bound work: threads, not processes.

A thread waiting on the network releases the GIL, so many threads wait at once. Worker
processes help only CPU-bound work, and there are only as many as cores. Here a local
HTTP server on 127.0.0.1 answers each request after 50 ms, as a remote service would.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import corepool

DELAY = 0.05


# --8<-- [start:setup]
class SlowHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(DELAY)  # the remote service thinking
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the output readable


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # the default listen backlog of 5 drops bursts of connections


@contextmanager
def local_server() -> Iterator[str]:
    server = Server(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        return len(response.read())


# --8<-- [end:setup]


def timed(label: str, run: Callable[[], list[int]], expected: int) -> None:
    start = time.perf_counter()
    sizes = run()
    assert len(sizes) == expected
    print(f"{label:<44} {time.perf_counter() - start:5.2f} s")


def main() -> None:
    with local_server() as base:
        urls = [f"{base}/item/{i}" for i in range(20)]
        print(f"{len(urls)} requests, each answered after {DELAY * 1000:.0f} ms")
        # --8<-- [start:stdlib]
        timed("one after another", lambda: [fetch(u) for u in urls], len(urls))
        with ThreadPoolExecutor(max_workers=20) as ex:
            timed("ThreadPoolExecutor(20)", lambda: list(ex.map(fetch, urls)), len(urls))
        # --8<-- [end:stdlib]

        # --8<-- [start:corepool]
        with corepool.Pool(2) as pool:  # started before the clock runs
            timed(
                "corepool.Pool(2): processes, one per core",
                lambda: pool.map(fetch, urls),
                len(urls),
            )
        with corepool.Pool(20, backend="thread") as pool:
            timed("corepool.Pool(20, backend='thread')", lambda: pool.map(fetch, urls), len(urls))
        # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
