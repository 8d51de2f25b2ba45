"""Task functions for the tests: module-level, so every backend can import them."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from typing import Any


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def identity(x: Any) -> Any:
    return x


def fail_on(x: int, bad: int = 3) -> int:
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


def fail_every(x: int, every: int = 5) -> int:
    if x % every == 0:
        raise KeyError(x)
    return x


def crash_on(x: int, bad: int = 3) -> int:
    if x == bad:
        os._exit(7)
    return x


def segfault_on(x: int, bad: int = 3) -> int:
    if x == bad:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


def sigkill_on(x: int, bad: int = 3) -> int:
    if x == bad:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def hang_on(x: int, bad: int = 3) -> int:
    if x == bad:
        time.sleep(3600)
    return x


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def pid_of(_: Any = None) -> int:
    return os.getpid()


def thread_name(_: Any = None) -> str:
    return threading.current_thread().name


def flaky(path: str, fails: int) -> str:
    """Fail the first ``fails`` calls (counted in a file), then succeed."""
    with open(path, "a+") as f:
        f.seek(0)
        count = len(f.read())
        f.write("x")
    if count < fails:
        raise RuntimeError(f"attempt {count + 1} fails")
    return f"ok after {count + 1}"


def count_calls(path: str, value: int) -> int:
    """Append one line per call, to count how often each input ran."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


class NeedsTwoArgs(Exception):
    """An exception that cannot be re-created from its args (pickle calls cls(*args))."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


def raise_needs_two_args(x: int) -> int:
    raise NeedsTwoArgs(x, x + 1)


def return_unpicklable(x: int) -> Any:
    if x == 2:
        return threading.Lock()
    return x


def exit_task(x: int) -> int:
    raise SystemExit(3)


class CountsUnpickling:
    """A callable that appends a line to ``path`` each time it is unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        with open(self.path, "a") as f:
            f.write(f"{os.getpid()}\n")

    def __call__(self, x: int) -> int:
        return x + 1


def set_global(value: Any) -> None:
    global WORKER_VALUE
    WORKER_VALUE = value


WORKER_VALUE: Any = None


def get_global(_: Any = None) -> Any:
    return WORKER_VALUE


def failing_initializer() -> None:
    raise RuntimeError("initializer is broken")


def allocate_mb(megabytes: int) -> int:
    """Hold ``megabytes`` of touched memory for the duration of the task."""
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])
    return len(block) // (1024 * 1024)


_KEPT: list[bytearray] = []


def leak_mb(megabytes: int) -> int:
    """Keep ``megabytes`` (touched, so resident) alive in the worker after the task returns."""
    block = bytearray(megabytes * 1024 * 1024)
    block[::4096] = b"x" * len(range(0, len(block), 4096))
    _KEPT.append(block)
    return len(_KEPT)


# The crash matrix: one action, done at one stage of a task's life -----------------------
def act(kind: str) -> None:
    """Fail in the way ``kind`` names: raise, exit, segfault, SIGKILL or hang."""
    if kind == "exception":
        raise ValueError(f"crash case: {kind}")
    if kind == "exit":
        os._exit(13)
    if kind == "segfault":
        ctypes.string_at(0)
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if kind == "hang":
        time.sleep(3600)


def _rebuild_after(kind: str) -> str:
    act(kind)
    return kind


class FailsWhenUnpickled:
    """Pickles fine; unpickling it performs the action (in whoever unpickles it)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_after, (self.kind,))


class FailsWhenPickled:
    """Pickling it performs the action (in whoever pickles it)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:
        act(self.kind)
        return (str, (self.kind,))


def run_case(stage: str, kind: str, x: Any) -> Any:
    """The task of the crash matrix: input ``x`` is the trigger for ``x == 'boom'``."""
    if x != "boom":
        return x
    if stage == "run":
        act(kind)
    if stage == "pickle-result":
        return FailsWhenPickled(kind)
    if stage == "unpickle-result":
        return FailsWhenUnpickled(kind)
    return x


def wait_for_file(args: tuple[int, str]) -> str:
    """Task 0 waits (up to 20 s) until task ``len-1`` has written its file; others write."""
    index, folder = args
    marker = os.path.join(folder, "last-ran")
    if index == 0:
        deadline = time.monotonic() + 20
        while not os.path.exists(marker):
            if time.monotonic() > deadline:
                return "stalled"
            time.sleep(0.01)
        return "saw the last task"
    if index == 199:
        with open(marker, "w") as f:
            f.write("x")
    return "ok"


def sum_of_squares_in_a_pool(n: int) -> int:
    """A task that runs a pool of its own (nested parallelism)."""
    import corepool

    return sum(corepool.map(square, range(n), workers=2))


def sleep_then_touch(path: str, seconds: float) -> float:
    """Sleep, then create ``path``: shows whether a timed-out task went on running."""
    time.sleep(seconds)
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    return seconds


def note_start_then_sleep(path: str, seconds: float) -> int:
    """Append this worker's pid to ``path`` when starting, then sleep; returns the pid."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return os.getpid()


def buffer_kind(array: Any) -> str:
    """What a numpy array's memory is in the worker: ``mmap`` when it came through
    shared memory, ``bytearray``/``bytes`` when it came inline in the pickle."""
    owner = array
    while getattr(owner, "base", None) is not None:
        owner = owner.base
    if isinstance(owner, memoryview):
        owner = owner.obj
    return type(owner).__name__


def blas_threads(_: Any = None) -> int:
    """The most threads any BLAS/OpenMP pool of this process may use."""
    from threadpoolctl import threadpool_info

    return max((pool["num_threads"] for pool in threadpool_info()), default=0)


def wait_for_path(path: str, seconds: float = 20.0) -> str:
    """Wait (up to ``seconds``) until ``path`` exists."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return "stalled"
        time.sleep(0.01)
    return "saw it"


def note_start_then_sleep_args(args: tuple[str, float]) -> int:
    """:func:`note_start_then_sleep` taking one tuple (for map-style calls)."""
    return note_start_then_sleep(*args)


def note_start_then_wait(args: tuple[str, ...]) -> int:
    """Append this worker's pid to ``args[0]`` when starting, then wait (up to 20 s) for
    the path ``args[1]``, then append it to ``args[2]`` if given; returns the pid."""
    with open(args[0], "a") as f:
        f.write(f"{os.getpid()}\n")
    wait_for_path(args[1])
    if len(args) > 2:
        with open(args[2], "a") as f:
            f.write(f"{os.getpid()}\n")
    return os.getpid()
