"""asyncio: ``corepool.amap`` / ``aimap`` and ``Pool.amap`` / ``aimap``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import corepool
import tasks
from corepool.api import _default_pool

LOCAL = ["process", "thread", "serial"]


async def ticking_while(work: asyncio.Future[object] | asyncio.Task[object]) -> int:
    """How many 10 ms ticks the loop ran while ``work`` was awaited."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    clock = asyncio.create_task(ticker())
    try:
        await work
    finally:
        clock.cancel()
    return ticks


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", LOCAL)
def test_amap_and_aimap(backend: str) -> None:
    async def main() -> tuple[list[int], list[int], list[object]]:
        mapped = await corepool.amap(tasks.square, range(50), workers=2, backend=backend)
        streamed = [
            r
            async for r in corepool.aimap(
                tasks.square, range(50), workers=2, backend=backend, ordered=False
            )
        ]
        errors = await corepool.amap(
            tasks.fail_on, range(5), workers=2, backend=backend, on_error="return"
        )
        return mapped, sorted(streamed), errors

    mapped, streamed, errors = asyncio.run(main())
    assert mapped == streamed == [x * x for x in range(50)]
    assert isinstance(errors[3], ValueError) and errors[:3] == [0, 1, 2]


@pytest.mark.timeout(60)
def test_amap_raises_the_first_failure() -> None:
    with pytest.raises(ValueError):
        asyncio.run(corepool.amap(tasks.fail_on, range(5), workers=2))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", LOCAL)
def test_the_loop_keeps_running_while_tasks_run(backend: str) -> None:
    async def main() -> tuple[int, list[float]]:
        work = asyncio.ensure_future(
            corepool.amap(tasks.sleep_for, [0.6, 0.6], workers=2, backend=backend)
        )
        ticks = await ticking_while(work)
        return ticks, work.result()

    ticks, results = asyncio.run(main())
    assert results == [0.6, 0.6]
    assert ticks >= 30  # 0.6 s or more of 10 ms ticks; a blocked loop gets none


async def started(path: Path, count: int) -> list[int]:
    """The pids written by ``count`` started tasks (polled: the tasks run elsewhere)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path.exists():
            pids = [int(line) for line in path.read_text().split()]
            if len(pids) >= count:
                return pids
        await asyncio.sleep(0.01)
    raise AssertionError("the tasks did not start")


@pytest.mark.timeout(60)
def test_cancelling_stops_running_tasks_within_a_second(tmp_path: Path) -> None:
    log = tmp_path / "started"

    async def main() -> tuple[float, list[int], list[int]]:
        hang = [(str(log), 600.0)] * 6
        work = asyncio.create_task(corepool.amap(tasks.note_start_then_sleep_args, hang, workers=2))
        pids = await started(log, 2)
        workers = [psutil.Process(pid) for pid in pids]  # before they can be gone
        began = time.monotonic()
        work.cancel()
        with pytest.raises(asyncio.CancelledError):
            await work
        _gone, alive = psutil.wait_procs(workers, timeout=5)
        stopped_after = time.monotonic() - began
        assert not alive
        after = await corepool.amap(tasks.pid_of, range(4), workers=2)
        return stopped_after, pids, after

    stopped_after, pids, after = asyncio.run(main())
    assert stopped_after < 1.0
    assert not set(after) & set(pids)  # replaced workers ran the next call
    # What had not started never ran: only the first two wrote their pid.
    assert len(log.read_text().split()) == 2


@pytest.mark.timeout(60)
def test_cancelling_aimap_stops_its_running_tasks(tmp_path: Path) -> None:
    log = tmp_path / "started"

    async def consume() -> list[int]:
        out = []
        async for pid in corepool.aimap(
            tasks.note_start_then_sleep_args, [(str(log), 600.0)] * 4, workers=2
        ):
            out.append(pid)
        return out

    async def main() -> list[int]:
        work = asyncio.create_task(consume())
        workers = [psutil.Process(pid) for pid in await started(log, 2)]
        work.cancel()
        with pytest.raises(asyncio.CancelledError):
            await work
        _gone, alive = psutil.wait_procs(workers, timeout=1.0)
        assert not alive
        return await corepool.amap(tasks.square, [3], workers=2)

    assert asyncio.run(main()) == [9]


@pytest.mark.timeout(60)
def test_cancelling_amap_on_threads_replaces_the_threads_it_leaves_running(
    tmp_path: Path,
) -> None:
    """A thread cannot be stopped: it finishes its task in the background, and a fresh
    thread takes its place at once (the next call waited for the old ones to end)."""
    log, go, ended = tmp_path / "started", tmp_path / "go", tmp_path / "ended"

    async def main() -> list[int]:
        with corepool.Pool(2, backend="thread") as pool:
            waits = [(str(log), str(go), str(ended))] * 6
            work = asyncio.create_task(pool.amap(tasks.note_start_then_wait, waits, chunksize=1))
            await started(log, 2)
            work.cancel()
            with pytest.raises(asyncio.CancelledError):
                await work
            after = await pool.amap(tasks.square, [3, 4], chunksize=1)
            assert not ended.exists()  # the next call ran while the first two still waited
            assert pool.stats().restarts == 2
            go.touch()
            return after

    assert asyncio.run(main()) == [9, 16]
    assert len(log.read_text().split()) == 2


def _tasks_waiting_on(dask_worker: Any) -> list[str]:
    return [str(key) for key, task in dask_worker.state.tasks.items()
            if task.state not in ("executing", "cancelled", "memory", "released")]


def dask_queue_empties(address: str) -> bool:
    """True once no Dask worker holds a task other than those it runs (polled)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not any(client.run(_tasks_waiting_on).values()):
                return True
            time.sleep(0.01)
    return False


@pytest.mark.timeout(120)
def test_cancelling_amap_on_dask_drops_its_queued_chunks(
    tmp_path: Path, dask_cluster: Any
) -> None:
    """Dask cannot stop a running task, but the chunks still queued on the cluster are
    cancelled there (they ran once the running ones ended)."""
    log, go = tmp_path / "started", tmp_path / "go"
    on_dask = {"backend": "dask", "address": dask_cluster.address}

    async def main() -> list[int]:
        waits = [(str(log), str(go))] * 6
        work = asyncio.create_task(
            corepool.amap(tasks.note_start_then_wait, waits, chunksize=1, **on_dask)
        )
        await started(log, 2)  # the cluster's two worker threads are busy
        work.cancel()
        with pytest.raises(asyncio.CancelledError):
            await work
        # The scheduler took the cancel before it returned; its workers hear of it a
        # moment later (Dask batches its messages), and one held the next task ready.
        assert await asyncio.to_thread(dask_queue_empties, dask_cluster.address)
        go.touch()  # the two running tasks end
        return await corepool.amap(tasks.square, [3, 4], chunksize=1, **on_dask)

    assert asyncio.run(main()) == [9, 16]
    assert len(log.read_text().split()) == 2


@pytest.mark.timeout(60)
def test_pool_amap_aimap_and_leaving_early() -> None:
    async def main(pool: corepool.Pool) -> tuple[list[int], list[int]]:
        mapped = await pool.amap(tasks.square, range(10))
        first: list[int] = []
        async for value in pool.aimap(tasks.square, range(10_000)):
            first.append(value)
            if len(first) == 3:
                break
        return mapped, first

    with corepool.Pool(2) as pool:
        mapped, first = asyncio.run(main(pool))
        assert pool.map(tasks.square, [4]) == [16]
    assert mapped == [x * x for x in range(10)]
    assert first == [0, 1, 4]


@pytest.mark.timeout(60)
def test_pool_amap_after_close_is_a_value_error() -> None:
    pool = corepool.Pool(2)
    pool.close()
    pool.join()
    with pytest.raises(ValueError):
        asyncio.run(pool.amap(tasks.square, [1]))


@pytest.mark.timeout(60)
def test_executor_with_run_in_executor() -> None:
    async def main(executor: corepool.Executor) -> list[int]:
        loop = asyncio.get_running_loop()
        calls = [loop.run_in_executor(executor, tasks.square, x) for x in range(5)]
        work = asyncio.ensure_future(
            asyncio.gather(*calls, loop.run_in_executor(executor, tasks.sleep_for, 0.5))
        )
        ticks = await ticking_while(work)
        assert ticks >= 20
        return list(work.result()[:5])

    with corepool.Executor(2) as executor:
        assert asyncio.run(main(executor)) == [0, 1, 4, 9, 16]


def test_the_default_pool_is_shared_with_map() -> None:
    async def main() -> list[int]:
        return await corepool.amap(tasks.pid_of, range(4), workers=2)

    pids = asyncio.run(main())
    assert set(pids) <= set(_default_pool(2, None).pids())
