"""How worker processes are started: the start method, and a fast first start.

Workers are started with ``forkserver`` by the Linux transport (``spawn`` by the
others, see ``transport/``): a fork server
that already imported corepool forks each new worker in about a millisecond, and it
is safe while the pool's own threads run, which ``fork`` is not (a thread holding a
lock at the moment of a fork leaves that lock held forever in the child).

The fork server itself costs a fresh interpreter the first time, though, which is
most of the start-up of a short program. So the *first* workers of a pool are forked
straight from the program when that is provably safe: the process has exactly one
thread (counted by the kernel, so threads started by C libraries count too), and the
program is not running unguarded main-module code (see :func:`main_is_guarded`).
Workers started later, to replace one that crashed, timed out or reached its task
limit, come from the fork server, while the supervisor thread runs.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
from multiprocessing.context import BaseContext
from types import CodeType
from typing import Any

from . import transport

GUARD_MESSAGE = (
    "a corepool pool was started while a worker process was importing the main script. "
    "The main module is imported again outside the program (in the fork server, or in "
    "each spawned worker), so code that starts a pool at import time runs there too. "
    'Put it under `if __name__ == "__main__":`.'
)


def default_start_method() -> str:
    """The transport's start method: ``forkserver`` for Linux (safe with threads, fast
    after the first worker), ``spawn`` for the others."""
    methods = multiprocessing.get_all_start_methods()
    if transport.current().start_method == "forkserver" and "forkserver" in methods:
        return "forkserver"
    return "spawn"


def resolve_context(context: BaseContext | None, start_method: str | None) -> BaseContext:
    """The multiprocessing context workers are started with."""
    if context is not None:
        return context
    method = start_method or default_start_method()
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # Workers forked from a server that already imported corepool and the main
        # script start in ~ms (see preload.py for why the script needs our help).
        from .preload import main_entries

        ctx.set_forkserver_preload(
            ["corepool._engine.preload", *main_entries(), "corepool._engine.worker"]
        )
    return ctx


def check_not_bootstrapping() -> None:
    """Refuse to start workers from a worker that is still importing ``__main__``.

    One line on stderr and a quiet exit, rather than a traceback from every worker:
    the parent then raises :class:`~corepool.errors.BrokenPool` with the same advice.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        sys.stderr.write(f"corepool worker {os.getpid()}: {GUARD_MESSAGE}\n")
        sys.stderr.flush()
        raise SystemExit(1)


def thread_count() -> int | None:
    """Threads in this process as the kernel counts them; None if it cannot tell."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def main_is_guarded() -> bool:
    """False if the main script is running top-level code outside an
    ``if __name__ == "__main__":`` block right now (the pool is being created at
    import time, so a process that imports the script would create it again).

    A pool created that way must not start fast: the fork server imports the main
    script, and the clear error about the missing guard should come at once, not at
    the first crash. The check reads the running code object, not the source file, so
    a main program run from a ``.pyc``, a zip file or a directory is checked the same.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return True  # nothing will import it again (interactive, -c)
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            return frame.f_lineno in _guarded_lines(frame.f_code)
        frame = frame.f_back  # type: ignore[assignment]
    return True  # the script's top level has finished running


@functools.lru_cache(maxsize=8)
def _guarded_lines(code: CodeType) -> frozenset[int]:
    """Lines of module code ``code`` inside an ``if __name__ == "__main__":`` block.

    Found in the bytecode: the test (``__name__``, ``"__main__"``, ``==``) followed by
    a jump if false; everything from the jump to its target is the block.
    """
    import dis  # only for scripts that start a pool, and only once per script

    spans: list[tuple[int, int]] = []
    last: list[dis.Instruction] = []
    target: int | None = None  # of the guard's jump: the block starts after the jump
    for ins in dis.get_instructions(code):
        if target is not None:
            spans.append((ins.offset, target))
            target = None
        if "JUMP" in ins.opname and "IF_FALSE" in ins.opname and _is_main_test(last):
            target = int(ins.argval)
        if ins.opname not in ("EXTENDED_ARG", "CACHE", "NOP"):  # (a far jump's prefix)
            last = [*last[-2:], ins]
    return frozenset(
        line
        for start, end, line in code.co_lines()
        if line is not None and any(lo <= start < hi for lo, hi in spans)
    )


def _is_main_test(last: list[Any]) -> bool:
    if len(last) != 3 or last[2].opname != "COMPARE_OP" or "==" not in last[2].argrepr:
        return False
    loads = {(ins.opname, ins.argval) for ins in last[:2]}
    return loads == {("LOAD_NAME", "__name__"), ("LOAD_CONST", "__main__")}


def fork_first(context: BaseContext | None, start_method: str | None) -> BaseContext | None:
    """The ``fork`` context to start a pool's first workers with, when that is safe."""
    if context is not None or start_method is not None:
        return None  # the caller chose how workers start
    if default_start_method() != "forkserver" or thread_count() != 1:
        return None
    if not main_is_guarded():
        return None
    return multiprocessing.get_context("fork")
