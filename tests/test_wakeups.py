"""The supervisor's two ways to wait (``_engine/wakeups.py``): the POSIX one (a pipe,
sentinels in the selector) and the one for systems whose ``select`` takes sockets only
(a socket pair, a thread waiting on the sentinels), with real processes that end."""

from __future__ import annotations

import multiprocessing
import queue
import selectors
import sys
import threading

import pytest

from corepool._engine.wakeups import WAKE, PipeWakeups, WatcherWakeups, watcher_needed

pytestmark = pytest.mark.timeout(60)


def _wait_for_input(conn: object) -> None:
    conn.recv()  # type: ignore[attr-defined]


def _process() -> tuple[multiprocessing.Process, object]:
    """A process that ends when it is sent anything, and the end to send on."""
    ours, theirs = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(target=_wait_for_input, args=(theirs,))
    proc.start()
    theirs.close()
    return proc, ours


def test_the_pipe_way_wakes_and_reports_an_ended_process_in_the_selector() -> None:
    selector = selectors.DefaultSelector()
    wakeups = PipeWakeups(selector)
    proc, conn = _process()
    try:
        wakeups.watch(3, proc.sentinel)
        assert selector.select(0) == []  # nothing yet
        wakeups.wake()
        assert [key.data for key, _ in selector.select(5)] == [WAKE]
        wakeups.drain()
        assert selector.select(0) == []  # drained
        conn.send("end")  # type: ignore[attr-defined]
        proc.join(10)
        assert [key.data for key, _ in selector.select(5)] == [("sentinel", 3)]
        wakeups.unwatch(proc.sentinel)
        assert selector.select(0) == []
    finally:
        proc.join(10)
        wakeups.close()
        selector.close()


def test_the_watcher_way_reports_each_ended_process_once_and_stops_when_closed() -> None:
    selector = selectors.DefaultSelector()
    ended: queue.SimpleQueue[int] = queue.SimpleQueue()
    wakeups = WatcherWakeups(selector, ended.put)
    first, first_conn = _process()
    second, second_conn = _process()
    try:
        wakeups.watch(1, first.sentinel)
        wakeups.watch(2, second.sentinel)
        wakeups.wake()
        assert [key.data for key, _ in selector.select(5)] == [WAKE]
        wakeups.drain()
        assert selector.select(0) == []
        second_conn.send("end")  # type: ignore[attr-defined]
        assert ended.get(timeout=10) == 2
        wakeups.unwatch(first.sentinel)  # no longer wanted: its end is not reported
        first_conn.send("end")  # type: ignore[attr-defined]
        first.join(10)
        with pytest.raises(queue.Empty):
            ended.get(timeout=0.5)
    finally:
        first.join(10)
        second.join(10)
        wakeups.close()
        selector.close()
    assert not any(t.name == "corepool-sentinels" and t.is_alive()
                   for t in threading.enumerate())


def test_the_watcher_is_used_where_select_takes_sockets_only_and_for_portable() -> None:
    assert watcher_needed("portable")
    assert watcher_needed("linux") == (sys.platform == "win32")
