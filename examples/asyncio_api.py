"""asyncio: ``await corepool.amap(...)``, ``async for ... in corepool.aimap(...)``, and
cancelling them.

The event loop keeps running while the tasks run in worker processes. Cancelling the
awaiting task drops the tasks that have not started and stops the running ones (their
workers are replaced).
"""

from __future__ import annotations

import asyncio
import time

import corepool


def slow_square(x: int) -> int:
    time.sleep(0.3)
    return x * x


def hang(x: int) -> int:
    time.sleep(3600)
    return x


async def count_ticks(ticks: list[int]) -> None:
    while True:
        await asyncio.sleep(0.01)
        ticks[0] += 1


async def main() -> None:
    ticks = [0]
    ticker = asyncio.create_task(count_ticks(ticks))
    # --8<-- [start:amap]
    squares = await corepool.amap(slow_square, range(8), workers=2)
    print(f"amap: {squares}; the loop ticked {ticks[0]} times meanwhile")

    async for square in corepool.aimap(slow_square, range(8), workers=2, ordered=False):
        print(f"aimap: first result {square} (of 8), the rest still running")
        break  # leaving early drops the tasks that have not started
    # --8<-- [end:amap]

    # --8<-- [start:cancel]
    work = asyncio.create_task(corepool.amap(hang, range(4), workers=2))
    await asyncio.sleep(0.5)  # let the two workers start hanging
    start = time.monotonic()
    work.cancel()
    try:
        await work
    except asyncio.CancelledError:
        print("amap cancelled: the hung tasks are stopped, the other two never start")
    again = await corepool.amap(abs, [-1, -2], workers=2)
    print(f"on the replaced workers: {again}, {time.monotonic() - start:.2f} s after cancel()")
    # --8<-- [end:cancel]
    ticker.cancel()


if __name__ == "__main__":
    asyncio.run(main())
