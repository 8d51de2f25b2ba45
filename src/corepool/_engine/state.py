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

What a worker's death costs: the chunks it held are known (one channel per worker, FIFO).
The first was running. If it held one task, that task failed (``WorkerCrashed``, or a
retry while ``retries`` allow). If it held several, the exact task is known when the job
tracks positions (jobs with a timeout); otherwise every task of that chunk is re-queued
on its own, so that the culprit, if it crashes again, is identified alone. The chunks
queued behind it had not started: they go back to the front of the queue unchanged.
A task is never re-run more than ``retries`` times for failures pinned on it, so a poison
input cannot loop.
"""

from __future__ import annotations

import enum
import multiprocessing.pool
import signal
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

from ..errors import BrokenPool, SerializationError, TaskTimeout, WorkerCrashed, also
from ..serialize import FailureInfo
from . import protocol as p
from .exits import describe_exit
from .job import Job, Piece

KILL_GRACE_SECONDS = 0.5
MAX_START_FAILURES = 3
PREFETCH_BELOW_SECONDS = 0.005
RETIRED_KEPT = 64

SlotReader = Callable[[int], tuple[int, int, float]]
PickleOne = Callable[[Any], Any]  # one input -> the payload of a one-task chunk


class Chunk:
    """Inputs ``start .. start + count - 1`` of ``job``, pickled as a list in ``payload``.

    ``items`` are the inputs themselves, kept while the chunk is out: retries and
    isolation re-pickle them one by one, and error notes describe them, so the parent
    never unpickles a task's input (which could run arbitrary reconstruction code).
    """

    __slots__ = ("attempt", "count", "items", "job", "origin", "payload", "seq", "start")

    def __init__(
        self,
        job: Job,
        origin: int,
        start: int,
        count: int,
        payload: Any,  # bytes, or a sharedmem.Packed (bytes with shared-memory segments)
        attempt: int = 0,  # failures already pinned on this (single) task
        *,
        items: list[Any] | None = None,
    ) -> None:
        self.job = job
        self.origin = origin
        self.start = start
        self.count = count
        self.payload = payload
        self.attempt = attempt
        self.seq = -1  # unique in the pool, set when it enters the queue
        self.items = items

    def __repr__(self) -> str:
        return f"Chunk(seq={self.seq}, start={self.start}, count={self.count})"


class WorkerPhase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Worker:
    """What the state knows of one worker process."""

    def __init__(self, wid: int) -> None:
        self.wid = wid
        self.phase = WorkerPhase.STARTING
        self.pid: int | None = None
        self.queue: deque[Chunk] = deque()
        self.known_jobs: set[int] = set()
        self.to_forget: list[int] = []
        self.budget: int | None = None  # tasks it may still be sent (maxtasksperchild)
        self.quitting = False
        self.kill_at: float | None = None
        # When its last chunk finished: a lower bound for the next one's start.
        self.free_since = 0.0
        self.tasks = 0
        self.failed = 0  # attempts that ended with an error here (retried or not)
        self.retried = 0  # of those, the ones that were tried again
        self.busy = 0.0
        self.started_at = 0.0
        self.ended_at: float | None = None


# Actions ----------------------------------------------------------------------------
# (Named tuples, not dataclasses: they are built per chunk, and dataclasses cost
# milliseconds of a short program's start-up.)
class Start(NamedTuple):
    wid: int


class Send(NamedTuple):
    wid: int
    chunk: Chunk
    with_function: bool
    forget: tuple[int, ...]


class Quit(NamedTuple):
    wid: int


class Kill(NamedTuple):
    wid: int
    signum: int


class Deliver(NamedTuple):
    job: Job
    piece: Piece


class FailJob(NamedTuple):
    job: Job
    error: BaseException


Action = Start | Send | Quit | Kill | Deliver | FailJob


class PoolState:
    """Workers, queued chunks and the rules between them."""

    def __init__(
        self,
        workers: int,
        *,
        max_tasks_per_child: int | None = None,
        pickle_one: PickleOne,
        kill_grace: float = KILL_GRACE_SECONDS,
        exit_reason: Callable[[int | None, int | None], str] | None = None,
    ) -> None:
        self.size = workers
        self.max_tasks_per_child = max_tasks_per_child
        self.kill_grace = kill_grace
        self._pickle_one = pickle_one
        self._exit_reason = exit_reason or (lambda code, pid: describe_exit(code))
        self.workers: dict[int, Worker] = {}
        self.ready: deque[Chunk] = deque()
        self._wids = 0
        self._seqs = 0
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
        if self.broken is not None or (self.closing and self.idle()):
            return actions
        while self._live() < self.size:
            actions += self._new_worker(now)
        return actions

    def _after(self, now: float) -> list[Action]:
        """Replace missing workers, hand out queued chunks, let idle workers go."""
        return self._top_up(now) + self._dispatch(now) + self._quit_idle()

    def _enqueue(self, chunk: Chunk, front: bool = False) -> None:
        chunk.seq = self._seqs
        self._seqs += 1
        if front:
            self.ready.appendleft(chunk)
        else:
            self.ready.append(chunk)

    def _requeue(self, chunks: list[Chunk]) -> None:
        for chunk in reversed(chunks):
            self._enqueue(chunk, front=True)

    def _single(self, chunk: Chunk, pos: int, attempt: int = 0) -> Chunk:
        """Task ``pos`` of ``chunk`` as a chunk of its own."""
        if chunk.count == 1:
            return Chunk(
                chunk.job, chunk.origin, chunk.start, 1, chunk.payload, attempt, items=chunk.items
            )
        assert chunk.items is not None, "a chunk of several tasks keeps its inputs"
        item = chunk.items[pos]
        return Chunk(
            chunk.job,
            chunk.origin,
            chunk.start + pos,
            1,
            self._pickle_one(item),
            attempt,
            items=[item],
        )

    def _singletons(self, chunk: Chunk, positions: Iterable[int]) -> list[Chunk]:
        return [self._single(chunk, pos) for pos in positions]

    def _inputs(self, chunk: Chunk, lo: int, hi: int) -> list[Any] | None:
        return None if chunk.items is None else chunk.items[lo:hi]

    def _capacity(self, worker: Worker, now: float) -> int:
        """Chunks a worker may hold: a second one only behind a chunk known to be short.

        A chunk sent to a worker cannot be taken back: queued behind a long task it would
        wait while other workers idle. So a worker gets a second chunk (which hides the
        round trip between chunks) only while it runs a chunk of a job whose measured
        time per task says it will finish within :data:`PREFETCH_BELOW_SECONDS`, and
        which has not already run past that estimate (an outlier).
        """
        if not worker.queue:
            return 1
        running = worker.queue[0]
        estimate = running.job.sizer.estimate(running.count)
        if estimate is None or estimate >= PREFETCH_BELOW_SECONDS:
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
                    chunk = self.ready.popleft()
                    if not chunk.job.claim():
                        continue
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

    def _retries_left(self, chunk: Chunk, error: BaseException) -> bool:
        job = chunk.job
        attempt = chunk.attempt if chunk.count == 1 else 0
        if isinstance(error, SerializationError) or not isinstance(error, job.retry_on):
            return False
        return attempt < job.retries and not job.cancelled

    def _retry(self, chunk: Chunk, pos: int) -> None:
        attempt = (chunk.attempt if chunk.count == 1 else 0) + 1
        self._requeue([self._single(chunk, pos, attempt)])

    def _fail_task(
        self, chunk: Chunk, pos: int, error: BaseException, worker: Worker
    ) -> list[Action]:
        """A failure pinned on one task (on ``worker``): retry it or deliver the error."""
        worker.failed += 1
        if self._retries_left(chunk, error):
            self._retry(chunk, pos)
            worker.retried += 1
            return []
        piece = Piece(
            chunk.start + pos, [None], {0: error}, chunk.origin, self._inputs(chunk, pos, pos + 1)
        )
        return [Deliver(chunk.job, piece)]

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

    def on_spawned(self, wid: int, pid: int) -> None:
        """The worker's process exists (it is still starting): its pid, for stats."""
        worker = self.workers.get(wid)
        if worker is not None:
            worker.pid = pid

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
        return self._break(error)

    def _break(self, error: BrokenPool) -> list[Action]:
        self.broken = error
        actions: list[Action] = []
        jobs: dict[int, Job] = {}
        for worker in self.workers.values():
            for chunk in worker.queue:
                jobs[chunk.job.id] = chunk.job
            worker.queue.clear()
        for chunk in self.ready:
            jobs[chunk.job.id] = chunk.job
        self.ready.clear()
        actions += [FailJob(job, error) for job in jobs.values()]
        for worker in self.workers.values():
            if worker.phase is not WorkerPhase.STOPPING:
                actions += self._stop(worker, signal.SIGTERM, 0.0)
        return actions

    def on_done(
        self,
        wid: int,
        seq: int,
        busy: float,
        values: list[Any],
        failures: dict[int, Any],
        now: float,
        retiring: bool = False,
    ) -> list[Action]:
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []  # a worker we already gave up on (timed out): its results are void
        chunk = worker.queue.popleft()
        if retiring:
            # Past its memory limit: it exits now, and what it was sent next never ran.
            worker.quitting = True
            self._requeue(list(worker.queue))
            worker.queue.clear()
        worker.free_since = now
        worker.busy += busy
        worker.tasks += chunk.count
        worker.failed += len(failures)
        job = chunk.job
        if not failures:
            job.sizer.observe(chunk.count, busy)
            actions: list[Action] = [
                Deliver(job, Piece(chunk.start, values, {}, chunk.origin, None))
            ]
            return actions + self._after(now)
        job.sizer.observe(chunk.count, busy)
        final: dict[int, BaseException] = {}
        retried: list[int] = []
        for pos, raw in sorted(failures.items()):
            error = self._error_from_worker(chunk, pos, raw)
            if self._retries_left(chunk, error):
                self._retry(chunk, pos)
                retried.append(pos)
                worker.retried += 1
            else:
                final[pos] = error
        # Deliver the chunk minus the retried tasks, as contiguous pieces.
        actions = []
        lo = 0
        for hi in [*retried, chunk.count]:
            if hi > lo:
                piece_failures = {i - lo: e for i, e in final.items() if lo <= i < hi}
                inputs = self._inputs(chunk, lo, hi) if piece_failures else None
                piece = Piece(chunk.start + lo, values[lo:hi], piece_failures, chunk.origin, inputs)
                actions.append(Deliver(job, piece))
            lo = hi + 1
        return actions + self._after(now)

    def _error_from_worker(self, chunk: Chunk, pos: int, raw: Any) -> BaseException:
        if isinstance(raw, tuple) and raw and raw[0] == p.RESULT_UNPICKLABLE:
            info: FailureInfo = raw[1]
            failure = SerializationError(
                f"the result of task {chunk.start + pos} cannot be pickled: "
                f"{info.type_name}: {info.message}"
            )
            failure.__cause__ = info.rebuild()
            # Also what multiprocessing.Pool raises here, with its two fields.
            failure.exc = repr(failure.__cause__)  # type: ignore[attr-defined]
            failure.value = info.message  # type: ignore[attr-defined]
            return also(failure, multiprocessing.pool.MaybeEncodingError)  # type: ignore[attr-defined]
        if isinstance(raw, tuple) and raw and raw[0] == p.MEMORY_LIMIT:
            limit: int = raw[1]
            error = WorkerCrashed(
                f"task {chunk.start + pos} ran out of memory: it passed the worker memory "
                f"limit of {limit:,} bytes (MemoryError); its worker was replaced",
                None,
                "memory limit",
            )
            error.__cause__ = raw[2].rebuild()
            return error
        assert isinstance(raw, FailureInfo)
        return raw.rebuild()

    def on_unreadable(
        self, wid: int, seq: int, what: str, info: FailureInfo, now: float
    ) -> list[Action]:
        """The worker could not unpickle a chunk's function or inputs."""
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []
        chunk = worker.queue.popleft()
        worker.free_since = now
        job = chunk.job
        actions: list[Action] = []
        if what == "inputs" and chunk.count > 1:
            # Find the culprit: each input on its own.
            self._requeue(self._singletons(chunk, range(chunk.count)))
        else:
            subject = "the function" if what == "function" else f"the input of task {chunk.start}"
            # Also BrokenProcessPool: what ProcessPoolExecutor raises here.
            error = also(
                SerializationError(
                    f"{subject} cannot be unpickled in the worker process: "
                    f"{info.type_name}: {info.message}"
                ),
                BrokenProcessPool,
            )
            error.__cause__ = info.rebuild()
            if what == "function":
                actions.append(FailJob(job, error))
                job.cancel()
            else:
                actions.append(
                    Deliver(job, Piece(chunk.start, [None], {0: error}, chunk.origin, chunk.items))
                )
        return actions + self._after(now)

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
            old = self.retired.popleft()
            total = self.retired_earlier  # started at 0: its "end" is the summed lifetimes
            total.tasks += old.tasks
            total.failed += old.failed
            total.retried += old.retried
            total.busy += old.busy
            lifetime = (old.ended_at or now) - old.started_at
            total.ended_at = (total.ended_at or 0.0) + lifetime
        actions: list[Action] = []
        expected = worker.phase is WorkerPhase.STOPPING or (worker.quitting and not worker.queue)
        if not expected:
            self.restarts += 1
            if worker.phase is WorkerPhase.STARTING:
                self.start_failures += 1
                self._requeue(list(worker.queue))
                worker.queue.clear()
                if self.start_failures >= MAX_START_FAILURES and self.broken is None:
                    return self._break(self._start_failure_error(exitcode))
            elif worker.queue:
                head = worker.queue[0]
                pos = None
                if head.job.timeout is not None:
                    seq, slot_pos, _ = read_slot(wid)
                    if seq == head.seq and slot_pos >= 0:
                        pos = slot_pos
                actions += self._crashed(worker, exitcode, now, pos)
        return actions + self._after(now)

    def _start_failure_error(self, exitcode: int | None) -> BrokenPool:
        return BrokenPool(
            f"worker processes exit while starting ({describe_exit(exitcode)}), "
            f"{MAX_START_FAILURES} times in a row. If the script that creates the pool runs "
            'it at import time, put that code under `if __name__ == "__main__":` - '
            "worker processes import the main script, and must not start pools themselves. "
            "The workers' own error, if any, is printed above."
        )

    def _crashed(
        self, worker: Worker, exitcode: int | None, now: float, pos: int | None = None
    ) -> list[Action]:
        head = worker.queue.popleft()
        rest = list(worker.queue)
        worker.queue.clear()
        self._requeue(rest)
        if head.count > 1 and pos is None:
            self._requeue(self._singletons(head, range(head.count)))
            return []
        pos = pos or 0
        reason = self._exit_reason(exitcode, worker.pid)
        error = WorkerCrashed(
            f"the worker process (pid {worker.pid}) running task {head.start + pos} died: "
            f"{reason}; it was replaced and the pool goes on",
            exitcode,
            reason,
        )
        actions = self._fail_task(head, pos, error, worker)
        if head.count > 1:
            self._requeue(self._singletons(head, [i for i in range(head.count) if i != pos]))
        return actions

    def on_tick(self, now: float, read_slot: SlotReader) -> list[Action]:
        """Time passed: enforce task timeouts and kill workers that ignored SIGTERM."""
        actions: list[Action] = []
        for worker in list(self.workers.values()):
            if worker.phase is WorkerPhase.STOPPING:
                if worker.kill_at is not None and now >= worker.kill_at:
                    worker.kill_at = None
                    actions.append(Kill(worker.wid, signal.SIGKILL))
                continue
            found = self._overdue(worker, now, read_slot)
            if found is None:
                continue
            head = worker.queue[0]
            pos = found
            timeout = head.job.timeout
            assert timeout is not None
            error = TaskTimeout(
                f"task {head.start + pos} ran longer than its {timeout:g} s timeout; its worker "
                f"(pid {worker.pid}) was stopped and replaced",
                timeout,
            )
            worker.queue.popleft()
            rest = list(worker.queue)
            worker.queue.clear()
            self._requeue(rest)
            if head.count > 1:
                self._requeue(self._singletons(head, [i for i in range(head.count) if i != pos]))
            actions += self._fail_task(head, pos, error, worker)
            actions += self._stop(worker, signal.SIGTERM, now)
            self.restarts += 1
        if actions:
            actions += self._after(now)
        return actions

    def _stop(self, worker: Worker, signum: int, now: float) -> list[Action]:
        worker.phase = WorkerPhase.STOPPING
        worker.kill_at = now + self.kill_grace
        return [Kill(worker.wid, signum)]

    def _overdue(self, worker: Worker, now: float, read_slot: SlotReader) -> int | None:
        deadline, pos = self._deadline(worker, read_slot)
        if deadline is None or now < deadline:
            return None
        return pos

    def _deadline(self, worker: Worker, read_slot: SlotReader) -> tuple[float | None, int]:
        if not worker.queue or worker.phase is not WorkerPhase.RUNNING:
            return None, 0
        head = worker.queue[0]
        timeout = head.job.timeout
        if timeout is None:
            return None, 0
        seq, pos, started = read_slot(worker.wid)
        if seq == head.seq and pos >= 0:
            return started + timeout, pos
        return max(worker.free_since, started if seq == head.seq else 0.0) + timeout, 0

    def next_deadline(self, read_slot: SlotReader) -> float | None:
        """The earliest moment :meth:`on_tick` may have something to do."""
        best: float | None = None
        for worker in self.workers.values():
            if worker.phase is WorkerPhase.STOPPING:
                candidate = worker.kill_at
            else:
                candidate = self._deadline(worker, read_slot)[0]
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
        chunk = worker.queue.popleft()
        worker.free_since = now
        if chunk.count > 1:
            self._requeue(self._singletons(chunk, range(chunk.count)))
            return self._after(now)
        failure = also(
            SerializationError(
                f"the result of task {chunk.start} cannot be unpickled in the calling "
                f"process: {type(error).__name__}: {error}"
            ),
            BrokenProcessPool,
        )
        failure.__cause__ = error
        piece = Piece(chunk.start, [None], {0: failure}, chunk.origin, chunk.items)
        return [Deliver(chunk.job, piece), *self._after(now)]

    def cancel(self, job: Job) -> None:
        """Drop the queued chunks of a job nobody waits for any more."""
        self.ready = deque(c for c in self.ready if c.job is not job)

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
        jobs: dict[int, Job] = {}
        for chunk in self.ready:
            jobs[chunk.job.id] = chunk.job
        self.ready.clear()
        actions: list[Action] = []
        for worker in self.workers.values():
            for chunk in worker.queue:
                jobs[chunk.job.id] = chunk.job
            worker.queue.clear()
            if worker.phase is not WorkerPhase.STOPPING:
                actions += self._stop(worker, signal.SIGTERM, now)
        actions += [FailJob(job, error) for job in jobs.values()]
        return actions

    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return not self.ready and all(not w.queue for w in self.workers.values())
