"""The pool's rules, tested without a single process: events in, actions out."""

from __future__ import annotations

import logging
import pickle
import signal
from concurrent.futures import Future

import pytest

from corepool._engine.model import (
    CancelJob,
    Chunk,
    Deliver,
    FailJob,
    Kill,
    Measured,
    Quit,
    Send,
    Start,
)
from corepool._engine.state import PoolState
from corepool._tasks.job import CallJob, Job, Piece
from corepool._tasks.styles import CallStyle
from corepool.errors import BrokenPool, TaskTimeout, WorkerCrashed
from corepool.serialize import FailureInfo


def pickle_items(items: list[object]) -> bytes:
    return pickle.dumps(items)


class RecordingJob(Job):
    def __init__(self, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(abs, CallStyle.SINGLE, **options)
        self.pieces: list[Piece] = []

    def deliver(self, piece: Piece) -> None:
        self.pieces.append(piece)

    def fail(self, exc: BaseException) -> None:
        self.failed = exc


def chunk(job: Job, start: int, values: list[int]) -> Chunk:
    return Chunk(job, start, start, len(values), pickle.dumps(values), items=list(values))


def no_slot(wid: int) -> tuple[int, int, float]:
    return -1, -1, 0.0


def started_pool(workers: int = 2, **options) -> PoolState:  # type: ignore[no-untyped-def]
    state = PoolState(workers, pickle_items=pickle_items, **options)
    actions = state.start(0.0)
    assert actions == [Start(i) for i in range(workers)]
    for wid in range(workers):
        state.on_ready(wid, 1000 + wid, 0.0)
    return state


def sends(actions: list) -> list[Send]:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, Send)]


def measured(state: PoolState, job: Job, seconds_per_task: float) -> None:
    """What the state learns from a finished chunk of ``job``: its time per task."""
    state._observe(chunk(job, 0, [0]), seconds_per_task)


def carry_out(state: PoolState, actions: list, now: float) -> list:  # type: ignore[type-arg]
    """The supervisor's part in a send: the job claims the chunk, or refuses it."""
    out = []
    for action in actions:
        if isinstance(action, Send) and not action.chunk.job.claim():
            out += carry_out(state, state.on_refused(action, now), now)
        else:
            out.append(action)
    return out


def test_one_chunk_per_worker_until_tasks_are_known_to_be_short() -> None:
    state = started_pool()
    job = RecordingJob()
    sent = sends(state.add([chunk(job, i, [i]) for i in range(6)], 0.0))
    assert [(s.wid, s.chunk.start) for s in sent] == [(0, 0), (1, 1)]
    assert [s.with_function for s in sent] == [True, True]
    # Measured short: worker 0 gets a second chunk behind its running one. Worker 1 does
    # not: its chunk has run for 1 s against an estimate of 0.1 ms (an outlier).
    first = state.workers[0].queue[0]
    sent = sends(state.on_done(0, first.seq, 0.0001, [0], {}, 1.0))
    assert [(s.wid, s.chunk.start) for s in sent] == [(0, 2), (0, 3)]
    assert not any(s.with_function for s in sent)


def test_idle_workers_are_served_before_second_chunks() -> None:
    state = started_pool()
    job = RecordingJob()
    measured(state, job, 0.0001)
    sent = sends(state.add([chunk(job, i, [i]) for i in range(2)], 0.0))
    assert [(s.wid, s.chunk.start) for s in sent] == [(0, 0), (1, 1)]


def test_nothing_queues_behind_a_long_task() -> None:
    state = started_pool(1)
    job = RecordingJob()
    measured(state, job, 2.0)  # two seconds per task
    sent = sends(state.add([chunk(job, i, [i]) for i in range(3)], 0.0))
    assert [s.chunk.start for s in sent] == [0]
    assert len(state.ready) == 2


def test_done_delivers_and_refills() -> None:
    state = started_pool(1)
    job = RecordingJob()
    state.add([chunk(job, 0, [0, 1]), chunk(job, 2, [2, 3]), chunk(job, 4, [4])], 0.0)
    first = state.workers[0].queue[0]
    actions = state.on_done(0, first.seq, 0.01, [10, 11], {}, 1.0)
    assert Deliver(job, Piece(0, [10, 11], {}, 0, None)) in actions
    assert [s.chunk.start for s in sends(actions)] == [2]  # 10 ms a chunk: no prefetch
    assert [c.start for c in state.ready] == [4]


def test_crash_of_a_single_task_fails_it() -> None:
    state = started_pool()
    job = RecordingJob()
    state.add([chunk(job, 0, [7])], 0.0)
    actions = state.on_exit(0, -signal.SIGSEGV, 1.0, no_slot)
    delivered = [a for a in actions if isinstance(a, Deliver)]
    assert len(delivered) == 1
    error = delivered[0].piece.failures[0]
    assert isinstance(error, WorkerCrashed) and "SIGSEGV" in str(error) and "pid 1000" in str(error)
    assert Start(2) in actions  # replaced


def test_crash_of_a_chunk_requeues_each_task_alone() -> None:
    state = started_pool(1)
    job = RecordingJob()
    state.add([chunk(job, 0, [0, 1, 2]), chunk(job, 3, [3, 4])], 0.0)
    actions = state.on_exit(0, 1, 1.0, no_slot)
    assert not any(isinstance(a, Deliver) for a in actions)  # nobody is blamed yet
    state.on_ready(1, 2000, 1.0)
    queued = [(c.start, c.count) for c in state.workers[1].queue] + [
        (c.start, c.count) for c in state.ready
    ]
    assert sorted(queued) == [(0, 1), (1, 1), (2, 1), (3, 2)]  # the untouched chunk stays whole


def test_crash_with_a_tracked_position_blames_that_task() -> None:
    state = started_pool(1)
    job = RecordingJob(timeout=10.0)
    state.add([chunk(job, 0, [0, 1, 2])], 0.0)
    seq = state.workers[0].queue[0].seq
    actions = state.on_exit(0, 1, 1.0, lambda wid: (seq, 1, 0.5))
    failed = [a.piece for a in actions if isinstance(a, Deliver)]
    assert [(piece.start, type(piece.failures[0])) for piece in failed] == [(1, WorkerCrashed)]
    queued = [c.start for c in state.ready] + [
        c.start for w in state.workers.values() for c in w.queue
    ]
    assert sorted(queued) == [0, 2]


def test_crash_is_retried_then_failed() -> None:
    state = started_pool(1)
    job = RecordingJob(retries=1)
    state.add([chunk(job, 0, [5])], 0.0)
    assert not any(isinstance(a, Deliver) for a in state.on_exit(0, 9, 1.0, no_slot))
    state.on_ready(1, 2000, 1.0)
    retry = state.workers[1].queue[0]
    assert retry.attempt == 1
    actions = state.on_exit(1, 9, 2.0, no_slot)
    assert any(isinstance(a, Deliver) for a in actions)


def test_timeout_is_computed_from_the_slot_and_stops_the_worker() -> None:
    state = started_pool(1)
    job = RecordingJob(timeout=2.0)
    state.add([chunk(job, 0, [0, 1, 2])], 0.0)
    seq = state.workers[0].queue[0].seq
    slot = (seq, 1, 5.0)  # task 1 started at t=5
    assert state.next_deadline(lambda wid: slot) == 7.0
    assert state.on_tick(6.9, lambda wid: slot) == []
    actions = state.on_tick(7.0, lambda wid: slot)
    timed_out = [a.piece for a in actions if isinstance(a, Deliver)]
    assert len(timed_out) == 1 and timed_out[0].start == 1
    assert isinstance(timed_out[0].failures[0], TaskTimeout)
    assert Kill(0, signal.SIGTERM) in actions
    assert Start(1) in actions
    # After the grace period, SIGKILL.
    assert state.next_deadline(no_slot) == 7.0 + state.kill_grace
    assert Kill(0, signal.SIGKILL) in state.on_tick(7.0 + state.kill_grace, no_slot)


def test_results_from_a_timed_out_worker_are_ignored() -> None:
    state = started_pool(1)
    job = RecordingJob(timeout=1.0)
    state.add([chunk(job, 0, [0])], 0.0)
    seq = state.workers[0].queue[0].seq
    state.on_tick(5.0, lambda wid: (seq, 0, 0.0))
    assert state.on_done(0, seq, 0.1, [0], {}, 5.1) == []


def test_exception_failure_with_retry_splits_the_delivery() -> None:
    state = started_pool(1)
    job = RecordingJob(retries=1)
    state.add([chunk(job, 0, [0, 1, 2, 3])], 0.0)
    seq = state.workers[0].queue[0].seq
    info = FailureInfo.capture(ValueError("x"))
    actions = state.on_done(0, seq, 0.1, [0, None, 2, 3], {1: info}, 1.0)
    pieces = [(a.piece.start, a.piece.values) for a in actions if isinstance(a, Deliver)]
    assert pieces == [(0, [0]), (2, [2, 3])]
    retried = [c for c in state.workers[0].queue] + list(state.ready)
    assert [(c.start, c.attempt) for c in retried] == [(1, 1)]


def test_three_start_failures_break_the_pool() -> None:
    state = PoolState(1, pickle_items=pickle_items)
    state.start(0.0)
    job = RecordingJob()
    state.add([chunk(job, 0, [0])], 0.0)
    actions: list = []  # type: ignore[type-arg]
    for wid in range(3):
        actions = state.on_exit(wid, 1, 0.0, no_slot)
    assert isinstance(state.broken, BrokenPool)
    assert any(isinstance(a, FailJob) and a.job is job for a in actions)
    assert isinstance(state.add([chunk(job, 1, [1])], 0.0)[0], FailJob)


def test_max_tasks_per_child_quits_and_replaces() -> None:
    state = started_pool(1, max_tasks_per_child=2)
    job = RecordingJob()
    measured(state, job, 0.0001)  # short tasks: a worker may hold two chunks
    actions = state.add([chunk(job, i, [i]) for i in range(3)], 0.0)
    assert Quit(0) in actions and Start(1) in actions
    assert len(state.workers[0].queue) == 2


def test_close_quits_idle_workers_only_when_the_queue_is_empty() -> None:
    state = started_pool(1)
    job = RecordingJob()
    state.add([chunk(job, 0, [0])], 0.0)
    assert state.close(0.0) == []
    seq = state.workers[0].queue[0].seq
    assert Quit(0) in state.on_done(0, seq, 0.0, [0], {}, 1.0)


def test_cancelled_call_is_not_sent() -> None:
    state = started_pool(1)
    future: Future[int] = Future()
    job = CallJob(abs, future)
    future.cancel()
    actions = state.add([Chunk(job, 0, 0, 1, pickle.dumps([((1,), {})]))], 0.0)
    assert [s.chunk.job for s in sends(actions)] == [job]  # the state never calls the job
    assert sends(carry_out(state, actions, 0.0)) == []
    assert not state.workers[0].queue and state.idle()


def test_a_call_failed_while_queued_is_not_sent(caplog: pytest.LogCaptureFixture) -> None:
    """A terminate fails a queued call's Future from the caller's thread; a send that
    comes after is refused (it was claimed: concurrent.futures logged CRITICAL "Future
    ... in unexpected state: FINISHED" and raised in the supervisor thread)."""
    state = started_pool(1)
    future: Future[int] = Future()
    job = CallJob(abs, future)
    future.set_exception(BrokenPool("the pool was terminated before this task finished"))
    actions = state.add([Chunk(job, 0, 0, 1, pickle.dumps([((1,), {})]))], 0.0)
    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        assert sends(carry_out(state, actions, 0.0)) == []
    assert not caplog.records
    assert not state.workers[0].queue and state.idle()


@pytest.mark.parametrize("exitcode, text", [(3, "exit code 3"), (-9, "signal SIGKILL")])
def test_exit_descriptions(exitcode: int, text: str) -> None:
    from corepool._engine.exits import describe_exit

    assert describe_exit(exitcode) == text


def test_a_closing_pool_does_not_replace_the_workers_it_lets_go() -> None:
    state = started_pool(2)
    job = RecordingJob()
    state.add([chunk(job, 0, [0])], 0.0)  # worker 0 runs a long task
    actions = state.close(1.0)
    assert Quit(1) in actions and not any(isinstance(a, Start) for a in actions)
    assert not any(isinstance(a, Start) for a in state.on_exit(1, 0, 1.1, no_slot))


def test_every_job_gets_its_turn() -> None:
    state = started_pool(1)
    stream, small = RecordingJob(), RecordingJob()
    state.add([chunk(stream, i, [i]) for i in range(5)], 0.0)
    state.add([chunk(small, 0, [0])], 0.1)
    seq = state.workers[0].queue[0].seq
    sent = sends(state.on_done(0, seq, 0.5, [0], {}, 1.0))
    assert [s.chunk.job for s in sent] == [small]  # before the stream's other four


def test_a_crashed_chunks_tasks_go_ahead_of_their_own_job_only() -> None:
    state = started_pool(1)
    stream, small = RecordingJob(), RecordingJob()
    state.add([chunk(stream, 0, [0, 1, 2]), chunk(stream, 3, [3])], 0.0)
    state.add([chunk(small, 0, [7])], 0.1)
    # Untracked: the stream's three tasks go again alone; the replacement takes the
    # small job's chunk first (it is sent while the worker starts).
    sent = sends(state.on_exit(0, 1, 1.0, no_slot))
    assert [(s.chunk.job, s.chunk.start) for s in sent] == [(small, 0)]
    order = [(c.job is stream, c.start, c.count) for c in state.ready]
    assert order == [(True, 0, 1), (True, 1, 1), (True, 2, 1), (True, 3, 1)]


def test_a_task_timeout_counts_from_when_the_worker_takes_it() -> None:
    state = started_pool(1)
    job = RecordingJob(timeout=1.0)
    state.add([chunk(job, 0, [0])], 0.0)
    seq = state.workers[0].queue[0].seq
    assert state.on_tick(5.0, no_slot) == []  # sent at 0, not taken yet: no timeout
    assert state.next_deadline(no_slot, 5.0) == pytest.approx(5.05)  # look again soon
    taken = lambda wid: (seq, 0, 5.0)  # noqa: E731
    assert state.next_deadline(taken, 5.1) == 6.0
    assert state.on_tick(5.9, taken) == []
    assert any(isinstance(a, Deliver) for a in state.on_tick(6.0, taken))


def test_logged_results_survive_the_crash_of_a_later_task() -> None:
    state = started_pool(1)
    job = RecordingJob(timeout=10.0)
    state.add([chunk(job, 0, [0, 1, 2, 3, 4])], 0.0)
    seq = state.workers[0].queue[0].seq
    state.read_log = lambda wid, s: {0: (0, None), 1: (10, None)} if s == seq else {}
    actions = state.on_exit(0, 1, 1.0, lambda wid: (seq, 2, 0.5))
    pieces = [a.piece for a in actions if isinstance(a, Deliver)]
    assert [(p.start, p.values) for p in pieces] == [(0, [0, 10]), (2, [None])]
    assert isinstance(pieces[1].failures[0], WorkerCrashed)
    queued = [(c.start, c.count) for c in state.ready] + [
        (c.start, c.count) for w in state.workers.values() for c in w.queue
    ]
    assert queued == [(3, 2)]  # the tasks after the culprit, as one chunk, run once


def test_a_broken_pool_gives_its_workers_the_sigterm_grace() -> None:
    state = started_pool(2, kill_grace=0.5)
    job = RecordingJob()
    state.add([chunk(job, 0, [0]), chunk(job, 1, [1])], 99.0)
    info = FailureInfo.capture(ValueError("bad initializer"))
    actions = state.on_init_failed(1, info, 100.0)
    assert Kill(0, signal.SIGTERM) in actions
    assert [type(a.error) for a in actions if isinstance(a, FailJob)] == [BrokenPool]
    assert state.on_tick(100.1, no_slot) == []  # within the grace: no SIGKILL yet
    assert state.next_deadline(no_slot) == 100.5
    assert Kill(0, signal.SIGKILL) in state.on_tick(100.5, no_slot)


def test_workers_failing_to_start_break_the_pool_with_the_grace_too() -> None:
    state = PoolState(2, pickle_items=pickle_items, kill_grace=0.5)
    state.start(0.0)
    state.on_ready(0, 1000, 0.0)
    actions: list = []  # type: ignore[type-arg]
    for wid in (1, 2, 3):  # each replacement exits before READY
        actions = state.on_exit(wid, 1, 10.0 + wid, no_slot)
    assert Kill(0, signal.SIGTERM) in actions and state.broken is not None
    assert state.on_tick(13.2, no_slot) == []
    assert Kill(0, signal.SIGKILL) in state.on_tick(13.5, no_slot)


def test_a_function_that_cannot_be_unpickled_cancels_its_job_by_an_action() -> None:
    state = started_pool(1)
    job = RecordingJob()
    state.add([chunk(job, 0, [0]), chunk(job, 1, [1])], 0.0)
    seq = state.workers[0].queue[0].seq
    info = FailureInfo.capture(AttributeError("no such function"))
    actions = state.on_unreadable(0, seq, "function", info, 1.0)
    assert CancelJob(job) in actions and any(isinstance(a, FailJob) for a in actions)
    assert not job.cancelled  # the supervisor cancels it, carrying out the action
    assert not state.ready and sends(actions) == []  # its other chunk is dropped


def test_a_finished_chunk_is_measured_by_an_action_not_on_the_sizer() -> None:
    state = started_pool(1)
    job = RecordingJob()
    state.add([chunk(job, 0, [0, 1])], 0.0)
    seq = state.workers[0].queue[0].seq
    actions = state.on_done(0, seq, 0.004, [0, 1], {}, 1.0)
    assert Measured(job, 2, 0.004) in actions
    assert job.sizer.seconds_per_item is None  # the feeder's object: untouched here


def test_a_refused_send_gives_back_the_budget_and_the_forget_list() -> None:
    state = started_pool(1, max_tasks_per_child=2)
    future: Future[int] = Future()
    call = CallJob(abs, future)
    state.workers[0].to_forget.append(77)
    actions = state.add([Chunk(call, 0, 0, 1, pickle.dumps([((1,), {})]))], 0.0)
    (send,) = sends(actions)
    assert send.forget == (77,)
    future.cancel()
    assert carry_out(state, actions, 0.0) == []
    worker = state.workers[0]
    assert worker.budget == 2 and worker.to_forget == [77] and not worker.queue


def test_stats_say_what_each_worker_runs_and_since_when() -> None:
    from corepool._engine.stats import snapshot

    state = started_pool(2)
    tracked = RecordingJob(timeout=5.0)
    plain = RecordingJob()
    state.add([chunk(tracked, 0, [0, 1, 2]), chunk(plain, 10, [10, 11])], 50.0)
    seq = state.workers[0].queue[0].seq

    def slot(wid: int) -> tuple[int, int, float]:
        return (seq, 1, 52.0) if wid == 0 else (-1, -1, 0.0)

    stats = snapshot(state, 53.0, slot, "process")
    first, second = stats.workers
    assert (first.state, first.running) == ("busy", (1,))  # tracked: the exact task
    assert (second.state, second.running) == ("busy", (10, 11))
    assert first.running_since is not None and second.running_since is not None
    assert second.running_since - first.running_since == pytest.approx(-2.0, abs=0.01)
    assert first.pid == 1000 and stats.restarts == 0
    state.on_done(1, state.workers[1].queue[0].seq, 0.1, [10, 11], {}, 54.0)
    assert snapshot(state, 54.0, slot, "process").workers[1].state == "idle"
