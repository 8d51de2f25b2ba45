"""The loop that runs in each worker process: receive a chunk, run it, send the results.

The worker learns of its parent's death in two ways: when idle, its channel reaches
end-of-file; when busy, the kernel kills it (Linux: ``PR_SET_PDEATHSIG``, armed right
after start, with a check for a parent that died before it was armed), or elsewhere a
watchdog thread does (see ``transport/watchdog.py``); no other threads. The worker
ignores SIGINT: on Ctrl-C the parent stops the pool, and workers print no tracebacks.

A chunk runs in the loop every backend shares (``_tasks/run.py``), on its fast path
(a C loop over the inputs) unless the job has a timeout. Then the tracked path writes the
position and start time of every task into the worker's shared slot, so the parent's
supervisor can tell exactly which task overran its deadline, and keeps each task's
result where the parent can read it if the worker dies (``resultlog.py``), so that a
later task of the chunk that kills the worker cannot take finished results with it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .. import nesting
from .._tasks.run import pack_results, run_tasks
from ..lending import Lender
from ..nesting import THREAD_VARIABLES as THREAD_VARIABLES  # the supervisor's too
from ..serialize import FailureInfo, loads
from ..sharedmem import Packed, forget_shared, let_go, load_code, pack, unpack
from . import outputs, transport
from . import protocol as p
from .resultlog import LogWriter

# Slot layout (a shared array of doubles): the chunk being run, the position in it
# (-1 while its inputs are unpickled), when that position started (monotonic), and the
# bytes of the result log in use.
SLOT_SEQ, SLOT_POS, SLOT_T0, SLOT_LOG = 0, 1, 2, 3
SLOT_SIZE = 4


def _let_the_fork_server_go() -> None:
    """Close this worker's copy of the fork server's "client alive" pipe.

    The fork server exits when its client (our pool's process) dies, which is what
    makes PR_SET_PDEATHSIG reach a busy worker, whose parent is the fork server. But
    multiprocessing hands every forked child a copy of that pipe's write end, and while
    any worker holds one the fork server never sees its client die.
    """
    try:
        from multiprocessing import forkserver
    except ImportError:
        return
    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    # _forkserver_pid is set only in the process that started the server (our parent's
    # side): there the fd is the real client end and must stay open.
    if fd is None or getattr(server, "_forkserver_pid", None) is not None:
        return
    try:
        os.close(fd)
    except OSError:
        pass
    server._forkserver_alive_fd = None  # type: ignore[union-attr]
    server._forkserver_address = None  # type: ignore[union-attr]




def _run_tracked(
    fn: Callable[..., Any],
    items: Sequence[Any],
    style: int,
    slot: Any,
    log: LogWriter,
    sock: socket.socket,
    seq: int,
    send_each: bool = False,
) -> tuple[list[Any], dict[int, Any], list[int]]:
    """Run each task with its position and start in the slot, and each outcome in the
    log (or, if it does not fit there or ``send_each``, sent at once): results,
    failures, and the positions sent already (their places in ``results`` are None)."""
    clock = time.monotonic
    sent: list[int] = []
    log.on_full = lambda entries: p.send_blocking(sock, p.Logged(seq), entries)

    def started(pos: int) -> None:
        slot[SLOT_T0] = clock()
        slot[SLOT_POS] = pos

    def ended(pos: int, value: Any, failure: Any) -> bool:
        if not send_each and log.add(pos, value, failure):
            return True
        part = {0: failure} if failure is not None else {}
        _send_results(sock, p.Part(seq, pos), _pack_results([value], part))
        sent.append(pos)
        return False

    results, failures, _ = run_tasks(
        fn, style, items, capture=FailureInfo.capture, started=started, ended=ended
    )
    return results, failures, sent


# Result segments, reused once the parent lets go of them (see corepool.lending).
_lender = Lender()


def _pack_results(results: list[Any], failures: dict[int, Any]) -> bytes | Packed:
    try:
        return _lender.pack((results, failures))
    except BaseException:
        pass  # find the results that cannot be pickled (into fresh segments)
    return pack_results(
        pack,
        results,
        failures,
        lambda values, fails: (values, fails),
        lambda pos, exc: (p.RESULT_UNPICKLABLE, FailureInfo.capture(exc)),
    )


def _send_results(sock: socket.socket, message: p.Message, packed: bytes | Packed) -> None:
    if isinstance(packed, bytes):
        p.send_blocking(sock, message, packed)
        return
    try:
        p.send_blocking(sock, message, packed.body, packed.fds)
    finally:
        _lender.sent(packed)  # the parent has its own descriptors now


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _memory() -> tuple[int, int]:
    """(virtual size, resident size) of this process in bytes."""
    try:
        with open("/proc/self/statm", "rb") as f:
            size, resident = f.read().split()[:2]
        return int(size) * _PAGE, int(resident) * _PAGE
    except (OSError, ValueError):
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return rss, rss


def _cap_address_space(limit: int) -> None:
    """Make an allocation past ``limit`` (above what is mapped now) a MemoryError.

    The kernel's OOM killer would take the whole worker, or another process, down
    without a word; an address-space limit fails the one allocation instead.
    """
    try:
        import resource

        virtual, _ = _memory()
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = virtual + limit
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    except (ImportError, OSError, ValueError):
        return


def _mark_memory_errors(failures: dict[int, Any], limit: int) -> bool:
    """Turn MemoryErrors under a memory limit into memory-limit failures; any found?"""
    found = False
    for pos, info in list(failures.items()):
        if isinstance(info, FailureInfo) and info.type_name == "MemoryError":
            failures[pos] = (p.MEMORY_LIMIT, limit, info)
            found = True
    return found


# Modules whose presence means a BLAS/OpenMP library may already be loaded.
_THREADED_LIBRARIES = ("numpy", "scipy", "torch", "sklearn", "numexpr")


def _limit_threads(limit: int | None, user_settings: dict[str, str]) -> Any:
    """Cap BLAS/OpenMP threads in this worker: environment variables for libraries
    loaded from now on, threadpoolctl for those the fork server already loaded.

    If the user set any of the variables, theirs apply as they are and nothing else.
    """
    if user_settings:
        os.environ.update(user_settings)
        return None
    if limit is None:
        return None
    for name in THREAD_VARIABLES:
        os.environ[name] = str(limit)
    if not any(name in sys.modules for name in _THREADED_LIBRARIES):
        return None  # nothing loaded yet: threadpoolctl (10 ms to import) is not needed
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=limit)
    except Exception:
        return None


def _initialize(init_blob: Any, threads: tuple[int | None, dict[str, str]]) -> Any:
    limiter = _limit_threads(*threads)
    if isinstance(init_blob, tuple):  # the arguments came through multiprocessing
        initializer, initargs = loads(init_blob[0]), init_blob[1]
        initializer(*initargs)
    elif init_blob is not None:
        initializer, initargs = loads(init_blob)
        initializer(*initargs)
    return limiter


def main(
    sock: socket.socket,
    slot: Any,
    init_blob: Any,
    parent_pid: int,
    threads: tuple[int | None, dict[str, str]] = (None, {}),
    memory_limit: int | None = None,
    inherited: tuple[int, ...] | None = None,
    result_log: Any = None,
    forward: Any = None,
) -> None:
    """Entry point of a worker process (the ``target`` of its ``Process``).

    ``result_log``: the shared array of its result log (see ``resultlog.py``).

    ``forward``: the caller's :class:`~corepool.forwarding.Forward` (logs, output).

    ``inherited``: set when the worker was forked straight from the pool's process:
    descriptors of the parent's (other workers' channels, the supervisor's pipe) to
    close, so that only the parent holds them.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    nesting.mark_worker_process(threads[0])  # corepool called by a task runs nested
    _let_the_fork_server_go()
    if not transport.worker_started(parent_pid, inherited):
        return
    sock.setblocking(True)
    outputs.install(sock, forward)
    try:
        try:
            _limiter = _initialize(init_blob, threads)
        finally:
            outputs.chunk_ended()  # an initializer's unfinished line is its own
    except BaseException as exc:
        try:
            p.send_blocking(sock, p.InitFailed(FailureInfo.capture(exc)))
        except OSError:
            pass
        return
    if memory_limit is not None:
        _cap_address_space(memory_limit)
    try:
        p.send_blocking(sock, p.Ready(os.getpid()))
        _serve(sock, slot, LogWriter(result_log, slot, SLOT_LOG), memory_limit)
    except (EOFError, OSError):
        transport.worker_orphaned()
        return  # the parent is gone or closed the channel: nothing left to do


def _serve(sock: socket.socket, slot: Any, log: LogWriter, memory_limit: int | None) -> None:
    functions: dict[int, Callable[..., Any]] = {}
    clock = time.monotonic
    if memory_limit is not None:
        _lender.pool.close()  # kept segments would count against the task's memory
    while True:
        message, body, fds = p.recv_blocking(sock)
        if type(message) is not p.Run:
            if type(message) is p.DropShared:
                forget_shared(message.tokens)
                continue
            if type(message) is p.ResultsFree:
                _lender.returned(message.tags)
                continue
            if type(message) is p.Levels:
                outputs.set_levels(message.levels)
                continue
            return  # Quit
        seq, fn_key, fn_bytes, style, track, forget, fn_fds = message
        fn_fd_list, fds = fds[:fn_fds], fds[fn_fds:]
        for key in forget:
            functions.pop(key, None)
        log.reset()  # before the chunk is announced: the parent never reads a stale log
        slot[SLOT_T0] = clock()
        slot[SLOT_POS] = -1
        slot[SLOT_SEQ] = seq
        fn = functions.get(fn_key)
        if fn is not None:
            for fd in fn_fd_list:  # (sent again: it is known already)
                p.close_quietly(fd)
        else:
            try:
                if fn_bytes is None:  # cannot happen: the parent tracks what it sent
                    raise LookupError(f"the function of job {fn_key} never arrived")
                fn = load_code(fn_bytes, fn_fd_list, loads)
            except BaseException as exc:
                for fd in fds:
                    p.close_quietly(fd)
                p.send_blocking(sock, p.Unreadable(seq, "function", FailureInfo.capture(exc)))
                continue
            if fn_key >= 0:
                functions[fn_key] = fn
        mappings: list[Any] = []
        try:
            # Private mappings: the task may write to its arrays; the parent's copy
            # must stay intact for a retry.
            items = unpack(body, fds, private=True, mappings=mappings)
        except BaseException as exc:
            p.send_blocking(sock, p.Unreadable(seq, "inputs", FailureInfo.capture(exc)))
            continue
        del body
        started = time.perf_counter()
        sent: list[int] = []
        outputs.chunk_started(seq, (lambda: int(slot[SLOT_POS])) if track else None)
        if track:
            results, failures, sent = _run_tracked(
                fn, items, style, slot, log, sock, seq, track == p.SEND_EACH
            )
        else:
            results, failures, _ = run_tasks(
                fn, style, items, capture=FailureInfo.capture, place=outputs.place()
            )
        busy = time.perf_counter() - started
        outputs.chunk_ended()
        del items
        retiring = False
        if memory_limit is not None:
            retiring = _mark_memory_errors(failures, memory_limit)
            retiring = retiring or _memory()[1] > memory_limit
        packed = _pack_results(results, failures)
        del results
        # Unmapped now unless a task kept a view: the parent may then reuse the memory.
        released = let_go(mappings)
        _send_results(sock, p.Done(seq, busy, retiring, released, tuple(sent)), packed)
        if retiring:
            return
