"""A job: one function applied to a stream of inputs, or to a single call.

A job is where the three parties meet. The *feeder* pulls inputs from the user's
iterable in chunks (:meth:`StreamJob.next_chunk`) while the window allows; the
*supervisor* (or a thread or serial backend) runs them and hands back :class:`Piece`
objects through :meth:`Job.deliver`; the *consumer*, the thread that iterates the
results, reassembles pieces in input order or completion order
(:meth:`StreamJob.pieces`) and gives window permits back as it consumes them, which is
what keeps memory bounded for an endless input and a slow consumer.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

from ..serialize import add_note, argument_error, describe_input
from .sizing import ChunkSizer
from .styles import CallStyle

_job_ids = itertools.count()


def describe_item(style: int, item: Any) -> str:
    """A short repr of one input of a job of ``style``, as the function receives it."""
    if style == CallStyle.CALL:
        args, kwargs = item
        parts = [describe_input(a) for a in args]
        parts += [f"{k}={describe_input(v)}" for k, v in kwargs.items()]
        return "(" + ", ".join(parts) + ")"
    return describe_input(item)


class Piece:
    """Results for the contiguous task indices ``start .. start + len(values) - 1``.

    ``failures`` maps a position in ``values`` to the exception that task ended with;
    ``inputs`` are the tasks' inputs when there are failures, to describe them in notes;
    ``retried`` counts attempts that failed and were run again (backends that run inline).
    """

    __slots__ = ("failures", "inputs", "origin", "retried", "start", "values")

    def __init__(
        self,
        start: int,
        values: list[Any],
        failures: dict[int, BaseException] | None = None,
        origin: int = -1,
        inputs: list[Any] | None = None,
        retried: int = 0,
    ) -> None:
        self.start = start
        self.values = values
        self.failures: dict[int, BaseException] = {} if failures is None else failures
        self.origin = origin
        self.inputs = inputs
        self.retried = retried

    def _fields(self) -> tuple[Any, ...]:
        return self.start, self.values, self.failures, self.origin, self.inputs, self.retried

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Piece) and self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Piece(start={self.start}, values={len(self.values)}, failures={self.failures})"


class LazyEvent:
    """A ``threading.Event`` that costs nothing until someone waits before it is set.

    Every call (``apply_async``, ``submit``) has one or two of these, most of which are
    set before anybody waits; a real Event (a Condition and a lock) per call was a good
    part of the per-call cost.
    """

    __slots__ = ("_event", "_flag")
    _creating = threading.Lock()

    def __init__(self) -> None:
        self._flag = False
        self._event: threading.Event | None = None

    def set(self) -> None:
        self._flag = True
        event = self._event
        if event is not None:
            event.set()

    def is_set(self) -> bool:
        return self._flag

    def wait(self, timeout: float | None = None) -> bool:
        if self._flag:
            return True
        with LazyEvent._creating:
            if self._event is None:
                self._event = threading.Event()
            if self._flag:  # set() ran before the Event existed
                self._event.set()
        return self._event.wait(timeout)


class Job:
    """What every backend needs to know about a job, and where its results go."""

    # Each task answers someone of its own (a batch of single calls): its result is
    # delivered as it ends, not with the rest of its chunk.
    answers_each = False

    def __init__(
        self,
        fn: Callable[..., Any],
        style: CallStyle,
        *,
        timeout: float | None = None,
        retries: int = 0,
        retry_on: tuple[type[BaseException], ...] = (Exception,),
        sizer: ChunkSizer | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.id = next(_job_ids)
        self.fn = fn
        # A plain int: it travels with every chunk, and an enum member pickles 5x slower.
        self.style = int(style)
        self.timeout = timeout
        self.retries = retries
        self.retry_on = retry_on
        self.sizer = sizer or ChunkSizer(1)
        self.cancelled = False
        # Set once every task has a result (or the job was given up): what join() waits
        # for; reading the results is not needed.
        self.computed = LazyEvent()
        self.cache_function = style != CallStyle.CALL  # a worker keeps a stream's function
        self.fn_bytes: bytes | None = None  # set by the process backend
        # The segments of shared handles inside the function (sent beside fn_bytes).
        self.fn_segments: list[Any] = []
        # The caller's logging levels as the job started, read in the caller's thread
        # (set by the process backend when its workers forward records).
        self.caller_levels: Any = None

    @property
    def lane(self) -> int:
        """Its queue in the pool (see ``lanes.py``): a stream's own, or the calls' lane."""
        return self.id if self.cache_function else -1

    # Called by backends -------------------------------------------------------------
    def deliver(self, piece: Piece) -> None:
        """Hand over finished tasks (any thread)."""
        raise NotImplementedError

    def fail(self, exc: BaseException) -> None:
        """The whole job cannot go on (pool broken or terminated)."""
        raise NotImplementedError

    def cancel(self) -> None:
        """The caller no longer wants results: stop pulling input."""
        self.cancelled = True
        self.computed.set()

    def claim(self) -> bool:
        """Called as a chunk of this job goes to a worker; False if it must not run."""
        return not self.cancelled

    def unbound(self) -> None:
        """Let the feeder run ahead without waiting for the consumer (pool closing)."""

    def describe_value(self, item: Any) -> str:
        """A short repr of one input, as the function receives it."""
        return describe_item(self.style, item)

    def name_task(self, index: int) -> str:
        """How a failure's note names the task at ``index``."""
        return f"task {index}"

    def annotate(self, piece: Piece) -> None:
        """Add to each failure the note naming its task index and input (once)."""
        for pos, exc in piece.failures.items():
            if getattr(exc, "_corepool_noted", False):
                continue
            shown = "?" if piece.inputs is None else self.describe_value(piece.inputs[pos])
            add_note(exc, f"corepool: {self.name_task(piece.start + pos)}, input {shown}")
            try:
                exc._corepool_noted = True  # type: ignore[attr-defined]
            except Exception:
                pass


class CallJob(Job):
    """A single ``fn(*args, **kwargs)`` whose outcome goes to a Future."""

    def __init__(self, fn: Callable[..., Any], future: Future[Any], **options: Any) -> None:
        super().__init__(fn, CallStyle.CALL, **options)
        self.future = future

    def name_task(self, index: int) -> str:
        return "single call"  # one task: its index (always 0) would say nothing

    def claim(self) -> bool:
        # (Not set_running_or_notify_cancel() alone: on a Future that is not pending it
        # logs a CRITICAL record before it raises.) A settled Future (cancelled, or
        # failed by a terminate while its chunk was queued) is not claimable.
        if self.future.done():
            return False
        if not self.future.running():
            return self.future.set_running_or_notify_cancel()
        return True

    def deliver(self, piece: Piece) -> None:
        self.computed.set()
        if self.future.done():
            return
        if piece.failures:
            self.annotate(piece)
            self.future.set_exception(piece.failures[0])
        else:
            self.future.set_result(piece.values[0])

    def fail(self, exc: BaseException) -> None:
        self.computed.set()
        if not self.future.done():
            self.future.set_exception(exc)


_END = object()


class WaitExpired(Exception):
    """No piece came within a :class:`PieceStream`'s bounded wait; the stream goes on."""


class StreamJob(Job):
    """``fn`` over an iterable: lazy input, bounded window, ordered or unordered output."""

    def __init__(
        self,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        style: CallStyle,
        *,
        window: int,
        **options: Any,
    ) -> None:
        super().__init__(fn, style, **options)
        self._inputs: Iterator[Any] = iter(iterable)
        self._input_lock = threading.Lock()
        self._next_start = 0
        self._origins = itertools.count()
        self._origin_sizes: dict[int, int] = {}  # chunks out and not yet fully taken
        self._released_items = 0
        self.window = threading.Semaphore(window)
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.total: int | None = None  # known once the input is exhausted
        self._delivered = 0
        self._count_lock = threading.Lock()
        self.input_error: BaseException | None = None
        self._failure: BaseException | None = None
        self.pump: Callable[[], bool] | None = None  # serial backend: run work inline
        self.unbounded = False  # the pool is closing: pull without waiting for the consumer

    # The feeder side ----------------------------------------------------------------
    def next_chunk(self) -> tuple[int, int, list[Any]] | None:
        """Pull the next chunk ``(origin, start, inputs)``; None when the input is done."""
        with self._input_lock:
            if self.total is not None or self.cancelled:
                return None
            size = self.sizer.next_size()
            start = self._next_start
            items: list[Any] = []
            try:
                items.extend(itertools.islice(self._inputs, size))
            except BaseException as exc:
                # The user's iterable raised: what came before still runs; the error is
                # raised to the consumer once it reaches this position.
                self.input_error = exc
                if self.sizer.fixed is not None:
                    # As multiprocessing does with a chunksize: the chunk the input failed
                    # in does not run, the error comes at its first position.
                    del items[:]
                self.total = start + len(items)
            else:
                if len(items) < size:
                    self.total = start + len(items)
            if not items:
                self._results.put(_END)
                self._count(0)
                return None
            origin = next(self._origins)
            self._origin_sizes[origin] = len(items)
            self._next_start = start + len(items)
            if self.total is not None:
                self._results.put(_END)
                self._count(0)
            return origin, start, items

    def _count(self, delivered: int) -> None:
        with self._count_lock:
            self._delivered += delivered
            if self.total is not None and self._delivered >= self.total:
                self.computed.set()

    # The backend side ---------------------------------------------------------------
    def deliver(self, piece: Piece) -> None:
        self._results.put(piece)
        self._count(len(piece.values))

    def fail(self, exc: BaseException) -> None:
        self._failure = exc
        self._results.put(_END)
        self.computed.set()

    def cancel(self) -> None:
        self.cancelled = True
        self.computed.set()
        # Wake a feeder blocked on the window so it can see the cancellation.
        self.window.release()

    def unbound(self) -> None:
        self.unbounded = True
        self.window.release()  # wake a feeder waiting for room

    # The consumer side --------------------------------------------------------------
    def _next_piece(self, timeout: float | None) -> Any:
        if self.pump is not None:
            while True:
                try:
                    return self._results.get_nowait()
                except queue.Empty:
                    pass
                if not self.pump():
                    return _END
        try:
            return self._results.get(timeout=timeout)
        except queue.Empty:
            raise WaitExpired from None

    def arrived(self) -> list[Piece]:
        """The pieces delivered and not taken yet, taken now without waiting: what a
        consumer stopped by Ctrl-C can still record before the workers are stopped."""
        pieces: list[Piece] = []
        while True:
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return pieces
            if item is not _END:
                pieces.append(item)

    def pieces(self, ordered: bool, keeps_all: bool = False) -> PieceStream:
        """Finished pieces, in input order or as they come (see :class:`PieceStream`)."""
        return PieceStream(self, ordered, keeps_all)

    def _consumed(self, ordered: bool, next_index: int) -> bool:
        assert self.total is not None
        if ordered:
            return next_index >= self.total
        return self._released_items >= self.total

    def _release(self, piece: Piece, by_origin: dict[int, int]) -> None:
        """Count ``piece`` as taken; a chunk fully taken gives its window permit back.

        ``by_origin`` holds only chunks partly taken, so an endless stream keeps no
        record of the chunks it is done with.
        """
        self._released_items += len(piece.values)
        done = by_origin.pop(piece.origin, 0) + len(piece.values)
        if done >= self._origin_sizes.get(piece.origin, 0):
            self._origin_sizes.pop(piece.origin, None)
            self.window.release()
        else:
            by_origin[piece.origin] = done


class PieceStream:
    """A stream job's finished pieces, in input order or as they come; raises the job's
    failure.

    The window is freed as pieces are consumed, which bounds memory for a lazy
    consumer; a consumer that ``keeps_all`` results anyway (``map``) frees it as
    pieces arrive instead, so one slow task does not stall the tasks after it.
    While :attr:`wait` is set, ``next()`` waits at most that long for a piece and raises
    :class:`WaitExpired` instead; the stream goes on afterwards. Any other exception,
    :meth:`close`, or the stream being dropped early, cancels the job.
    """

    def __init__(self, job: StreamJob, ordered: bool, keeps_all: bool) -> None:
        self.job = job
        self.wait: float | None = None  # longest wait for the next piece (None: forever)
        self._ordered = ordered
        self._keeps_all = keeps_all
        self._held: dict[int, Piece] = {}
        self._by_origin: dict[int, int] = {}
        self._next_index = 0
        self._seen_end = False
        self._open = True

    def __iter__(self) -> PieceStream:
        return self

    def __next__(self) -> Piece:
        if not self._open:
            raise StopIteration
        try:
            return self._step()
        except WaitExpired:
            raise
        except BaseException:
            self._end(cancel=True)  # a no-op when the end was reached already
            raise

    def _step(self) -> Piece:
        job = self.job
        while True:
            if self._ordered and self._next_index in self._held:
                piece = self._held.pop(self._next_index)
                self._next_index += len(piece.values)
                if not self._keeps_all:
                    job._release(piece, self._by_origin)
                return piece
            if job._failure is not None:
                raise job._failure
            if (
                self._seen_end
                and job.total is not None
                and job._consumed(self._ordered, self._next_index)
            ):
                self._end(cancel=False)
                if job.input_error is not None:
                    raise job.input_error
                raise StopIteration
            item = job._next_piece(self.wait)
            if item is _END:
                self._seen_end = True
                continue
            if self._ordered:
                if self._keeps_all:
                    job._release(item, self._by_origin)
                self._held[item.start] = item
            else:
                job._release(item, self._by_origin)
                return item  # type: ignore[no-any-return]

    def _end(self, *, cancel: bool) -> None:
        if not self._open:
            return
        self._open = False
        if cancel or self.job._failure is not None:
            # Left early (an error raised, the stream dropped): stop the job, also when
            # its input was read already: nobody takes its other results.
            self.job.cancel()

    def close(self) -> None:
        """Stop early: the job is cancelled unless every piece was taken."""
        self._end(cancel=True)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def input_failure_piece(
    job: Job, origin: int, start: int, pos: int, item: Any, exc: Exception
) -> Piece:
    """A one-task piece for an input that cannot be pickled (it never reaches a worker)."""
    error = argument_error(start + pos, item, exc, job.style == CallStyle.STAR)
    return Piece(start + pos, [None], {0: error}, origin, [item])


def feed(job: StreamJob, run_chunk: Callable[[int, int, list[Any]], None]) -> None:
    """Pull chunks from ``job`` while its window allows and pass each to ``run_chunk``.

    The body of a feeder thread: it blocks on the window, not on the backend.
    """
    try:
        while True:
            if not job.unbounded:
                job.window.acquire()
            if job.cancelled:
                return
            got = job.next_chunk()
            if got is None:
                return
            run_chunk(*got)
            if job.total is not None:
                return  # that was the last chunk: waiting for room again could be forever
    except BaseException as exc:  # never leave the consumer waiting for a dead feeder
        job.fail(exc)


def start_feeder(
    job: StreamJob, run_chunk: Callable[[int, int, list[Any]], None]
) -> threading.Thread:
    """Run :func:`feed` in a daemon thread of its own."""
    thread = threading.Thread(
        target=feed, args=(job, run_chunk), name="corepool-feeder", daemon=True
    )
    thread.start()
    return thread
