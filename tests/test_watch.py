"""``corepool.watch``: what its page holds, its safety rules, and that it leaves no
trace when closed. (The page in a real browser: ``test_watch_browser.py``.)"""

from __future__ import annotations

import json
import threading

import pytest

import corepool
from corepool.core import PoolCore
from dashboard_helpers import fetch


def _view(url: str) -> dict:
    status, body = fetch(url.replace("/?", "/api/view?") if "?" in url else url + "api/view")
    assert status == 200, body
    return json.loads(body)


def _fails(x: object) -> object:
    if x == 3:
        raise ValueError("<b>three</b>")
    return x


def test_a_watched_pool_shows_its_jobs_failures_and_workers() -> None:
    with corepool.Pool(2) as pool, corepool.watch(pool) as page:
        assert pool._core.watcher is page.recorder
        assert list(pool.imap(_fails, range(10), on_error="return"))[3].args == ("<b>three</b>",)
        assert pool.apply_async(abs, (-4,)).get(timeout=30) == 4
        data = _view(page.url)
        view = data["view"]
        assert view["done"] == 11 and view["failed"] == 1
        assert view["failed_by_kind"] == {"exception": 1}
        (failure,) = view["failures"]
        assert (failure["task"], failure["type"], failure["input"]) == (3, "ValueError", "3")
        assert "Traceback" in failure["traceback"]
        jobs = {job["function"]: job for job in view["jobs"]}
        assert jobs[f"{__name__}._fails"]["done"] == 10
        assert jobs["single calls"]["done"] == 1
        html = data["html"]
        assert "&lt;b&gt;three&lt;/b&gt;" in html and "<b>three" not in html
        for pid in pool.pids():
            assert f'<td class="n pid">{pid}</td>' in html
    assert "watcher" not in pool._core.__dict__  # closed: nothing left on the pool


def test_watch_everywhere_counts_corepool_map_and_leaves_nothing_when_closed() -> None:
    assert PoolCore.watcher is None
    page = corepool.watch()
    try:
        assert corepool.map(abs, range(-50, 50), workers=2) == [abs(i) for i in range(-50, 50)]
        view = _view(page.url)["view"]
        assert view["done"] == 100 and view["jobs"][0]["state"] == "ended"
    finally:
        page.close()
    assert PoolCore.watcher is None
    with pytest.raises(OSError):
        fetch(page.url)


def test_thread_pool_workers_show_without_pids() -> None:
    with corepool.Pool(2, backend="thread") as pool, corepool.watch(pool) as page:
        pool.map(abs, range(20))
        html = _view(page.url)["html"]
        assert "thread backend" in html and html.count('class="worker"') == 2


def test_other_addresses_need_the_token_and_nothing_changes_anything() -> None:
    with corepool.Pool(1) as pool, corepool.watch(pool, host="127.0.0.2") as page:
        assert "?token=" in page.url
        base = page.url.split("?")[0]
        assert fetch(base)[0] == 403
        assert fetch(base + "api/view")[0] == 403
        assert fetch(page.url)[0] == 200
        assert fetch(page.url, method="POST")[0] == 501
        assert fetch(page.url.replace("/?", "/other?"))[0] == 404
    with corepool.Pool(1) as pool, corepool.watch(pool) as page:
        assert "token" not in page.url
        # DNS rebinding: a page of another site that resolves to 127.0.0.1
        assert fetch(page.url, headers={"Host": "evil.example"})[0] == 403


def test_watch_refuses_what_is_not_a_pool() -> None:
    with pytest.raises(TypeError, match=r"corepool\.Pool or Executor"):
        corepool.watch(threading.Lock())


def test_an_executor_can_be_watched() -> None:
    with corepool.Executor(2) as ex, corepool.watch(ex) as page:
        assert list(ex.map(abs, [-1, -2])) == [1, 2]
        assert _view(page.url)["view"]["done"] == 2


def test_worker_status_names_the_running_task_and_how_long_it_has_run() -> None:
    """The accessor the pages use: a call sleeping in a worker shows with its input,
    and its running time grows; the other worker is idle."""
    import time

    from corepool._watch.workers import describe, worker_status

    with corepool.Pool(2) as pool:
        future = pool.submit(time.sleep, 30)
        deadline = time.monotonic() + 20
        while True:
            busy = [w for w in worker_status(pool._core).workers if w.task is not None]
            if busy and busy[0].running is not None and busy[0].running > 0.2:
                break
            assert time.monotonic() < deadline, "the sleeping call never showed"
            time.sleep(0.05)
        (row,) = busy
        assert row.state == "busy" and row.pid in pool.pids()
        assert describe(row.job, row.value) == "(30)"
        first = row.running
        def running() -> float | None:
            rows = worker_status(pool._core).workers
            return next(w.running for w in rows if w.worker == row.worker)

        while (again := running()) is None or again <= first:
            assert time.monotonic() < deadline, "the running time did not grow"
            time.sleep(0.05)
        assert {w.state for w in worker_status(pool._core).workers} == {"busy", "idle"}
        future.cancel()
