"""The rules of a task, as one table run on every backend.

Each row is a rule of ``corepool/_tasks/rules.py`` (or of the task model around it);
each column a backend. A cell is either run, or states why the rule cannot apply to
that backend; :func:`test_every_cell_not_applicable_is_what_the_backend_says` checks
those statements against the backends' capability flags, so that a cell cannot be
declared not applicable to get a failing case out of the way.

The rules were written five times before ``_tasks/`` and disagreed (issue 13): the
thread backend did not retry a task past its timeout, the thread and serial backends
retried a SerializationError, and they found shared handles only four levels deep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import corepool
import rule_tasks
import tasks
from conftest import CLUSTER_BACKENDS, LOCAL_BACKENDS
from corepool.backends import backend_class

pytestmark = pytest.mark.timeout(120)

BACKENDS = LOCAL_BACKENDS + CLUSTER_BACKENDS
NO_CRASH = "a task that ends its process ends the caller's own: there is no worker to lose"
NOTHING_PICKLED = "results are handed over as they are: nothing is pickled"

#: Rule -> the backends it cannot apply to, and why. Every other backend runs it.
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "timeout_is_retried": {},
    "crash_is_split_and_retried": {"thread": NO_CRASH, "serial": NO_CRASH},
    "serialization_error_is_not_retried": {},
    "unpicklable_result_is_not_retried": {"thread": NOTHING_PICKLED, "serial": NOTHING_PICKLED},
    "shared_handle_at_any_depth": {},
    "on_error": {},
}


def _pool(backend: str, **options: Any) -> corepool.Pool:
    if backend == "dask" and options.pop("own_cluster", False):
        # The session's cluster re-runs a chunk whose worker died (the scheduler's
        # allowed-failures) before corepool sees the crash; a cluster the pool starts
        # itself hands every crash to corepool, as the other backends do.
        import dask

        with dask.config.set({"scheduler-address": None}):
            return corepool.Pool(2, backend="dask", **options)
    options.pop("own_cluster", None)
    return corepool.Pool(2, backend=backend, **options)


def timeout_is_retried(backend: str, tmp: Path) -> None:
    """A task past its timeout is retried while ``retries`` allow, and fails with
    TaskTimeout once they are spent."""
    path = str(tmp / "slow")
    with _pool(backend, task_timeout=0.5, retries=1) as pool:
        assert pool.apply(rule_tasks.slow_first, (path, 2.0)) == 2
    assert rule_tasks.attempts(path) == 2
    path = str(tmp / "slow-once")
    with _pool(backend, task_timeout=0.5) as pool, pytest.raises(corepool.TaskTimeout):
        pool.apply(rule_tasks.slow_first, (path, 2.0))


def crash_is_split_and_retried(backend: str, tmp: Path) -> None:
    """A chunk whose worker died is split: only the task that kills its worker fails
    (WorkerCrashed), and its neighbours still run. A retry is charged to that task
    alone: split once, then retried once, it succeeds on its third run."""
    with _pool(backend, own_cluster=True) as pool:
        results = pool.imap(tasks.crash_on, range(4), chunksize=4)  # input 3 crashes
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(corepool.WorkerCrashed, match="task 3"):
            next(results)
    path = str(tmp / "crash")
    args = [(path, x, 2) for x in range(4)]
    with _pool(backend, own_cluster=True, retries=1) as pool:
        assert pool.starmap(rule_tasks.crash_twice, args, chunksize=4) == [0, 1, 2, 3]
    assert rule_tasks.attempts(path) == 3


def serialization_error_is_not_retried(backend: str, tmp: Path) -> None:
    """A SerializationError fails the same way every time: never retried."""
    path = str(tmp / "serialization")
    with _pool(backend, retries=2) as pool, pytest.raises(corepool.SerializationError):
        pool.apply(rule_tasks.raise_serialization_error, (path,))
    assert rule_tasks.attempts(path) == 1


def unpicklable_result_is_not_retried(backend: str, tmp: Path) -> None:
    path = str(tmp / "unpicklable")
    with _pool(backend, retries=2) as pool, pytest.raises(corepool.SerializationError):
        pool.apply(rule_tasks.unpicklable_result, (path,))
    assert rule_tasks.attempts(path) == 1


def shared_handle_at_any_depth(backend: str, tmp: Path) -> None:
    """A task gets the object of a ``corepool.shared`` handle wherever it is in its
    input: six lists deep, inside an object's attribute."""
    value = ("a table", *range(100))
    handle = corepool.shared(value)
    deep = rule_tasks.Box([[[[[[handle]]]]]])
    with _pool(backend) as pool:
        assert pool.map(rule_tasks.dig, [deep, deep]) == [value, value]
        assert pool.apply(rule_tasks.dig, (deep,)) == value
    handle.release()


def on_error(backend: str, tmp: Path) -> None:
    """``on_error``: raise the first failure, return failures in place, or skip them."""
    options: dict[str, Any] = {"workers": 2, "backend": backend, "chunksize": 2}
    with pytest.raises(ValueError, match="bad input 3"):
        corepool.map(tasks.fail_on, range(6), **options)
    got = corepool.map(tasks.fail_on, range(6), on_error="return", **options)
    assert got[:3] == [0, 1, 2] and got[4:] == [4, 5]
    assert isinstance(got[3], ValueError)
    assert corepool.map(tasks.fail_on, range(6), on_error="skip", **options) == [0, 1, 2, 4, 5]
    skipped = corepool.imap(tasks.fail_on, range(6), on_error="skip", **options)
    assert list(skipped) == [0, 1, 2, 4, 5]


RULES: dict[str, Callable[[str, Path], None]] = {
    rule.__name__: rule
    for rule in (
        timeout_is_retried,
        crash_is_split_and_retried,
        serialization_error_is_not_retried,
        unpicklable_result_is_not_retried,
        shared_handle_at_any_depth,
        on_error,
    )
}


def _cells() -> list[Any]:
    cells = []
    for rule in RULES:
        for backend in BACKENDS:
            if backend not in NOT_APPLICABLE[rule]:
                cells.append(pytest.param(rule, backend, id=f"{rule}-{backend}"))
    return cells


@pytest.fixture
def on_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The backend of the cell, set up as the ``backend`` fixture does (the session's
    Dask cluster or Ray)."""
    name: str = request.param
    if name == "dask":
        import dask

        address = request.getfixturevalue("dask_cluster").address
        with dask.config.set({"scheduler-address": address}):
            yield name
        return
    if name == "ray":
        request.getfixturevalue("ray_session")
    yield name


@pytest.mark.parametrize(("rule", "on_backend"), _cells(), indirect=["on_backend"])
def test_rule(rule: str, on_backend: str, tmp_path: Path) -> None:
    RULES[rule](on_backend, tmp_path)


def test_the_table_covers_every_rule_and_backend() -> None:
    assert set(NOT_APPLICABLE) == set(RULES)
    for cells in NOT_APPLICABLE.values():
        assert set(cells) <= set(BACKENDS)


def test_every_cell_not_applicable_is_what_the_backend_says() -> None:
    for backend in BACKENDS:
        flags = backend_class(backend)
        crash_na = backend in NOT_APPLICABLE["crash_is_split_and_retried"]
        assert crash_na == (not flags.survives_crashes), backend
        pickle_na = backend in NOT_APPLICABLE["unpicklable_result_is_not_retried"]
        assert pickle_na == (not flags.pickles), backend
