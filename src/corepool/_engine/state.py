"""The pool's rules: which chunk goes to which worker, and what a failure costs.

A pure state machine. The supervisor feeds it events (a chunk is ready, a worker said
READY or DONE, a worker exited, time passed) with the current monotonic time, and it
answers with a list of actions for the supervisor to carry out (start a worker, send a
chunk, signal a process, deliver results). It performs no I/O and reads no clock, so
every rule is tested without starting a process (``tests/test_state.py``).

Transitions of a worker::

    STARTING --READY--> RUNNING --(budget spent: QUIT)--> exits (expected)
        |                  |  \\--(task overran its timeout: SIGTERM)--> STOPPING --> exits
        |                  \\--exits unexpectedly--> crash: its running task pays
        \\--exits before READY--> start failure (3 in a row: the pool is broken)

What a failure costs the chunks it touches (which tasks are delivered, retried or
re-queued) is the other half, in ``recovery.py``, which this class builds on. The
chunk's claim by its job (a cancelled future refuses) and the job's cancellation are
actions too (``Send``, ``CancelJob``), carried out by the supervisor; so is a chunk's
measured time for its job's chunk sizer (``Measured``), which the thread that pulls
the job's input reads. The state keeps its own per-job estimate for prefetching.

A task's timeout counts from the moment its worker took it (the worker's slot), not
from when it was sent: a worker still starting, or busy with the chunk before, does
not spend the next task's time.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable
from typing import Any

from .._tasks.job import Job, Piece
from .._tasks.rules import culprit
from .._tasks.sizing import MAX_CHUNK_ITEMS_UNSIZED, TARGET_CHUNK_SECONDS
from ..errors import BrokenPool, TaskTimeout
from ..serialize import FailureInfo
from .calls import gather
from .exits import describe_exit
from .lanes import CALLS_LANE
from .model import (
    KILL,
    Action,
    Chunk,
    Deliver,
    FailJob,
    Kill,
    Measured,
    Quit,
    Send,
    Start,
    Worker,
    WorkerPhase,
    start_failure_error,
)
from .recovery import PickleItems, Recovery

__all__ = ["PoolState"]  # (the records it works with are in model.py)

KILL_GRACE_SECONDS = 0.5
MAX_START_FAILURES = 3
PREFETCH_BELOW_SECONDS = 0.005
RETIRED_KEPT = 64
ACK_POLL_SECONDS = 0.05  # how often to look for the start of a chunk with a timeout

SlotReader = Callable[[int], tuple[int, int, float]]


class PoolState(Recovery):
    """Workers, queued chunks and the rules between them."""

    def __init__(
        self,
        workers: int,
        *,
        max_tasks_per_child: int | None = None,
        pickle_items: PickleItems,
        kill_grace: float = KILL_GRACE_SECONDS,
        exit_reason: Callable[[int | None, int | None], str] | None = None,
    ) -> None:
        super().__init__(pickle_items, exit_reason or (lambda code, pid: describe_exit(code)))
        self.size = workers
        self.max_tasks_per_child = max_tasks_per_child
        self.kill_grace = kill_grace
        self.workers: dict[int, Worker] = {}
        self._wids = 0
        # Seconds per task measured, for prefetching (_capacity), by the job's chunk
        # sizer: the calls of one function share one, as they share its measurements.
        # The sizer is only a key here; it belongs to the thread that pulls the input.
        self.start_failures = 0
        self.broken: BrokenPool | None = None
        self.closing = False  # no new work; workers quit once idle
        self.restarts = 0
        # Ended workers, for stats: the latest ones as they were, older ones summed up
        # in one record (wid -1), so a pool that replaces workers for days stays small.
        self.retired: deque[Worker] = deque()
        self.retired_earlier = Worker(-1)

    # Helpers --------------------------------------------------------------------
    def _new_worker(self, now: float) -> list[Action]:
        wid = self._wids
        self._wids += 1
        worker = self.workers[wid] = Worker(wid)
        worker.budget = self.max_tasks_per_child
        worker.started_at = worker.free_since = now
        return [Start(wid)]

    def _live(self) -> int:
        return sum(
            1
            for w in self.workers.values()
            if w.phase is not WorkerPhase.STOPPING and not w.quitting
        )

    def _top_up(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.broken is not None:
            return actions
        wanted = self.size
        if self.closing:
            # Closing: a worker is replaced only while queued work needs it. Replacing
            # the idle workers that were just told to quit would start a new one per
            # QUIT, for as long as the last running task lasts.
            wanted = min(self.size, len(self.ready))
        while self._live() < wanted:
            actions += self._new_worker(now)
        return actions

    def _after(self, now: float) -> list[Action]:
        """Replace missing workers, hand out queued chunks, let idle workers go."""
        return self._top_up(now) + self._dispatch(now) + self._quit_idle()

    def _capacity(self, worker: Worker, now: float) -> int:
        """Chunks a worker may hold: a second one only behind a chunk known to be short.

        A chunk sent to a worker cannot be taken back: queued behind a long task it would
        wait while other workers idle. So a worker gets a second chunk (which hides the
        round trip between chunks) only while it runs a chunk of a job whose measured
        time per task says it will finish within :data:`PREFETCH_BELOW_SECONDS`, and
        which has not already run past that estimate (an outlier); and the second chunk
        is the same job's (same lane's), never another job's.
        """
        if not worker.queue:
            return 1
        running = worker.queue[0]
        per_task = running.job.sizer.engine_seconds_per_item
        if per_task is None:
            return 1
        estimate = per_task * running.count
        if estimate >= PREFETCH_BELOW_SECONDS:
            return 1
        if now - worker.free_since > max(2 * estimate, PREFETCH_BELOW_SECONDS / 5):
            return 1
        return 2

    def _dispatch(self, now: float) -> list[Action]:
        """Hand out ready chunks: first one to each idle worker, then second ones."""
        actions: list[Action] = []
        retired = False
        for depth in (1, 2):
            for worker in list(self.workers.values()):
                if not self.ready:
                    break
                if worker.phase is WorkerPhase.STOPPING or worker.quitting:
                    continue
                while self.ready and len(worker.queue) < min(depth, self._capacity(worker, now)):
                    # Behind a running chunk, only its own job's next one: another job's
                    # chunk would wait there if the running one turns out to be slow.
                    chunk = self.ready.pop(worker.queue[0].job.lane if worker.queue else None)
                    if chunk is None:
                        break
                    if chunk.job.lane == CALLS_LANE:  # single calls travel together
                        chunk = gather(
                            chunk,
                            self.ready,
                            self._pickle_items,
                            self.size,
                            worker.budget,
                            self._calls_per_chunk,
                        )
                        if chunk is None:
                            continue
                        if chunk.seq < 0:  # a batch made just now
                            chunk.seq = self._seqs
                            self._seqs += 1
                    actions.append(self._send(worker, chunk, now))
                    if worker.budget is not None:
                        worker.budget -= chunk.count
                        if worker.budget <= 0:
                            worker.quitting = True
                            actions.append(Quit(worker.wid))
                            retired = True
                            break
        if retired:
            # Replacements may take the rest of the queue while they start.
            actions += self._top_up(now)
            actions += self._dispatch(now)
        return actions

    def _send(self, worker: Worker, chunk: Chunk, now: float) -> Send:
        first_time = chunk.job.id not in worker.known_jobs
        if chunk.job.cache_function:  # a single call's function is always sent along
            worker.known_jobs.add(chunk.job.id)
        if not worker.queue:
            worker.free_since = now
        worker.queue.append(chunk)
        send = Send(worker.wid, chunk, first_time, tuple(worker.to_forget))
        worker.to_forget.clear()
        return send

    # Events ------------------------------------------------------------------------
    def start(self, now: float) -> list[Action]:
        """Start the initial workers."""
        return self._top_up(now)

    def add(self, chunks: list[Chunk], now: float) -> list[Action]:
        """New chunks from a feeder or a submit."""
        if self.broken is not None:
            return [FailJob(c.job, self.broken) for c in chunks]
        for chunk in chunks:
            self._enqueue(chunk)
        return self._after(now)

    def pin(self, make: Callable[[Worker], Chunk | None], now: float) -> list[Action]:
        """One chunk made by ``make`` for each live worker, sent to that worker only,
        behind what it holds (``run_on_workers``); ``make`` may decline one (None)."""
        actions: list[Action] = []
        for worker in self.workers.values():
            if worker.phase is WorkerPhase.STOPPING or worker.quitting:
                continue
            chunk = make(worker)
            if chunk is not None:
                chunk.seq = self._seqs
                self._seqs += 1
                actions.append(self._send(worker, chunk, now))
        return actions

    def on_spawned(self, wid: int, pid: int) -> None:
        """The worker's process exists (it is still starting): its pid, for stats."""
        worker = self.workers.get(wid)
        if worker is not None:
            worker.pid = pid

    def on_refused(self, send: Send, now: float) -> list[Action]:
        """The supervisor did not send ``send``'s chunk: its job refused the claim (a
        future cancelled while the chunk was queued). Undo what sending it counted."""
        worker = self.workers.get(send.wid)
        if worker is None:
            return []
        chunk = send.chunk
        try:
            worker.queue.remove(chunk)
        except ValueError:
            return []
        if worker.budget is not None and not worker.quitting:
            worker.budget += chunk.count
        if send.with_function:
            worker.known_jobs.discard(chunk.job.id)
        worker.to_forget[:0] = send.forget
        return self._after(now)

    def on_ready(self, wid: int, pid: int, now: float) -> list[Action]:
        worker = self.workers.get(wid)
        if worker is None:
            return []
        worker.pid = pid
        if worker.phase is WorkerPhase.STARTING:
            worker.phase = WorkerPhase.RUNNING
        self.start_failures = 0
        return self._after(now)

    def on_init_failed(self, wid: int, info: FailureInfo, now: float) -> list[Action]:
        cause = info.rebuild()
        error = BrokenPool(
            f"the worker initializer raised {info.type_name}: {info.message}; "
            "no task can run in this pool"
        )
        error.__cause__ = cause
        return self._break(error, now)

    def _break(self, error: BrokenPool, now: float) -> list[Action]:
        self.broken = error
        return self._stop_all(now, error)

    def _stop_all(self, now: float, error: BaseException) -> list[Action]:
        """Drop every chunk, fail their jobs with ``error``, stop every worker."""
        jobs = {chunk.job.id: chunk.job for chunk in self.ready}
        self.ready.clear()
        actions: list[Action] = []
        for worker in self.workers.values():
            jobs.update((chunk.job.id, chunk.job) for chunk in worker.queue)
            worker.queue.clear()
            if worker.phase is not WorkerPhase.STOPPING:
                actions += self._stop(worker, signal.SIGTERM, now)
        return [FailJob(job, error) for job in jobs.values()] + actions

    def on_part(
        self, wid: int, seq: int, pos: int, values: list[Any], failures: dict[int, Any]
    ) -> list[Action]:
        """Task ``pos`` of the running chunk ``seq`` finished and sent its result alone."""
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []
        worker.parts[pos] = (values[0], failures.get(0))
        chunk = worker.queue[0]
        if chunk.job.answers_each and not failures:
            # A single call of a batch: its Future need not wait for the others (it is
            # delivered again with the chunk, which a settled Future ignores).
            return [Deliver(chunk.job, Piece(chunk.start + pos, [values[0]], {}, chunk.origin))]
        return []

    def on_logged(self, wid: int, seq: int, entries: dict[int, tuple[Any, Any]]) -> list[Action]:
        """The running chunk's result log filled up and came whole: keep its entries."""
        worker = self.workers.get(wid)
        if worker is not None and worker.queue and worker.queue[0].seq == seq:
            worker.parts.update(entries)
        return []

    def on_done(
        self,
        wid: int,
        seq: int,
        busy: float,
        values: list[Any],
        failures: dict[int, Any],
        now: float,
        retiring: bool = False,
        sent: tuple[int, ...] = (),
    ) -> list[Action]:
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []  # a worker we already gave up on (timed out): its results are void
        chunk, actions = self._finished(worker, values, failures, sent)
        if retiring:
            # Past its memory limit: it exits now, and what it was sent next never ran.
            worker.quitting = True
            self._requeue_behind(worker)
        worker.free_since = now
        worker.busy += busy
        worker.tasks += chunk.count
        self._observe(chunk, busy)
        return [*actions, Measured(chunk.job, chunk.count, busy), *self._after(now)]

    def _calls_per_chunk(self, job: Job) -> int:
        """How many single calls of ``job``'s function make a chunk: from this state's
        own estimate once a call was measured (the sizer learns it later, from the
        ``Measured`` action), else the sizer's size."""
        per_task = job.sizer.engine_seconds_per_item
        if per_task is None:
            return job.sizer.next_size()
        return max(1, min(int(TARGET_CHUNK_SECONDS / per_task), MAX_CHUNK_ITEMS_UNSIZED))

    def _observe(self, chunk: Chunk, busy: float) -> None:
        """Keep a running estimate of the job's seconds per task (as its sizer does)."""
        per_task = max(busy, 1e-7) / chunk.count
        sizer = chunk.job.sizer
        before = sizer.engine_seconds_per_item
        sizer.engine_seconds_per_item = per_task if before is None else (before + per_task) / 2

    def on_unreadable(
        self, wid: int, seq: int, what: str, info: FailureInfo, now: float
    ) -> list[Action]:
        """The worker could not unpickle a chunk's function or inputs."""
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []
        chunk = self._pop_head(worker)[0]
        worker.free_since = now
        return self._unreadable(chunk, what, info) + self._after(now)

    def on_exit(
        self, wid: int, exitcode: int | None, now: float, read_slot: SlotReader
    ) -> list[Action]:
        """A worker process ended (its channel was drained first)."""
        worker = self.workers.pop(wid, None)
        if worker is None:
            return []
        worker.ended_at = now
        self.retired.append(worker)
        if len(self.retired) > RETIRED_KEPT:
            self.retired_earlier.absorb(self.retired.popleft(), now)
        actions: list[Action] = []
        expected = worker.phase is WorkerPhase.STOPPING or (worker.quitting and not worker.queue)
        if not expected:
            self.restarts += 1
            if worker.phase is WorkerPhase.STARTING:
                self.start_failures += 1
                self._requeue_behind(worker)
                if self.start_failures >= MAX_START_FAILURES and self.broken is None:
                    return self._break(start_failure_error(exitcode, MAX_START_FAILURES), now)
            elif worker.queue:
                head = worker.queue[0]
                pos = None
                if head.job.timeout is not None:
                    seq, slot_pos, _ = read_slot(wid)
                    if seq == head.seq and slot_pos >= 0:
                        pos = slot_pos
                actions += self._crashed(worker, exitcode, pos)
        return actions + self._after(now)

    def on_tick(self, now: float, read_slot: SlotReader) -> list[Action]:
        """Time passed: enforce task timeouts and kill workers that ignored SIGTERM."""
        actions: list[Action] = []
        for worker in list(self.workers.values()):
            if worker.phase is WorkerPhase.STOPPING:
                if worker.kill_at is not None and now >= worker.kill_at:
                    worker.kill_at = None
                    actions.append(Kill(worker.wid, KILL))
                continue
            deadline, pos, started = self._deadline(worker, read_slot)
            if not started or deadline is None or now < deadline:
                continue
            head = worker.queue[0]
            timeout = head.job.timeout
            assert timeout is not None
            if culprit(head.count, pos if pos >= 0 else None) is None:
                # Stuck unpickling a chunk's inputs: which one is unknown, so each
                # goes again on its own (the one that hangs again then fails alone).
                self._pop_head(worker)
                self._requeue_behind(worker)
                self._isolate(head)
            else:
                pos = max(pos, 0)
                error = TaskTimeout(
                    f"task {head.start + pos} ran longer than its {timeout:g} s timeout; its "
                    f"worker (pid {worker.pid}) was stopped and replaced",
                    timeout,
                )
                actions += self._lose_head(worker, pos, error)
            actions += self._stop(worker, signal.SIGTERM, now)
            self.restarts += 1
        if actions:
            actions += self._after(now)
        return actions

    def _stop(self, worker: Worker, signum: int, now: float) -> list[Action]:
        worker.phase = WorkerPhase.STOPPING
        worker.kill_at = now + self.kill_grace
        return [Kill(worker.wid, signum)]

    def _deadline(
        self, worker: Worker, read_slot: SlotReader, now: float = 0.0
    ) -> tuple[float | None, int, bool]:
        """When the worker's running task times out, its position (-1: the chunk's
        inputs are being unpickled), and whether the worker has taken the chunk yet.

        A task's clock starts when the worker takes its chunk (the slot says so), not
        when it was sent. Until then, the deadline returned is only a time to look at
        the slot again (nothing wakes the supervisor when a worker takes a chunk):
        soon enough to see the start well before the task's time runs out.
        """
        if not worker.queue or worker.phase is not WorkerPhase.RUNNING:
            return None, 0, False
        head = worker.queue[0]
        timeout = head.job.timeout
        if timeout is None:
            return None, 0, False
        seq, pos, started = read_slot(worker.wid)
        if seq != head.seq:
            return now + min(timeout / 4, ACK_POLL_SECONDS), 0, False
        return started + timeout, pos, True

    def next_deadline(self, read_slot: SlotReader, now: float = 0.0) -> float | None:
        """The earliest moment :meth:`on_tick` may have something to do."""
        best: float | None = None
        for worker in self.workers.values():
            if worker.phase is WorkerPhase.STOPPING:
                candidate = worker.kill_at
            else:
                candidate = self._deadline(worker, read_slot, now)[0]
            if candidate is not None and (best is None or candidate < best):
                best = candidate
        return best

    def forget(self, job: Job) -> None:
        """A job is over: workers may drop its function (told with their next chunk)."""
        for worker in self.workers.values():
            if job.id in worker.known_jobs:
                worker.known_jobs.discard(job.id)
                worker.to_forget.append(job.id)

    def on_result_unreadable(
        self, wid: int, seq: int, error: BaseException, now: float
    ) -> list[Action]:
        """The parent could not unpickle a chunk's results."""
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []
        chunk = self._pop_head(worker)[0]
        worker.free_since = now
        return self._result_unreadable(chunk, error) + self._after(now)

    def cancel(self, job: Job) -> None:
        """Drop the queued chunks of a job nobody waits for any more."""
        self.ready.drop(job.id, job.lane)

    def stop_job(self, job: Job, now: float) -> list[Action]:
        """Drop a cancelled job's queued chunks and stop the workers running its tasks
        (as a timeout does; what they queued behind it goes back to the queue)."""
        self.cancel(job)
        actions: list[Action] = []
        for worker in list(self.workers.values()):
            if worker.phase is WorkerPhase.STOPPING or not worker.queue:
                continue
            if worker.queue[0].job is not job:
                continue
            rest = [c for c in list(worker.queue)[1:] if c.job is not job]
            worker.queue.clear()
            worker.parts = {}  # the stopped chunk's logged results are not wanted
            self._requeue(rest)
            actions += self._stop(worker, signal.SIGTERM, now)
            self.restarts += 1
        return actions + self._after(now) if actions else actions

    def close(self, now: float) -> list[Action]:
        """No new work: each worker quits once its queue is done."""
        self.closing = True
        return self._after(now)

    def _quit_idle(self) -> list[Action]:
        actions: list[Action] = []
        if not self.closing or self.ready:
            return actions
        for worker in self.workers.values():
            if (
                not worker.queue
                and not worker.quitting
                and worker.phase is not WorkerPhase.STOPPING
            ):
                worker.quitting = True
                actions.append(Quit(worker.wid))
        return actions

    def terminate(self, now: float, error: BaseException) -> list[Action]:
        """Stop every worker now; fail every unfinished job with ``error``."""
        self.closing = True
        return self._stop_all(now, error)

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self.ready and all(not w.queue for w in self.workers.values())
