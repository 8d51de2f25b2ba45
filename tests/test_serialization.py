"""Code and data crossing into worker processes: what works, and clear errors for what cannot."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import corepool
import tasks

pytestmark = pytest.mark.timeout(60)

MAIN_PROGRAM = textwrap.dedent(
    """
    import corepool

    class Point:
        def __init__(self, x):
            self.x = x

    def triple(x):
        return 3 * x

    def moved(p):
        return Point(p.x + 1)

    if __name__ == "__main__":
        factor = 5
        print(corepool.map(triple, range(4), workers=2))
        print(corepool.map(lambda x: x * factor, range(4), workers=2))
        print([p.x for p in corepool.map(moved, [Point(1), Point(2)], workers=2)])
        with corepool.Pool(2) as pool:
            print(pool.map(lambda x: -x, [1, 2]))
    """
)
EXPECTED = "[0, 3, 6, 9]\n[0, 5, 10, 15]\n[2, 3]\n[-1, -2]\n"


def _run(args: list[str], stdin: str | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_functions_and_classes_from_a_script_main(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(MAIN_PROGRAM)
    assert _run([str(script)]) == EXPECTED


def test_functions_from_python_dash_c() -> None:
    assert _run(["-c", MAIN_PROGRAM]) == EXPECTED


def test_functions_typed_into_an_interactive_session() -> None:
    session = textwrap.dedent(
        """
        import corepool
        def double(x):
            return 2 * x

        print(corepool.map(double, range(3), workers=2))
        print(corepool.map(lambda x: x + 1, range(3), workers=2))
        """
    )
    out = _run(["-i", "-q"], stdin=session)
    assert "[0, 2, 4]" in out and "[1, 2, 3]" in out


class HoldsALock:
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def work(self, x: int) -> int:
        return x


def test_unpicklable_function_fails_before_any_work() -> None:
    holder = HoldsALock()
    with pytest.raises(corepool.SerializationError, match=r"HoldsALock\.work cannot be pickled"):
        corepool.map(holder.work, range(3), workers=2)
    with corepool.Pool(2) as pool, pytest.raises(TypeError):  # also a TypeError
        pool.map(holder.work, range(3))


def test_unpicklable_argument_fails_only_its_task() -> None:
    got = corepool.map(tasks.identity, [1, threading.Lock(), 3], workers=2, on_error="return")
    assert got[0] == 1 and got[2] == 3
    assert isinstance(got[1], corepool.SerializationError)
    assert "input of task 1" in str(got[1]) and "lock" in str(got[1])


def test_unpicklable_argument_position_is_named() -> None:
    got = corepool.starmap(tasks.add, [(1, 2), (1, threading.Lock())], workers=2,
                           on_error="return")
    assert got[0] == 3
    assert "argument 1 of task 1" in str(got[1])


def test_unpicklable_result_fails_only_its_task() -> None:
    got = corepool.map(tasks.return_unpicklable, range(5), workers=2, on_error="return")
    assert [got[i] for i in (0, 1, 3, 4)] == [0, 1, 3, 4]
    assert isinstance(got[2], corepool.SerializationError)
    assert "result of task 2" in str(got[2])


def test_submit_with_unpicklable_argument_fails_that_future() -> None:
    with corepool.Executor(2) as ex:
        bad = ex.submit(tasks.identity, threading.Lock())
        good = ex.submit(tasks.identity, 5)
        with pytest.raises(corepool.SerializationError):
            bad.result(timeout=30)
        assert good.result(timeout=30) == 5


def test_exception_that_cannot_be_recreated_becomes_task_error() -> None:
    with pytest.raises(corepool.TaskError) as info:
        corepool.map(tasks.raise_needs_two_args, [1], workers=2)
    error = info.value
    assert error.type_name.endswith("NeedsTwoArgs")
    assert "1 and 2" in error.message
    assert "raise_needs_two_args" in error.traceback_text


def test_system_exit_in_a_task_is_a_task_error_not_an_exit() -> None:
    with corepool.Pool(2) as pool:
        with pytest.raises(corepool.TaskError, match="SystemExit"):
            pool.apply(tasks.exit_task, (1,))
        assert pool.apply(tasks.square, (3,)) == 9


def test_errors_pickle_round_trip() -> None:
    import pickle

    for error in [
        corepool.TaskError("m", "T", "tb"),
        corepool.TaskTimeout("late", 1.5),
        corepool.WorkerCrashed("died", -9, "signal SIGKILL"),
        corepool.SerializationError("x"),
        corepool.BrokenPool("y"),
        corepool.RemoteTraceback("tb"),
    ]:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and copy.args == error.args and str(copy) == str(error)
        assert vars(copy) == vars(error)
    assert corepool.TaskTimeout("late", 2.0).timeout == 2.0
    assert corepool.WorkerCrashed("died", -11, "signal SIGSEGV").exitcode == -11
