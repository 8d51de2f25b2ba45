"""Process, Queue and Pipe by hand, the join-before-get deadlock, and the corepool way.

A child that has put data on a ``multiprocessing.Queue`` does not exit until a feeder
thread has pushed all of it into the underlying pipe. A pipe holds about 64 KiB: a
parent that calls ``join()`` before ``get()`` waits for a child that waits for the
parent. This script reproduces it with a timeout instead of hanging.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from multiprocessing.connection import Connection

import corepool


# --8<-- [start:setup]
def produce(queue: multiprocessing.Queue[list[int]], n: int) -> None:
    queue.put(list(range(n)))  # returns at once; a feeder thread writes it to the pipe


def square_server(conn: Connection) -> None:
    """Answer requests on one end of a Pipe until told to stop."""
    while (x := conn.recv()) is not None:
        conn.send(x * x)
    conn.close()


def swap(conn: Connection, n: int) -> None:
    """Send a large list, then receive one: fine alone, a deadlock if the other end
    also sends first."""
    conn.send(list(range(n)))
    conn.recv()
    conn.close()


def make_list(n: int) -> list[int]:
    return list(range(n))


# --8<-- [end:setup]


def main() -> None:
    # --8<-- [start:stdlib]
    queue: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
    child = multiprocessing.Process(target=produce, args=(queue, 200_000))
    child.start()
    child.join(timeout=1)  # the trap: join() before get(); without the timeout, forever
    if child.is_alive():
        print("deadlock: join() waited 1 s and the child is still alive,")
        print("  blocked writing its 200,000-item list into a pipe nobody reads")
    data = queue.get()  # reading the queue lets the child finish
    child.join()
    print(f"get() then join(): {len(data):,} items, child exit code {child.exitcode}")

    # The fix: get() everything first, join() after.
    queue = multiprocessing.Queue()
    child = multiprocessing.Process(target=produce, args=(queue, 200_000))
    child.start()
    data = queue.get(timeout=30)
    child.join(timeout=30)
    print(f"fixed order: {len(data):,} items, child exit code {child.exitcode}")

    # A Pipe is a two-way connection between exactly two processes.
    parent_end, child_end = multiprocessing.Pipe()
    server = multiprocessing.Process(target=square_server, args=(child_end,))
    server.start()
    answers = []
    for x in (2, 3, 4):
        parent_end.send(x)
        answers.append(parent_end.recv())
    parent_end.send(None)
    server.join(timeout=30)
    print(f"Pipe request/response: {answers}, server exit code {server.exitcode}")

    # Both ends send a large object before either receives: each send() waits for a
    # reader. The parent's send runs in a thread here, so the script can look and recover.
    parent_end, child_end = multiprocessing.Pipe()
    peer = multiprocessing.Process(target=swap, args=(child_end, 200_000))
    peer.start()
    sender = threading.Thread(target=parent_end.send, args=(list(range(200_000)),))
    sender.start()
    sender.join(timeout=1)
    if sender.is_alive():
        print("Pipe deadlock: after 1 s both ends are still blocked in send()")
    received = parent_end.recv()  # reading one side lets the other side finish
    sender.join(timeout=30)
    peer.join(timeout=30)
    print(f"recv() on one end: {len(received):,} items; peer exit code {peer.exitcode}")
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    start = time.perf_counter()
    (data,) = corepool.map(make_list, [200_000], workers=2)  # the result is the return value
    elapsed = time.perf_counter() - start
    print(f"corepool.map: {len(data):,} items returned in {elapsed:.2f} s; no queue, no join")
    print("corepool.map squares:", corepool.map(lambda x: x * x, [2, 3, 4], workers=2))
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
