"""Every way a task can fail, at every stage of its life, on every API: one table.

Stages: pickling the call in the parent, unpickling it in the worker, running,
pickling the result in the worker, unpickling it in the parent. Kinds: an exception,
``os._exit``, a segfault, SIGKILL, a hang. In the parent only an exception is
possible (the others would take the test process down: that is the caller's own code).
Every case checks the failing task's error, that its neighbours succeed, that the
error comes soon after the event, and that the pool serves the next task.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import corepool
import tasks

WORKER_STAGES = ["unpickle-call", "run", "pickle-result"]
PARENT_STAGES = ["pickle-call", "unpickle-result"]
KINDS = ["exception", "exit", "segfault", "sigkill", "hang"]
TIMEOUT = 0.5


def expected(stage: str, kind: str) -> type[BaseException]:
    if kind == "hang":
        return corepool.TaskTimeout
    if kind != "exception":
        return corepool.WorkerCrashed
    if stage == "run":
        return ValueError
    return corepool.SerializationError


CASES = [(s, k) for s in WORKER_STAGES for k in KINDS] + [(s, "exception") for s in PARENT_STAGES]


def trigger(stage: str, kind: str) -> Any:
    if stage == "pickle-call":
        return tasks.FailsWhenPickled(kind)
    if stage == "unpickle-call":
        return tasks.FailsWhenUnpickled(kind)
    return "boom"


Runner = Callable[[Any, list[Any]], list[Any]]


def run_apply_async(pool: corepool.Pool, fn: Any, inputs: list[Any]) -> list[Any]:
    handles = [pool.apply_async(fn, (x,)) for x in inputs]
    out: list[Any] = []
    for handle in handles:
        try:
            out.append(handle.get(timeout=30))
        except Exception as exc:
            out.append(exc)
    return out


@contextlib.contextmanager
def serving(api: str) -> Iterator[tuple[Runner, Callable[[], Any]]]:
    """How ``api`` runs the case's tasks, and the next task on the pool that ran them."""
    if api in ("map", "imap"):
        core = corepool.api._default_pool(2, None)  # what corepool.map(workers=2) uses

        def run(fn: Any, inputs: list[Any]) -> list[Any]:
            options: dict[str, Any] = {"workers": 2, "timeout": TIMEOUT, "on_error": "return"}
            if api == "map":
                return corepool.map(fn, inputs, **options)
            return list(corepool.imap(fn, inputs, **options))

        def next_task() -> Any:
            assert corepool.api._default_pool(2, None) is core, "the default pool changed"
            return corepool.map(tasks.square, [6], workers=2)[0]

        try:
            yield run, next_task
        finally:
            corepool.api.shutdown_default_pool()
    elif api == "apply_async":
        with corepool.Pool(2, task_timeout=TIMEOUT) as pool:
            yield functools.partial(run_apply_async, pool), lambda: pool.apply(tasks.square, (6,))
    else:
        with corepool.Executor(2, task_timeout=TIMEOUT) as ex:

            def submit(fn: Any, inputs: list[Any]) -> list[Any]:
                futures = [ex.submit(fn, x) for x in inputs]
                return [f.exception(timeout=30) or f.result() for f in futures]

            yield submit, lambda: ex.submit(tasks.square, 6).result(timeout=30)


APIS = ["map", "imap", "apply_async", "submit"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize(("stage", "kind"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_crash_case(api: str, stage: str, kind: str) -> None:
    fn = functools.partial(tasks.run_case, stage, kind)
    inputs = ["a", "b", trigger(stage, kind), "c", "d"]
    with serving(api) as (run, next_task):
        started = time.monotonic()
        got = run(fn, inputs)
        elapsed = time.monotonic() - started
        assert [got[i] for i in (0, 1, 3, 4)] == ["a", "b", "c", "d"]
        error = got[2]
        assert isinstance(error, expected(stage, kind)), repr(error)
        # The event happens at once (or at the timeout): the error follows within seconds,
        # never after a hang. Generous, for a loaded shared machine.
        assert elapsed < 10, elapsed
        assert next_task() == 36  # on the very pool that saw the failure
