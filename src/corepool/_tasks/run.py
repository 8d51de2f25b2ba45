"""The one loop that runs a chunk of tasks, for every backend.

:func:`run_tasks` is used by the worker processes of the process backend
(``_engine/worker.py``), by the thread and serial backends (``backends/base.py``) and
on Dask and Ray workers (``backends/_remote.py``). What differs between them comes in
as arguments, not as other loops:

- ``capture`` turns a task's exception into what is kept of it (the exception itself
  in this process, a picklable :class:`~corepool.serialize.FailureInfo` elsewhere);
- ``retries`` / ``retry_on`` retry a failed task in place, under :func:`rules.may_retry`
  (the process backend retries in the parent instead, and passes none);
- ``attempt`` wraps each run of a task (a deadline, handles to resolve);
- ``started`` / ``ended`` see each task start and end (the process backend's
  tracked chunks write them where the parent can read them if the worker dies).

Without any of these the chunk runs on the fast path: ``list.extend(map(fn, inputs))``,
a C loop with no per-task Python overhead; an exception leaves the results so far in
the list, so the failing position is known, and the loop resumes after it.

:func:`pack_results` pickles a chunk's results, and when that fails finds the results
that cannot be pickled and fails those tasks alone.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import Any, Protocol, TypeVar

from ..serialize import FailureInfo
from .rules import may_retry
from .styles import CallStyle

__all__ = ["caller", "pack_results", "run_tasks"]

T = TypeVar("T")
Call = Callable[[Any], Any]
# One run of a task: (the call, its input, its position in the chunk) -> its value.
Attempt = Callable[[Call, Any, int], Any]


class Place(Protocol):
    """Where a caller keeps the position of the running task (the one that logs or
    prints now): set task by task, or, on the fast path, read from the iterator."""

    pos: int

    def follow(self, inputs: Iterator[Any], items: Sized) -> None:
        """The chunk runs by consuming ``inputs`` (an iterator over ``items``)."""


def caller(fn: Callable[..., Any], style: int) -> Call:
    """``fn`` as a function of one input, for the call style ``style``."""
    if style == CallStyle.SINGLE:
        return fn
    if style == CallStyle.STAR:
        return lambda args: fn(*args)
    return lambda call: fn(*call[0], **call[1])


def _as_is(exc: BaseException) -> BaseException:
    return exc


def run_tasks(
    fn: Callable[..., Any],
    style: int,
    items: Sequence[Any],
    *,
    capture: Callable[[BaseException], Any] = _as_is,
    catch: type[BaseException] | tuple[type[BaseException], ...] = BaseException,
    retries: int = 0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    attempt: Attempt | None = None,
    started: Callable[[int], None] | None = None,
    ended: Callable[[int, Any, Any], bool] | None = None,
    place: Place | None = None,
) -> tuple[list[Any], dict[int, Any], int]:
    """Run ``fn`` on each of ``items``: their values (None where a task failed), the
    failures by position (as ``capture`` made them), and how many runs were retries.

    ``catch``: the exceptions that fail a task; others propagate (the serial backend
    lets Ctrl-C through). ``ended(pos, value, failure)`` returns False when it took the
    task's outcome elsewhere: its place in the values is then None, and no failure.
    ``place`` is kept at the running task (for the records and lines it makes).
    """
    if retries == 0 and attempt is None and started is None and ended is None:
        fast_values, fast_failures = _run_fast(fn, style, items, capture, catch, place)
        return fast_values, fast_failures, 0
    call = caller(fn, style)
    values: list[Any] = []
    failures: dict[int, Any] = {}
    retried = 0
    for pos, item in enumerate(items):
        if place is not None:
            place.pos = pos
        tries = 0
        while True:
            if started is not None:
                started(pos)
            failure = None
            try:
                value = call(item) if attempt is None else attempt(call, item, pos)
            except catch as exc:
                if may_retry(exc, tries, retries, retry_on):
                    tries += 1
                    retried += 1
                    continue
                value = None
                failure = capture(exc)
            break
        if ended is not None and not ended(pos, value, failure):
            value = failure = None
        values.append(value)
        if failure is not None:
            failures[pos] = failure
    return values, failures, retried


def _run_fast(
    fn: Callable[..., Any],
    style: int,
    items: Sequence[Any],
    capture: Callable[[BaseException], Any],
    catch: type[BaseException] | tuple[type[BaseException], ...],
    place: Place | None,
) -> tuple[list[Any], dict[int, Any]]:
    values: list[Any] = []
    failures: dict[int, Any] = {}
    inputs = iter(items)
    if place is not None:
        place.follow(inputs, items)
    while True:
        try:
            if style == CallStyle.SINGLE:
                values.extend(map(fn, inputs))
            elif style == CallStyle.STAR:
                values.extend(itertools.starmap(fn, inputs))
            else:
                values.extend(map(caller(fn, style), inputs))
            return values, failures
        except catch as exc:  # the task's own failure, whatever it is
            failures[len(values)] = capture(exc)
            values.append(None)


def pack_results(
    pack: Callable[[Any], T],
    values: list[Any],
    failures: dict[int, Any],
    frame: Callable[[list[Any], dict[int, Any]], Any],
    unpicklable: Callable[[int, BaseException], Any],
) -> T:
    """``pack(frame(values, failures))``; if that fails, each value that cannot be
    packed is replaced by None and its task fails with ``unpicklable(pos, error)``;
    if it still fails, the failure records keep only their text."""
    try:
        return pack(frame(values, failures))
    except BaseException:  # SystemExit from a __reduce__ fails the tasks, not the worker
        pass
    for pos, value in enumerate(values):
        try:
            pack(value)
        except BaseException as exc:
            values[pos] = None
            failures[pos] = unpicklable(pos, exc)
    try:
        return pack(frame(values, failures))
    except Exception:
        # A failure record itself would not pickle (the exception object did, its
        # contents did not): keep only the text.
        for pos, record in list(failures.items()):
            failures[pos] = _text_only(record)
        return pack(frame(values, failures))


def _text_only(record: Any) -> Any:
    if isinstance(record, FailureInfo):
        return FailureInfo(record.type_name, record.message, record.traceback_text, None)
    if isinstance(record, tuple):
        return tuple(_text_only(part) for part in record)
    return record
