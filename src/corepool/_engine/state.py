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
retry while ``retries`` allow). If it held several and the job tracks positions (jobs
with a timeout), the exact task is known, and the tasks before it had sent their
results one by one as they finished (``on_part``): they are kept, never run again, and
the tasks after it go back as one chunk. Otherwise every task of that chunk is re-queued
on its own, so that the culprit, if it crashes again, is identified alone. The chunks
queued behind it had not started: they go back to the front of their job's lane
unchanged (``lanes.py``: each job has its own, served in turn, so one job's failures
never push its work ahead of the others'). A task is never re-run more than ``retries``
times for failures pinned on it, so a poison input cannot loop.

A task's timeout counts from the moment its worker took it (the worker's slot), not
from when it was sent: a worker still starting, or busy with the chunk before, does
not spend the next task's time.
"""

from __future__ import annotations

import signal
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..errors import (
    BrokenPool,
    CorepoolError,
    SerializationError,
    TaskTimeout,
    WorkerCrashed,
    also,
)
from ..serialize import FailureInfo
from .calls import gather
from .exits import describe_exit
from .job import Job, Piece
from .lanes import CALLS_LANE, Lanes
from .model import (
    Action,
    Chunk,
    Deliver,
    FailJob,
    Kill,
    Quit,
    Send,
    Start,
    Worker,
    WorkerPhase,
    error_from_worker,
    start_failure_error,
)

# A result announced as sent on its own but never received (cannot happen: the frames
# come in order on one channel); the task fails rather than vanish.
_LOST = CorepoolError("the task's result was lost on its way from the worker")

__all__ = ["PoolState"]  # (the records it works with are in model.py)

KILL_GRACE_SECONDS = 0.5
MAX_START_FAILURES = 3
PREFETCH_BELOW_SECONDS = 0.005
RETIRED_KEPT = 64
ACK_POLL_SECONDS = 0.05  # how often to look for the start of a chunk with a timeout

SlotReader = Callable[[int], tuple[int, int, float]]
PickleItems = Callable[[list[Any]], Any]  # inputs -> the payload of a chunk of them


class PoolState:
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
        self.size = workers
        self.max_tasks_per_child = max_tasks_per_child
        self.kill_grace = kill_grace
        self._pickle_items = pickle_items
        self._exit_reason = exit_reason or (lambda code, pid: describe_exit(code))
        self.workers: dict[int, Worker] = {}
        self.ready = Lanes()  # chunks waiting for a worker, one lane per job
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
        # A worker's result log, read when it dies or is stopped (the supervisor's).
        self.read_log: Callable[[int, int], dict[int, tuple[Any, Any]]] = lambda wid, seq: {}

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

    def _enqueue(self, chunk: Chunk, front: bool = False) -> None:
        chunk.seq = self._seqs
        self._seqs += 1
        self.ready.push(chunk, front)

    def _requeue(self, chunks: list[Chunk]) -> None:
        for chunk in reversed(chunks):
            self._enqueue(chunk, front=True)

    def _single(self, chunk: Chunk, pos: int, attempt: int = 0) -> Chunk:
        return chunk.alone(pos, self._pickle_items, attempt)

    def _tail(self, chunk: Chunk, lo: int) -> list[Chunk]:
        return chunk.after(lo, self._pickle_items)

    def _singletons(self, chunk: Chunk, positions: Iterable[int]) -> list[Chunk]:
        return [chunk.alone(pos, self._pickle_items) for pos in positions]

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
                    # Behind a running chunk, only its own job's next one: another job's
                    # chunk would wait there if the running one turns out to be slow.
                    chunk = self.ready.pop(worker.queue[0].job.lane if worker.queue else None)
                    if chunk is None:
                        break
                    if not chunk.job.claim():
                        continue
                    if chunk.job.lane == CALLS_LANE:  # single calls travel together
                        chunk = gather(
                            chunk, self.ready, self._pickle_items, self.size, worker.budget
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
            chunk.start + pos, [None], {0: error}, chunk.origin, chunk.inputs(pos, pos + 1)
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
        return self._stop_all(0.0, error)

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
        if worker is not None and worker.queue and worker.queue[0].seq == seq:
            worker.parts[pos] = (values[0], failures.get(0))
        return []

    def on_logged(self, wid: int, seq: int, entries: dict[int, tuple[Any, Any]]) -> list[Action]:
        """The running chunk's result log filled up and came whole: keep its entries."""
        worker = self.workers.get(wid)
        if worker is not None and worker.queue and worker.queue[0].seq == seq:
            worker.parts.update(entries)
        return []

    def _pop_head(self, worker: Worker) -> tuple[Chunk, dict[int, tuple[Any, Any]]]:
        """Take the worker's running chunk off its queue, with the results it sent alone."""
        chunk = worker.queue.popleft()
        parts, worker.parts = worker.parts, {}
        return chunk, parts

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
        chunk, parts = self._pop_head(worker)
        for pos in sent:  # their results came before, on their own
            values[pos], raw = parts.get(pos, (None, _LOST))
            if raw is not None:
                failures[pos] = raw
        if retiring:
            # Past its memory limit: it exits now, and what it was sent next never ran.
            worker.quitting = True
            self._requeue(list(worker.queue))
            worker.queue.clear()
        worker.free_since = now
        worker.busy += busy
        worker.tasks += chunk.count
        chunk.job.sizer.observe(chunk.count, busy)
        return self._settle(worker, chunk, values, failures) + self._after(now)

    def _settle(
        self, worker: Worker, chunk: Chunk, values: list[Any], failures: dict[int, Any]
    ) -> list[Action]:
        """Deliver the results of tasks ``0 .. len(values) - 1`` of ``chunk``, retrying
        the failed ones that may be retried."""
        job = chunk.job
        if not failures:
            return [Deliver(job, Piece(chunk.start, values, {}, chunk.origin, None))]
        worker.failed += len(failures)
        final: dict[int, BaseException] = {}
        retried: list[int] = []
        for pos, raw in sorted(failures.items()):
            error = error_from_worker(chunk, pos, raw)
            if self._retries_left(chunk, error):
                self._retry(chunk, pos)
                retried.append(pos)
                worker.retried += 1
            else:
                final[pos] = error
        # Deliver the tasks minus the retried ones, as contiguous pieces.
        actions: list[Action] = []
        lo = 0
        for hi in [*retried, len(values)]:
            if hi > lo:
                piece_failures = {i - lo: e for i, e in final.items() if lo <= i < hi}
                inputs = chunk.inputs(lo, hi) if piece_failures else None
                piece = Piece(chunk.start + lo, values[lo:hi], piece_failures, chunk.origin, inputs)
                actions.append(Deliver(job, piece))
            lo = hi + 1
        return actions

    def on_unreadable(
        self, wid: int, seq: int, what: str, info: FailureInfo, now: float
    ) -> list[Action]:
        """The worker could not unpickle a chunk's function or inputs."""
        worker = self.workers.get(wid)
        if worker is None or not worker.queue or worker.queue[0].seq != seq:
            return []
        chunk = self._pop_head(worker)[0]
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
            self.retired_earlier.absorb(self.retired.popleft(), now)
        actions: list[Action] = []
        expected = worker.phase is WorkerPhase.STOPPING or (worker.quitting and not worker.queue)
        if not expected:
            self.restarts += 1
            if worker.phase is WorkerPhase.STARTING:
                self.start_failures += 1
                self._requeue(list(worker.queue))
                worker.queue.clear()
                if self.start_failures >= MAX_START_FAILURES and self.broken is None:
                    return self._break(start_failure_error(exitcode, MAX_START_FAILURES))
            elif worker.queue:
                head = worker.queue[0]
                pos = None
                if head.job.timeout is not None:
                    seq, slot_pos, _ = read_slot(wid)
                    if seq == head.seq and slot_pos >= 0:
                        pos = slot_pos
                actions += self._crashed(worker, exitcode, now, pos)
        return actions + self._after(now)

    def _crashed(
        self, worker: Worker, exitcode: int | None, now: float, pos: int | None = None
    ) -> list[Action]:
        head = worker.queue[0]
        if head.count > 1 and pos is None:
            # Which task killed it is unknown: each one again on its own.
            worker.queue.popleft()
            self._requeue(list(worker.queue))
            worker.queue.clear()
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
        return self._lose_head(worker, pos, error)

    def _lose_head(self, worker: Worker, pos: int, error: BaseException) -> list[Action]:
        """The worker's running chunk ends at task ``pos``, failed with ``error`` (its
        worker died or was stopped): the tasks before it keep the results they logged or
        sent, the tasks after it never started and go back to the queue as one chunk."""
        head = worker.queue[0]
        known = self.read_log(worker.wid, head.seq) if head.job.timeout is not None else {}
        head, parts = self._pop_head(worker)
        known.update(parts)
        self._requeue(list(worker.queue))
        worker.queue.clear()
        done = 0
        while done in known:
            done += 1
        self._requeue(self._tail(head, max(pos + 1, done)))
        # Tasks that ran but whose results are not known (none, when the job is tracked).
        self._requeue(self._singletons(head, range(done, pos)))
        actions: list[Action] = []
        if done:
            values = [known[i][0] for i in range(done)]
            failures = {i: known[i][1] for i in range(done) if known[i][1] is not None}
            actions += self._settle(worker, head, values, failures)
        if pos >= done:
            actions += self._fail_task(head, pos, error, worker)
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
            deadline, pos, started = self._deadline(worker, read_slot)
            if not started or deadline is None or now < deadline:
                continue
            head = worker.queue[0]
            timeout = head.job.timeout
            assert timeout is not None
            if pos < 0 and head.count > 1:
                # Stuck unpickling a chunk's inputs: which one is unknown, so each
                # goes again on its own (the one that hangs again then fails alone).
                worker.queue.popleft()
                worker.parts = {}
                self._requeue(list(worker.queue))
                worker.queue.clear()
                self._requeue(self._singletons(head, range(head.count)))
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
