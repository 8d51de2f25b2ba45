"""The pool's queue of chunks, and what a failure costs the chunks it touches.

The half of the state machine that :class:`~corepool._engine.state.PoolState` builds
on: it owns the queue (``lanes.py``) and decides, when a task fails, a worker dies or
a chunk cannot be read, which tasks are delivered, which are retried and which go back
to the queue. Like the rest of the state it performs no I/O and reads no clock; it
returns actions.

What a worker's death costs: the chunks it held are known (one channel per worker,
FIFO). The first was running. If it held one task, that task failed
(``WorkerCrashed``, or a retry while ``retries`` allow). If it held several and the job
tracks positions (jobs with a timeout), the exact task is known, and the tasks before
it had logged or sent their results one by one as they finished: they are kept, never
run again, and the tasks after it go back as one chunk. Otherwise every task of that
chunk is re-queued on its own, so that the culprit, if it crashes again, is identified
alone. The chunks queued behind it had not started: they go back to the front of their
job's lane unchanged (each job has its own, served in turn, so one job's failures never
push its work ahead of the others'). A task is never re-run more than ``retries`` times
for failures pinned on it, so a poison input cannot loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .._tasks.job import Piece
from .._tasks.rules import culprit, may_retry
from ..errors import CorepoolError, SerializationError, WorkerCrashed, also
from ..serialize import FailureInfo
from .lanes import Lanes
from .model import Action, CancelJob, Chunk, Deliver, FailJob, Worker, error_from_worker

__all__ = ["Recovery"]

# A result announced as sent on its own but never received (cannot happen: the frames
# come in order on one channel); the task fails rather than vanish.
_LOST = CorepoolError("the task's result was lost on its way from the worker")

PickleItems = Callable[[list[Any]], Any]  # inputs -> the payload of a chunk of them
LogReader = Callable[[int, int], dict[int, tuple[Any, Any]]]


class Recovery:
    """Queued chunks, retries, and the splitting of chunks a failure touched."""

    def __init__(
        self, pickle_items: PickleItems, exit_reason: Callable[[int | None, int | None], str]
    ) -> None:
        self.ready = Lanes()  # chunks waiting for a worker, one lane per job
        self._seqs = 0
        self._pickle_items = pickle_items
        self._exit_reason = exit_reason
        # A worker's result log, read when it dies or is stopped (the supervisor's).
        self.read_log: LogReader = lambda wid, seq: {}

    # The queue ------------------------------------------------------------------------
    def _enqueue(self, chunk: Chunk, front: bool = False) -> None:
        chunk.seq = self._seqs
        self._seqs += 1
        self.ready.push(chunk, front)

    def _requeue(self, chunks: list[Chunk]) -> None:
        for chunk in reversed(chunks):
            self._enqueue(chunk, front=True)

    def _requeue_behind(self, worker: Worker) -> None:
        """The chunks queued on ``worker`` never started: back to the queue's front."""
        self._requeue(list(worker.queue))
        worker.queue.clear()

    def _singletons(self, chunk: Chunk, positions: Iterable[int]) -> list[Chunk]:
        return [chunk.alone(pos, self._pickle_items) for pos in positions]

    def _isolate(self, chunk: Chunk) -> None:
        """Which of the chunk's tasks failed is unknown: each goes again on its own."""
        self._requeue(self._singletons(chunk, range(chunk.count)))

    @staticmethod
    def _pop_head(worker: Worker) -> tuple[Chunk, dict[int, tuple[Any, Any]]]:
        """Take the worker's running chunk off its queue, with the results it sent alone."""
        chunk = worker.queue.popleft()
        parts, worker.parts = worker.parts, {}
        return chunk, parts

    # Retries --------------------------------------------------------------------------
    def _retries_left(self, chunk: Chunk, error: BaseException) -> bool:
        job = chunk.job
        attempt = chunk.attempt if chunk.count == 1 else 0
        return may_retry(error, attempt, job.retries, job.retry_on, job.cancelled)

    def _retry(self, chunk: Chunk, pos: int) -> None:
        attempt = (chunk.attempt if chunk.count == 1 else 0) + 1
        self._requeue([chunk.alone(pos, self._pickle_items, attempt)])

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

    def _finished(
        self,
        worker: Worker,
        values: list[Any],
        failures: dict[int, Any],
        sent: tuple[int, ...],
    ) -> tuple[Chunk, list[Action]]:
        """The worker's running chunk ended: its results, with those ``sent`` alone."""
        chunk, parts = self._pop_head(worker)
        for pos in sent:  # their results came before, on their own
            values[pos], raw = parts.get(pos, (None, _LOST))
            if raw is not None:
                failures[pos] = raw
        return chunk, self._settle(worker, chunk, values, failures)

    # A worker that died or was stopped ------------------------------------------------
    def _crashed(self, worker: Worker, exitcode: int | None, pos: int | None) -> list[Action]:
        """The worker died running its first chunk (at task ``pos``, if known)."""
        head = worker.queue[0]
        pos = culprit(head.count, pos)
        if pos is None:
            worker.queue.popleft()
            self._requeue_behind(worker)
            self._isolate(head)
            return []
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
        self._requeue_behind(worker)
        done = 0
        while done in known:
            done += 1
        self._requeue(head.after(max(pos + 1, done), self._pickle_items))
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

    # Chunks that cannot be read -------------------------------------------------------
    def _unreadable(self, chunk: Chunk, what: str, info: FailureInfo) -> list[Action]:
        """The worker could not unpickle the chunk's function or inputs (``what``)."""
        job = chunk.job
        if what == "inputs" and culprit(chunk.count) is None:
            self._isolate(chunk)  # find the culprit: each input on its own
            return []
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
            # No chunk of this job can run: drop those queued, stop its input.
            self.ready.drop(job.id, job.lane)
            return [FailJob(job, error), CancelJob(job)]
        return [Deliver(job, Piece(chunk.start, [None], {0: error}, chunk.origin, chunk.items))]

    def _result_unreadable(self, chunk: Chunk, error: BaseException) -> list[Action]:
        """The parent could not unpickle the chunk's results."""
        if culprit(chunk.count) is None:
            self._isolate(chunk)
            return []
        failure = also(
            SerializationError(
                f"the result of task {chunk.start} cannot be unpickled in the calling "
                f"process: {type(error).__name__}: {error}"
            ),
            BrokenProcessPool,
        )
        failure.__cause__ = error
        piece = Piece(chunk.start, [None], {0: failure}, chunk.origin, chunk.items)
        return [Deliver(chunk.job, piece)]
