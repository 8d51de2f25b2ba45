"""``PoolCore.batches``: the streaming seam ``corepool run`` reads results through.

Real worker processes; a wake-up is a batch with no outcome (``woke``), never a
sentinel value among the results.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corepool.core import PoolCore, ResultBatch
from tasks import fail_on, square, wait_for_file, wait_for_path

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def core() -> Iterator[PoolCore]:
    pool = PoolCore(2, "process")
    yield pool
    pool.terminate()


def test_wakes_up_while_no_task_finishes_then_gives_the_result(
        core: PoolCore, tmp_path: Path) -> None:
    path = str(tmp_path / "go")
    seen: list[ResultBatch] = []
    for batch in core.batches(wait_for_path, [path], wake=0.05):
        seen.append(batch)
        if batch.woke and sum(b.woke for b in seen) == 3:
            Path(path).touch()  # the task may finish only after three wake-ups
    assert [b.woke for b in seen[:3]] == [True, True, True]
    assert not seen[-1].woke
    assert seen[-1].returned == [(0, "saw it")] and seen[-1].failed == []
    assert all(b.woke for b in seen[:-1]) and len(seen[-1]) == 1


def test_every_index_once_with_its_value(core: PoolCore) -> None:
    got: list[tuple[int, int]] = []
    for batch in core.batches(square, range(500), wake=1.0):
        assert batch.failed == []
        got.extend(batch.returned)
    assert sorted(got) == [(i, i * i) for i in range(500)]


def test_in_the_order_tasks_finish_not_input_order(core: PoolCore, tmp_path: Path) -> None:
    # Task 0 finishes only after task 199 ran: a later task comes first.
    order = [i for batch in core.batches(wait_for_file, [(i, str(tmp_path))
                                                           for i in range(200)], wake=1.0)
             for i, _ in batch.returned]
    assert sorted(order) == list(range(200))
    assert order.index(199) < order.index(0)


def test_a_failure_is_an_outcome_by_index_and_the_stream_goes_on(core: PoolCore) -> None:
    returned: list[tuple[int, int]] = []
    failed: list[tuple[int, BaseException]] = []
    for batch in core.batches(fail_on, range(10), wake=1.0):
        returned.extend(batch.returned)
        failed.extend(batch.failed)
    assert sorted(returned) == [(i, i) for i in range(10) if i != 3]
    assert [i for i, _ in failed] == [3]
    error = failed[0][1]
    assert isinstance(error, ValueError)
    assert any("task 3" in note for note in getattr(error, "__notes__", []))


def test_retries_and_timeouts_reach_the_batch_as_failures(core: PoolCore,
                                                           tmp_path: Path) -> None:
    import corepool

    never = str(tmp_path / "never")
    failed = [f for b in core.batches(wait_for_path, [never], wake=0.5, timeout=0.3,
                                      retries=1) for f in b.failed]
    assert len(failed) == 1 and isinstance(failed[0][1], corepool.TaskTimeout)


def test_closing_early_stops_the_job_and_the_pool_serves_the_next(
        core: PoolCore, tmp_path: Path) -> None:
    path = str(tmp_path / "never")
    batches = core.batches(wait_for_path, [path] * 4, wake=0.05)
    assert next(batches).woke
    batches.close()
    assert not core._open_jobs  # the job was given up and forgotten
    assert [v for b in core.batches(square, [7], wake=1.0) for v in b.returned] == [(0, 49)]


def test_the_serial_backend_hands_out_batches_as_it_runs(tmp_path: Path) -> None:
    pool = PoolCore(1, "serial")
    try:
        sizes = [len(b) for b in pool.batches(square, range(30), wake=1.0, most=10)]
    finally:
        pool.terminate()
    assert sum(sizes) == 30 and max(sizes) <= 10 and len(sizes) >= 3


def test_what_came_back_is_still_there_after_a_stop(core: PoolCore, tmp_path: Path) -> None:
    """Ctrl-C stops the iteration; the outcomes that had come back (a result and a
    failure here) are :meth:`arrived`, not lost with the stop (the runner records them
    before it stops the workers)."""
    batches = core.batches(fail_on, [1, 2, 3], wake=1.0)  # never iterated
    returned: list[tuple[int, int]] = []
    failed: list[int] = []
    deadline = time.monotonic() + 20
    while len(returned) + len(failed) < 3:  # the workers finish while nobody reads
        assert time.monotonic() < deadline, (returned, failed)
        batch = batches.arrived()
        returned += batch.returned
        failed += [index for index, _ in batch.failed]
        time.sleep(0.01)
    batches.close()
    assert sorted(returned) == [(0, 1), (1, 2)] and failed == [2]
    assert batches.arrived().returned == []  # taken once
