"""Single calls (``apply_async``, ``submit``) coalesced into one frame per worker turn.

A call is queued in the parent as a chunk of one, unpickled, in the calls' lane. When
a worker is free for it, :func:`gather` takes it together with the calls queued right
behind it that share its function and options (up to the function's measured chunk
size, a fair share of what waits, and the worker's ``max_tasks_per_child`` budget) and
makes them one chunk of a :class:`CallBatch`: one pickling of the arguments, one frame,
one ``DONE`` with every result. While workers keep up, each call goes alone, at once;
when calls come faster than one round trip, they travel together.

Every guarantee of a call holds per call, because a batch is a chunk like a ``map``'s:
a call cancelled before its batch was formed never runs (the batch is formed as it
goes to a worker, and each call is claimed then); a timeout stops the one call that
overran, the calls before it keep their results, the calls after it go again; a crash
puts each call of the batch back on its own, so only the call that crashes the worker
again fails (calls of that batch that had finished but whose results never came back
run again); retries count per call.
"""

from __future__ import annotations

import math
import pickle
import types
import weakref
from collections.abc import Callable
from concurrent.futures import InvalidStateError
from typing import Any

from .._tasks.job import CallJob, Job, Piece
from .._tasks.styles import CallStyle
from ..serialize import PROTOCOL, argument_error, dumps_code, find_unpicklable
from ..sharedmem import code_with_segments, pack
from .lanes import CALLS_LANE, Lanes
from .model import Chunk

__all__ = ["CallBatch", "PendingCalls", "function_bytes", "gather", "queue_calls"]

# Functions pickled by reference (module and name: the same bytes every time), by
# function; a function pickled by value (a lambda, a closure, ``python -c``) is not
# kept, as its bytes hold the values its globals had at the time.
_by_reference: weakref.WeakKeyDictionary[Callable[..., Any], bytes] = (
    weakref.WeakKeyDictionary()
)


_last: tuple[weakref.ref[Callable[..., Any]], bytes] | None = None


def _remember(fn: Callable[..., Any], data: bytes) -> None:
    global _last
    _last = (weakref.ref(fn), data)


def function_bytes(
    fn: Callable[..., Any], name: Callable[[Callable[..., Any]], str]
) -> tuple[bytes, list[Any]]:
    """``fn`` pickled for the workers, and the segments of shared handles inside it
    (see ``sharedmem.code_with_segments``); computed once per function sent by
    reference (which holds no handle)."""
    cacheable = type(fn) is types.FunctionType
    if cacheable:
        last = _last
        if last is not None and last[0]() is fn:  # (the common case: the same again)
            return last[1], []
        known = _by_reference.get(fn)
        if known is not None:
            _remember(fn, known)
            return known, []
    data, segments = code_with_segments(lambda: dumps_code(fn, name(fn)))
    if cacheable and not segments:
        try:
            if data == pickle.dumps(fn, protocol=PROTOCOL):  # by reference, not by value
                _by_reference[fn] = data
                _remember(fn, data)
        except Exception:
            pass
    return data, segments


class CallBatch(Job):
    """Several calls of one function with the same options, run as one chunk.

    Task ``i`` of the batch is ``calls[i]``; its outcome goes to that call's Future as
    soon as the call ends (``answers_each``): a quick call is never held back by a slow
    one it shares a batch with.
    """

    answers_each = True

    def __init__(self, calls: list[CallJob]) -> None:
        first = calls[0]
        super().__init__(
            first.fn,
            CallStyle.CALL,
            timeout=first.timeout,
            retries=first.retries,
            retry_on=first.retry_on,
            sizer=first.sizer,
        )
        self.calls = calls
        self.fn_bytes = first.fn_bytes
        self.fn_segments = first.fn_segments

    def claim(self) -> bool:
        # Each call was claimed (set running) as the batch was formed.
        return not self.cancelled

    def deliver(self, piece: Piece) -> None:
        calls = self.calls
        failures = piece.failures
        for pos, value in enumerate(piece.values):
            call = calls[piece.start + pos]
            if call.computed.is_set():
                continue  # answered already, as it ended (the chunk repeats it)
            if failures and pos in failures:
                inputs = None if piece.inputs is None else [piece.inputs[pos]]
                call.deliver(Piece(0, [None], {0: failures[pos]}, 0, inputs))
                continue
            call.computed.set()
            try:
                call.future.set_result(value)
            except InvalidStateError:
                pass  # settled already (the pool was stopped meanwhile)
            finished = getattr(call, "finished", None)  # the pool's bookkeeping, if any
            if finished is not None:
                call.finished = None  # type: ignore[attr-defined]
                finished(call)

    def fail(self, exc: BaseException) -> None:
        self.computed.set()
        for call in self.calls:
            call.fail(exc)

    def cancel(self) -> None:
        super().cancel()
        for call in self.calls:
            call.cancel()


def _same(a: Job, b: Job) -> bool:
    """Whether two calls may share a batch: one function, one set of options."""
    return (
        type(a) is type(b)
        and a.sizer is b.sizer
        and a.fn_bytes == b.fn_bytes  # the very same function goes to the worker
        and a.timeout == b.timeout
        and a.retries == b.retries
        and a.retry_on == b.retry_on
        and getattr(a, "face", None) == getattr(b, "face", None)
    )


def _claim(job: Job) -> bool:
    """``CallJob.claim`` for a call that never went to a worker (one lock, not three)."""
    if not isinstance(job, CallJob):
        return job.claim()
    try:
        if job.future.set_running_or_notify_cancel():
            return True
    except RuntimeError:  # notified already
        pass
    return job.claim()  # cancelled: the job's own claim says so (and lets it go)


class PendingCalls(Job):
    """Calls submitted one after another with one function and one set of options,
    queued as one chunk (one entry in the calls' lane, whatever their number) until
    workers take them; unpickled, unclaimed."""

    def __init__(self, calls: list[CallJob], items: list[Any]) -> None:
        super().__init__(calls[0].fn, CallStyle.CALL)
        self.calls = calls
        self.items = items

    def fail(self, exc: BaseException) -> None:
        self.computed.set()
        for call in self.calls:
            call.fail(exc)

    def take(self, wanted: int, calls: list[CallJob], items: list[Any]) -> Chunk | None:
        """Claim calls from the front into ``calls`` / ``items`` until ``wanted`` were
        (cancelled ones are dropped); the calls left, as a chunk, or None."""
        taken = 0
        pos = 0
        own_calls, own_items = self.calls, self.items
        while pos < len(own_calls) and taken < wanted:
            call = own_calls[pos]
            if _claim(call):  # a call cancelled while queued is dropped here
                calls.append(call)
                items.append(own_items[pos])
                taken += 1
            pos += 1
        if pos == len(own_calls):
            return None
        rest = PendingCalls(own_calls[pos:], own_items[pos:])
        return Chunk(rest, 0, 0, len(rest.calls), None, items=rest.items)


def queue_calls(submitted: list[tuple[CallJob, Any]]) -> list[Chunk]:
    """Calls as they were submitted, as chunks of :class:`PendingCalls`: one per run of
    calls that may share a batch."""
    chunks: list[Chunk] = []
    calls: list[CallJob] = []
    items: list[Any] = []
    for call, item in submitted:
        if calls and not _same(calls[0], call):
            chunks.append(Chunk(PendingCalls(calls, items), 0, 0, len(calls), None, items=items))
            calls, items = [], []
        calls.append(call)
        items.append(item)
    if calls:
        chunks.append(Chunk(PendingCalls(calls, items), 0, 0, len(calls), None, items=items))
    return chunks


def gather(
    first: Chunk,
    ready: Lanes,
    pickle_items: Callable[[list[Any]], Any],
    workers: int,
    budget: int | None,
    size_of: Callable[[Job], int],
) -> Chunk | None:
    """Calls from the front of the calls' lane (``first`` was just taken from it) that
    may share a batch, claimed and pickled as one chunk; None if none of them can be
    sent (cancelled, or their arguments do not pickle).

    Only calls never sent are gathered (queued as :class:`PendingCalls`): a call put
    back after a failure goes alone, with its attempts counted, so a crash is pinned
    on it.
    """
    job = first.job
    if first.payload is not None:
        # Sent before (a retry, or a call of a batch that failed, now alone so that it
        # answers for itself): it goes as it is.
        return first
    if not isinstance(job, PendingCalls):  # a lone call, queued as a plain chunk
        job = PendingCalls([job], list(first.items or ()))  # type: ignore[list-item]
    lead = job.calls[0]
    lane = ready.lane(CALLS_LANE)
    waiting = first.count + sum(chunk.count for chunk in lane)
    limit = min(size_of(lead), math.ceil(waiting / workers))
    if budget is not None:
        limit = min(limit, max(budget, 1))
    calls: list[CallJob] = []
    items: list[Any] = []
    source: PendingCalls = job
    while True:
        rest = source.take(limit - len(calls), calls, items)
        if rest is not None:
            ready.push(rest, front=True)
            break
        lane = ready.lane(CALLS_LANE)
        if len(calls) >= limit or not lane or lane[0].payload is not None:
            break
        following = lane[0].job
        if not isinstance(following, PendingCalls) or not _same(following.calls[0], lead):
            break
        popped = ready.pop(CALLS_LANE)
        assert popped is not None
        source = following
    if not calls:
        return None
    packed = _pack_each(calls, items, pickle_items)
    if packed is None:
        return None
    payload, calls, items = packed
    if len(calls) == 1:
        return Chunk(calls[0], 0, 0, 1, payload, items=items)
    return Chunk(CallBatch(calls), 0, 0, len(calls), payload, items=items)


def _pack_each(
    calls: list[CallJob], items: list[Any], pickle_items: Callable[[list[Any]], Any]
) -> tuple[Any, list[CallJob], list[Any]] | None:
    """Pickle the calls' arguments together; a call whose arguments do not pickle
    fails alone, and the others are pickled without it."""
    try:
        return pickle_items(items), calls, items
    except Exception:
        pass
    bad = find_unpicklable(items, pack)  # (no segment pool: these payloads are dropped)
    kept_calls: list[CallJob] = []
    kept_items: list[Any] = []
    for pos, (call, item) in enumerate(zip(calls, items, strict=True)):
        if pos in bad:
            error = argument_error(0, item[0], bad[pos], star=True)
            call.deliver(Piece(0, [None], {0: error}, 0, [item]))
            continue
        kept_calls.append(call)
        kept_items.append(item)
    if not kept_calls:
        return None
    return pickle_items(kept_items), kept_calls, kept_items
