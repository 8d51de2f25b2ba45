"""asyncio and CPU-bound work: a blocking call freezes the event loop; an executor does not.

An event loop runs one callback at a time. A coroutine that computes for a second
without awaiting stops every other coroutine for that second: timers fire late,
connections wait. ``loop.run_in_executor(corepool.Executor(), fn, arg)`` runs ``fn`` in
a worker process and gives the loop an awaitable; ``asyncio.wrap_future`` does the same
for any ``concurrent.futures.Future``, such as ``corepool.Pool.submit``'s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import corepool

N = 2_500_000


def burn(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


# --8<-- [start:setup]
async def heartbeat(stop: asyncio.Event, gaps: list[float]) -> None:
    """Ticks every 10 ms and records how late each tick was."""
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


# --8<-- [end:setup]


async def measure(label: str, work: Callable[[], Awaitable[list[int]]]) -> None:
    stop, gaps = asyncio.Event(), []
    ticker = asyncio.create_task(heartbeat(stop, gaps))
    await asyncio.sleep(0.05)
    start = time.perf_counter()
    results = await work()
    elapsed = time.perf_counter() - start
    stop.set()
    await ticker
    assert len(results) == 2
    print(f"{label:<46} {elapsed:5.2f} s; the loop's longest stall: {max(gaps) * 1000:4.0f} ms")


async def main() -> None:
    # --8<-- [start:blocking]
    async def blocking() -> list[int]:
        return [burn(N), burn(N)]  # computes inside the coroutine: the loop stops

    await measure("burn() called in a coroutine", blocking)
    # --8<-- [end:blocking]

    # --8<-- [start:corepool]
    loop = asyncio.get_running_loop()
    with corepool.Executor(max_workers=2) as executor:
        await loop.run_in_executor(executor, abs, -1)  # start the workers first

        async def in_executor() -> list[int]:
            runs = [loop.run_in_executor(executor, burn, N) for _ in range(2)]
            return await asyncio.gather(*runs)

        await measure("loop.run_in_executor(corepool.Executor())", in_executor)

    with corepool.Pool(2) as pool:
        pool.apply(abs, (-1,))

        async def wrapped() -> list[int]:
            futures = [asyncio.wrap_future(pool.submit(burn, N)) for _ in range(2)]
            return await asyncio.gather(*futures)

        await measure("asyncio.wrap_future(pool.submit(...))", wrapped)
    # --8<-- [end:corepool]


if __name__ == "__main__":
    asyncio.run(main())
