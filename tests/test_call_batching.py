"""Single calls that travel together (``_engine/calls.py``): the rules without a
process, then each guarantee of a call with real workers, crashes and hangs, run as a
user's own script."""

from __future__ import annotations

import pickle
import signal
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from corepool._engine.calls import CallBatch, queue_calls
from corepool._engine.model import Chunk, Deliver, Measured, Send
from corepool._engine.state import PoolState
from corepool._tasks.job import CallJob
from corepool.errors import WorkerCrashed
from user_scripts import run_program

pytestmark = pytest.mark.timeout(120)

def calls(count: int, fn: Any = abs) -> tuple[list[Future[Any]], list[Chunk]]:
    """``count`` calls of ``fn`` as the engine queues them (one run of like calls)."""
    futures: list[Future[Any]] = []
    submitted: list[tuple[CallJob, Any]] = []
    sizer = CallJob(fn, Future()).sizer  # the calls of one function share an estimate
    for i in range(count):
        future: Future[Any] = Future()
        job = CallJob(fn, future, sizer=sizer)
        job.fn_bytes = pickle.dumps(fn)
        futures.append(future)
        submitted.append((job, ((i,), {})))
    return futures, queue_calls(submitted)


def one_worker(**options: Any) -> PoolState:
    state = PoolState(1, pickle_items=pickle.dumps, **options)
    state.start(0.0)
    state.on_ready(0, 1000, 0.0)
    return state


def sends(actions: list[Any]) -> list[Send]:
    return [a for a in actions if isinstance(a, Send)]


def deliver(actions: list[Any]) -> None:
    for action in actions:
        if isinstance(action, Deliver):
            action.job.deliver(action.piece)
        elif isinstance(action, Measured):  # as the supervisor does
            action.job.sizer.observe(action.items, action.busy)


def test_calls_queued_behind_a_busy_worker_go_in_one_frame() -> None:
    state = one_worker()
    futures, chunks = calls(6)
    sent = sends(state.add(chunks, 0.0))
    assert [s.chunk.count for s in sent] == [1]  # the first goes at once, alone
    first = sent[0].chunk
    actions = state.on_done(0, first.seq, 0.0001, [10], {}, 1.0)
    deliver(actions)
    batch = sends(actions)[0].chunk
    assert isinstance(batch.job, CallBatch) and batch.count == 5
    assert 0 <= first.seq < batch.seq  # numbered: a fresh worker's slot says -1
    assert pickle.loads(batch.payload) == [((i,), {}) for i in range(1, 6)]
    deliver(state.on_done(0, batch.seq, 0.0001, [11, 12, 13, 14, 15], {}, 1.1))
    assert [f.result(0) for f in futures] == [10, 11, 12, 13, 14, 15]


def test_a_call_cancelled_while_queued_is_left_out_of_its_batch() -> None:
    state = one_worker()
    futures, chunks = calls(5)
    first = sends(state.add(chunks, 0.0))[0].chunk
    assert futures[2].cancel()
    batch = sends(state.on_done(0, first.seq, 0.0001, [0], {}, 1.0))[0].chunk
    assert pickle.loads(batch.payload) == [((1,), {}), ((3,), {}), ((4,), {})]
    assert all(f.running() for i, f in enumerate(futures[1:], 1) if i != 2)


def test_a_batch_that_crashes_its_worker_costs_only_the_call_that_crashed() -> None:
    state = one_worker()
    futures, chunks = calls(4)
    first = sends(state.add(chunks, 0.0))[0].chunk
    actions = state.on_done(0, first.seq, 0.0001, [0], {}, 1.0)
    deliver(actions)
    assert sends(actions)[0].chunk.count == 3
    # Call 2 crashes its worker, every time. The batch's crash cannot say which call did
    # it, so each goes again alone, and only call 2 pays.
    counts: list[int] = []
    now, next_wid = 2.0, 1
    while not all(f.done() for f in futures):
        worker = next(w for w in state.workers.values() if w.queue or w.pid is None)
        if worker.pid is None:  # a replacement: it says READY
            deliver(state.on_ready(worker.wid, 1000 + worker.wid, now))
            continue
        head = worker.queue[0]
        counts.append(head.count)
        (arg,), _ = pickle.loads(head.payload)[0]
        if head.count > 1 or arg == 2:
            actions = state.on_exit(worker.wid, -signal.SIGKILL, now, lambda wid: (-1, -1, 0.0))
        else:
            actions = state.on_done(worker.wid, head.seq, 0.0001, [arg], {}, now)
        deliver(actions)
        now += 1.0
        next_wid += 1
    assert counts[0] == 3 and counts[1:] == [1] * (len(counts) - 1)
    assert futures[1].result(0) == 1 and futures[3].result(0) == 3
    assert isinstance(futures[2].exception(0), WorkerCrashed)


def test_a_batch_respects_max_tasks_per_child() -> None:
    state = one_worker(max_tasks_per_child=3)
    _, chunks = calls(10)
    first = sends(state.add(chunks, 0.0))[0].chunk
    actions = state.on_done(0, first.seq, 0.0001, [0], {}, 1.0)
    # Worker 0 had 1 of its 3 tasks: a batch of 2, then replacements take 3 at most.
    assert [(s.wid, s.chunk.count) for s in sends(actions)] == [(0, 2), (1, 3), (2, 3), (3, 1)]


# The worker is held by a first call until the test's program creates a file, so the
# calls submitted meanwhile wait in the parent and leave together.
PROGRAM_HEAD = """
import json, os, sys, time
from concurrent.futures import CancelledError, as_completed
import corepool

def hold(path):
    while not os.path.exists(path):
        time.sleep(0.005)
    return "held"

def record(i):
    with open(f"ran-{i}", "a") as f:
        f.write("x")
    if i == 7 and sys.argv[-1] == "crash":
        os._exit(3)
    if i == 5 and sys.argv[-1] == "hang":
        time.sleep(600)
    return i

def runs():
    return {int(n[4:]): len(open(n).read()) for n in os.listdir(".") if n.startswith("ran-")}

def outcomes(count, **options):
    with corepool.Pool(1) as pool:
        pool.apply_async(hold, ("go",))
        results = [pool.apply_async(record, (i,), **options) for i in range(count)]
        open("go", "w").close()
        outcome = []
        for r in results:
            try:
                outcome.append(r.get(60))
            except (corepool.WorkerCrashed, corepool.TaskTimeout) as exc:
                outcome.append(type(exc).__name__)
    print(json.dumps({"outcome": outcome, "runs": runs()}))
"""


def test_cancelled_calls_never_run_and_the_rest_complete(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        PROGRAM_HEAD
        + """
if __name__ == "__main__":
    with corepool.Executor(1) as ex:
        held = ex.submit(hold, "go")
        futures = [ex.submit(record, i) for i in range(30)]
        cancelled = [i for i in (4, 11, 12, 29) if futures[i].cancel()]
        open("go", "w").close()
        done = {}
        for f in as_completed(futures):
            done[futures.index(f)] = "cancelled" if f.cancelled() else f.result()
    print(json.dumps({"cancelled": cancelled, "done": done, "runs": runs()}))
""",
    )
    assert out["cancelled"] == [4, 11, 12, 29]
    expected = {str(i): ("cancelled" if i in out["cancelled"] else i) for i in range(30)}
    assert out["done"] == expected
    assert out["runs"] == {str(i): 1 for i in range(30) if i not in out["cancelled"]}


def test_a_crash_in_a_batch_fails_only_the_call_that_crashed(tmp_path: Path) -> None:
    program = PROGRAM_HEAD + 'if __name__ == "__main__":\n    outcomes(20)\n'
    out = run_program(tmp_path, program, "crash")
    assert out["outcome"] == [("WorkerCrashed" if i == 7 else i) for i in range(20)]
    assert out["runs"]["7"] == 2  # in its batch, then alone: it crashes both times


def test_a_hung_call_in_a_batch_times_out_alone_and_its_neighbours_run_once(
    tmp_path: Path,
) -> None:
    program = PROGRAM_HEAD + 'if __name__ == "__main__":\n    outcomes(12, timeout=3)\n'
    out = run_program(tmp_path, program, "hang")
    assert out["outcome"] == [("TaskTimeout" if i == 5 else i) for i in range(12)]
    assert out["runs"] == {str(i): 1 for i in range(12)}


def test_a_quick_call_is_not_held_back_by_a_slow_one_in_its_batch() -> None:
    """CPython's test_map_timeout on fork failed this way: ``sleep(0)`` batched with
    ``sleep(6)`` got its result only when the batch ended, past the caller's timeout."""
    import select
    import time
    from concurrent.futures import wait

    import corepool

    with corepool.Executor(max_workers=1) as executor:
        for _ in range(3):  # sleep(0) is measured quick: calls of it are batched
            executor.submit(time.sleep, 0).result(timeout=30)
        # Another function holds the worker while the calls queue up behind it.
        hold = executor.submit(select.select, [], [], [], 0.5)
        quick = [executor.submit(time.sleep, 0) for _ in range(3)]
        slow = executor.submit(time.sleep, 4)
        hold.result(timeout=30)
        done, _ = wait(quick, timeout=2.5)
        assert len(done) == len(quick), "a quick call waited for the slow one"
        slow.result(timeout=30)
