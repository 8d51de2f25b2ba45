"""What runs on a cluster worker for the ``dask`` and ``ray`` backends.

A chunk reaches a worker as three things: a job *token*, the job's *spec* (function,
call style, retries, retry filter, timeout; pickled once per job in the caller and
unpickled once per job on each worker) and the pickled inputs. :func:`run_chunk` runs
the tasks one after another with the same per-task rules as the process backend, and
answers with one pickled blob::

    (OK, values, failures, busy_seconds, worker, retried, kept)
                                   failures: {position: FailureInfo}; worker: "host:pid";
                                   retried: failed attempts that were run again;
                                   kept: what the tasks logged and printed (_capture.py)
    (UNREADABLE, what, FailureInfo)                the spec or the inputs did not unpickle

The tasks run in the loop every backend shares (``_tasks/run.py``). Per-task retries
happen here, inside the chunk, so a task that raises is retried alone (under
``_tasks/rules.py``: the types of ``retry_on``, a timeout included, never a
SerializationError) without re-running its neighbours;
a task that kills its worker is retried by the backend in the caller, which resubmits
it on its own. A task with a timeout runs in a helper thread that the chunk waits for
at most ``timeout`` seconds; what happens to an overrunning thread is up to the
backend (Dask leaves it running, Ray cancels the whole worker).

Everything here must be importable on the workers: corepool is installed there too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .._tasks.job import describe_item
from .._tasks.run import pack_results, run_tasks
from ..errors import SerializationError, TaskTimeout
from ..forwarding import Place
from ..serialize import FailureInfo, dumps_data, loads
from . import _capture, _inline

__all__ = [
    "OK",
    "OVERRUN_PREFIX",
    "UNREADABLE",
    "Spec",
    "overrun_threads",
    "run_chunk",
    "run_chunk_announced",
    "shared_value",
]

OK = "ok"
UNREADABLE = "unreadable"
#: Name prefix of a helper thread whose task ran past its timeout and still runs.
OVERRUN_PREFIX = "corepool-overrun"
_TASK_PREFIX = "corepool-task"


@dataclass(frozen=True)
class Spec:
    """Everything a worker needs to know about a job besides its inputs."""

    fn: Callable[..., Any]
    style: int
    retries: int
    retry_on: tuple[type[BaseException], ...]
    timeout: float | None
    overrun_note: str
    forward: _capture.CallerForward | None = None  # the caller's logging levels and output


# Specs unpickled on this worker, by job token; a few jobs at a time are live.
_specs: OrderedDict[str, Spec] = OrderedDict()
_specs_lock = threading.Lock()
_SPECS_KEPT = 16


def _spec(token: str, blob: bytes) -> Spec:
    with _specs_lock:
        spec = _specs.get(token)
        if spec is not None:
            _specs.move_to_end(token)
            return spec
    spec = loads(blob)
    assert isinstance(spec, Spec)
    with _specs_lock:
        _specs[token] = spec
        while len(_specs) > _SPECS_KEPT:
            _specs.popitem(last=False)
    return spec


_local = threading.local()


def shared_value(key: str) -> Any:
    """What a :func:`corepool.shared` handle unpickles to on a cluster worker: the object
    the engine placed there (Dask scatter, Ray object store), passed with the chunk."""
    values: dict[str, Any] | None = getattr(_local, "shared", None)
    if values is None or key not in values:
        raise RuntimeError(f"the shared object {key} did not come with this task")
    return values[key]


def run_here(blob: bytes) -> Any:
    """``fn(*args, **kwargs)`` from a pickled triple, on this worker (``run_on_workers``)."""
    fn, args, kwargs = loads(blob)
    return fn(*args, **kwargs)


def run_chunk(
    token: str,
    start: int,
    spec_blob: bytes,
    items_blob: bytes,
    shared_keys: tuple[str, ...] = (),
    *shared_values: Any,
) -> bytes:
    """Run one chunk of a job on this worker; the pickled answer (see the module doc).

    ``shared_values`` are the objects of the ``corepool.shared`` handles the spec and the
    inputs refer to (by ``shared_keys``), already resolved by the engine.
    """
    _local.shared = dict(zip(shared_keys, shared_values, strict=True))
    try:
        try:
            spec = _spec(token, spec_blob)
        except BaseException as exc:
            return dumps_data((UNREADABLE, "function", FailureInfo.capture(exc)))
        try:
            items: list[Any] = loads(items_blob)
        except BaseException as exc:
            return dumps_data((UNREADABLE, "inputs", FailureInfo.capture(exc)))
    finally:
        _local.shared = None
    began = time.perf_counter()
    attempt = None
    if spec.timeout is not None:
        attempt = functools.partial(_with_deadline, spec=spec, start=start)
    with _capture.capturing(spec.forward) as capture, _in_caller(spec, start, items) as here:
        values, failures, retried = run_tasks(
            spec.fn,
            spec.style,
            items,
            capture=FailureInfo.capture,
            retries=spec.retries,
            retry_on=spec.retry_on,
            attempt=attempt,
            place=here if capture is None else capture.place,
        )
        kept = [] if capture is None else capture.taken()
    busy = time.perf_counter() - began
    return _pack(start, values, failures, busy, retried, kept)


@contextlib.contextmanager
def _in_caller(spec: Spec, start: int, items: list[Any]) -> Iterator[Place | None]:
    """On a worker that is the calling process itself (a Dask cluster of threads), the
    chunk's tasks run as thread-backend tasks do: their records get the task's index
    and input, their lines are written whole. Elsewhere nothing (the capture does it)."""
    if spec.forward is None or not _capture.in_caller(spec.forward):
        yield None
        return
    from ._inline import inline_task

    with inline_task(start, items, functools.partial(describe_item, spec.style)) as task:
        yield task.place


def run_chunk_announced(*args: Any) -> Iterator[bytes]:
    """:func:`run_chunk` as a generator that first yields ``b""``: the chunk started.

    For an engine that streams a generator's items (Ray), this tells the caller when
    to start a task's deadline: when it runs, not when it was queued.
    """
    yield b""
    yield run_chunk(*args)


def _with_deadline(
    call: Callable[[Any], Any], item: Any, pos: int, *, spec: Spec, start: int
) -> Any:
    """``call(item)`` in a helper thread, given up after ``spec.timeout`` seconds."""
    assert spec.timeout is not None
    index = start + pos
    outcome: list[tuple[bool, Any]] = []
    finished = threading.Event()
    capture = _capture.current()
    here = _inline.current()

    def target() -> None:
        _capture.adopt(capture)
        _inline.adopt(here)
        try:
            outcome.append((True, call(item)))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            finished.set()

    thread = threading.Thread(target=target, name=f"{_TASK_PREFIX}-{index}", daemon=True)
    thread.start()
    if not finished.wait(spec.timeout):
        thread.name = f"{OVERRUN_PREFIX}-{index}"
        raise TaskTimeout(
            f"task {index} ran longer than its {spec.timeout:g} s timeout; {spec.overrun_note}",
            spec.timeout,
        )
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def _pack(
    start: int,
    values: list[Any],
    failures: dict[int, Any],
    busy: float,
    retried: int,
    kept: list[Any],
) -> bytes:
    def unpicklable(pos: int, exc: BaseException) -> FailureInfo:
        return FailureInfo.capture(
            SerializationError(
                f"the result of task {start + pos} cannot be pickled: {type(exc).__name__}: {exc}"
            )
        )

    return pack_results(
        dumps_data,
        values,
        failures,
        lambda vals, fails: (OK, vals, fails, busy, _worker_name(), retried, kept),
        unpicklable,
    )


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def overrun_threads() -> int:
    """Threads in this process still running a task that ran past its timeout."""
    return sum(1 for t in threading.enumerate() if t.name.startswith(OVERRUN_PREFIX))
