"""Timeouts and worker counts (issue 19, item 2): huge and infinite timeouts work, and
a bad value fails at once, the same way on every face and backend, saying what to fix."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import corepool
import scripts
import tasks

pytestmark = pytest.mark.timeout(120)

LOCAL = ["process", "thread", "serial"]


@pytest.mark.parametrize("timeout", ["1e7", "1e9", "1e300", 'float("inf")'])
def test_a_huge_or_infinite_timeout_works_and_the_next_call_too(
    tmp_path: Path, timeout: str
) -> None:
    """As reported: 1e7 killed the supervisor thread and the next call hung forever."""
    done = scripts.run(
        f"""
        import corepool, tasks

        if __name__ == "__main__":
            for backend in ("process", "thread", "serial"):
                print(corepool.map(tasks.square, range(3), timeout={timeout}, backend=backend,
                                   workers=2))
                print(corepool.map(tasks.square, range(3), backend=backend, workers=2))
            with corepool.Pool(2, task_timeout={timeout}) as pool:
                print(pool.apply(tasks.square, (3,)), pool.map(tasks.square, range(3)))
        """,
        tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:6] == ["[0, 1, 4]"] * 6
    assert done.stdout.split("\n")[6] == "9 [0, 1, 4]"


def test_the_cli_takes_a_huge_timeout(tmp_path: Path) -> None:
    (tmp_path / "work.py").write_text("def square(x):\n    return x * x\n")
    (tmp_path / "in.jsonl").write_text("1\n2\n3\n")
    for value in ("1e9", "1e7", "inf"):
        done = subprocess.run(
            [sys.executable, "-m", "corepool", "run", "work.py:square", "in.jsonl",
             "-o", f"out{value}.jsonl", "--timeout", value, "--no-progress"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"out{value}.jsonl").read_text().count('"ok": true') == 3
    bad = subprocess.run(
        [sys.executable, "-m", "corepool", "run", "work.py:square", "in.jsonl",
         "--timeout", "nan", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert bad.returncode == 2
    assert "--timeout must be a number of seconds, got nan" in bad.stderr
    assert "Traceback" not in bad.stderr


# Every face that takes the option, on every local backend.
def _faces(backend: str) -> dict[str, Callable[..., Any]]:
    def pool(workers: Any = 1, timeout: Any = None) -> Any:
        with corepool.Pool(workers, task_timeout=timeout, backend=backend) as p:
            return p.map(tasks.square, range(2))

    def pool_call(timeout: Any) -> Any:
        with corepool.Pool(1, backend=backend) as p:
            return p.apply_async(tasks.square, (2,), timeout=timeout).get(30)

    def executor(workers: Any = 1, timeout: Any = None) -> Any:
        with corepool.Executor(workers, task_timeout=timeout, backend=backend) as ex:
            return list(ex.map(tasks.square, range(2)))

    def call(name: str) -> Callable[..., Any]:
        fn = getattr(corepool, name)
        return lambda workers=1, timeout=None: list(
            fn(tasks.square if name != "starmap" else pow, [(1, 2)] if name == "starmap"
               else range(2), workers=workers, timeout=timeout, backend=backend)
        )

    return {"map": call("map"), "imap": call("imap"), "starmap": call("starmap"),
            "Pool": pool, "Executor": executor, "apply_async": pool_call}


BAD_VALUES = [
    ("timeout", math.nan, ValueError, "timeout must be a number of seconds, got nan"),
    ("timeout", "abc", TypeError,
     "timeout must be a number of seconds (an int or a float) or None, got 'abc' (str)"),
    ("timeout", -1, ValueError, "timeout must be more than 0 seconds, got -1"),
    ("timeout", 0, ValueError, "timeout must be more than 0 seconds, got 0"),
    ("timeout", True, TypeError, "got True (bool)"),
    ("workers", 2.5, TypeError,
     "must be a whole number of workers (an int) or None, got 2.5 (float)"),
    ("workers", True, TypeError, "got True (bool)"),
    ("workers", "2", TypeError, "got '2' (str)"),
    ("workers", 0, ValueError, "at least 1, got 0"),
    ("workers", -3, ValueError, "at least 1, got -3"),
]


@pytest.mark.parametrize("backend", LOCAL)
@pytest.mark.parametrize(("option", "value", "error", "words"), BAD_VALUES)
def test_a_bad_value_is_a_typed_error_that_says_what_to_fix(
    backend: str, option: str, value: Any, error: type[Exception], words: str
) -> None:
    for face, run in _faces(backend).items():
        if face == "apply_async" and option == "workers":
            continue
        with pytest.raises(error) as caught:
            run(**{option: value})
        if face in ("Pool", "Executor") and error is ValueError and option == "workers":
            continue  # Pool(0) and Executor(0) keep the stdlib's own message
        assert words in str(caught.value), face


def test_numpy_style_integers_are_worker_counts() -> None:
    class Count(int):
        pass

    assert corepool.map(tasks.square, range(3), workers=Count(2), backend="thread") == [0, 1, 4]


def test_far_more_processes_than_cpus_warns_before_starting_any() -> None:
    too_many = 4 * corepool.cpu_count() + 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match=f"{too_many} worker processes on"):
            corepool.Pool(too_many)
        with pytest.raises(RuntimeWarning, match="backend='thread' for I/O-bound"):
            corepool.map(tasks.square, range(2), workers=10000)
        # Threads are cheap: many of them are a normal way to wait on I/O.
        assert corepool.map(tasks.square, range(2), workers=too_many, backend="thread") == [0, 1]


def test_the_warning_points_at_the_users_line(tmp_path: Path) -> None:
    done = scripts.run(
        """
        import warnings
        import corepool

        if __name__ == "__main__":
            too_many = 4 * corepool.cpu_count() + 1
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                corepool.map(abs, [1], workers=too_many)
                corepool.Executor(too_many).shutdown()
            for warning in seen:
                print(warning.filename, warning.lineno)
        """,
        tmp_path,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    program = str(tmp_path / "program.py")
    assert done.stdout.splitlines() == [f"{program} 9", f"{program} 10"]
