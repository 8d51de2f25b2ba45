"""Pool.map, imap and ProcessPoolExecutor: what they do, two traps, and the drop-ins.

Trap 1: ``multiprocessing.Pool.imap`` and ``ProcessPoolExecutor.map`` read the whole
input before (or while) the first result arrives, so an endless or huge generator
fills memory. Trap 2: leaving ``multiprocessing.Pool``'s ``with`` block terminates
the pool, so an ``apply_async`` result fetched after the block never arrives.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import corepool


# --8<-- [start:setup]
class Source:
    """A generator of inputs that counts how far it has been read."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.read = 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.read += 1
            yield i


def square(x: int) -> int:
    return x * x


def slow_square(x: int) -> int:
    time.sleep(0.3)
    return x * x


# --8<-- [end:setup]


N = 10_000


def main() -> None:
    # --8<-- [start:stdlib]
    with multiprocessing.Pool(2) as pool:
        print("Pool.map:", pool.map(square, range(6)))
        source = Source(N)
        results = pool.imap(square, source)
        first = next(results)
        time.sleep(0.2)  # let the pool's task-handler thread run on
        print(f"Pool.imap: first result {first}; inputs read so far: {source.read:,} of {N:,}")
        for _ in results:  # read the rest: terminating a pool while its task-handler
            pass  # thread still feeds it can hang (yet another trap)

    with multiprocessing.Pool(2) as pool:
        late = pool.apply_async(slow_square, (7,))
    try:  # leaving the block called terminate(): the task was killed
        late.get(timeout=1)
    except multiprocessing.TimeoutError:
        print("apply_async after the with block: no result (TimeoutError after 1 s)")

    with ProcessPoolExecutor(2) as ex:
        source = Source(N)
        results = ex.map(square, source)  # submits one future per input, all at once
        print(
            f"ProcessPoolExecutor.map: first result {next(results)}; "
            f"inputs read so far: {source.read:,} of {N:,}"
        )
        ex.shutdown(cancel_futures=True)  # drop the queued rest
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    with corepool.Pool(2) as pool:  # same methods, same order of arguments
        print("corepool.Pool.map:", pool.map(square, range(6)))
        source = Source(N)
        first = next(pool.imap(square, source))
        time.sleep(0.2)
        print(f"corepool.Pool.imap: first result {first}; read so far: {source.read:,} of {N:,}")
        late = pool.apply_async(slow_square, (7,))
        print("apply_async, get() inside the block:", late.get(timeout=5))
        lost = pool.apply_async(slow_square, (9,))
    try:  # leaving the block terminated this pool too, but the result says so at once
        lost.get(timeout=5)
    except corepool.CorepoolError as error:
        print(f"apply_async, get() after the block: CorepoolError: {error}")

    with corepool.Executor(2) as ex:  # a concurrent.futures.Executor
        source = Source(N)
        results = ex.map(square, source)
        print(
            f"corepool.Executor.map: first result {next(results)}; "
            f"inputs read so far: {source.read:,} of {N:,}"
        )
        late_future = ex.submit(slow_square, 8)
    print("Executor's with block waits for submitted work:", late_future.result())
    # --8<-- [end:corepool]


if __name__ == "__main__":
    main()
