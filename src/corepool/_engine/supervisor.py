"""The one thread that talks to the workers.

It blocks in a single ``selector.select()`` on everything that can happen at once:
each worker's channel (readable, and writable while a frame waits to go out), each
worker process's sentinel (it died), and a wake-up that other threads send after
queueing a command (``wakeups.py``: where ``select`` takes sockets only, a watcher
thread waits on the sentinels instead); its timeout is the next deadline the state machine knows of
(a task's timeout, a kill after SIGTERM's grace). Nothing polls. Every event goes
through :class:`~corepool._engine.state.PoolState`, and the supervisor carries out the
actions it returns: start a process, frame and send a chunk, signal a process, hand
results to a job.

All worker processes are started from this thread, so ``PR_SET_PDEATHSIG`` in a
worker started with ``spawn`` or ``fork`` refers to a thread that lives as long as the
pool does.
"""

from __future__ import annotations

import collections
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

from ..errors import CorepoolError, SerializationError
from ..forwarding import forward_settings
from ..lending import Returns
from ..sharedmem import Packed, descriptors_of, off_release, on_release, unpack
from . import outputs, transport
from . import protocol as p
from . import worker as worker_module
from .model import (
    KILL,
    Action,
    CancelJob,
    Chunk,
    Deliver,
    FailJob,
    Kill,
    Measured,
    Quit,
    Send,
    Start,
)
from .resultlog import LOG_BYTES, read_log
from .state import PoolState
from .wakeups import PipeWakeups, WatcherWakeups, watcher_needed


class _Proc:
    """A worker process and its end of the channel, as the supervisor sees them."""

    def __init__(self, process: Any, sock: socket.socket, slot: Any, log: Any) -> None:
        self.process = process
        self.sock = sock
        self.slot = slot
        self.log = log
        self.reader = p.FrameReader(sock)
        self.writer = p.FrameWriter(sock)
        self.writing = False
        self.channel_open = True
        self.inflight: dict[int, Packed] = {}  # reusable payloads it may still map, by seq


class Supervisor:
    """Owns the worker processes and the :class:`PoolState`; runs in its own thread."""

    def __init__(
        self,
        context: BaseContext,
        state: PoolState,
        *,
        init_blob: bytes | None,
        thread_limit: int | None,
        memory_limit: int | None = None,
    ) -> None:
        self._ctx = context
        self.state = state
        state.read_log = self._read_log
        self._init_blob = init_blob
        # The user's own thread variables, read now: a fork server started earlier
        # would hand the workers a stale environment.
        user_threads = {k: os.environ[k] for k in worker_module.THREAD_VARIABLES if k in os.environ}
        self._threads = (thread_limit, user_threads)
        self._memory_limit = memory_limit
        self._levels = outputs.LevelsWatch(forward_settings())  # the caller's, as of now
        self._procs: dict[int, _Proc] = {}
        # Workers that ended and are being released: still listed by pids() until what
        # they left behind (segments no one took) is removed.
        self._leaving: dict[int, int] = {}
        self._selector = selectors.DefaultSelector()
        self._wakeups: PipeWakeups | WatcherWakeups
        if watcher_needed(transport.current().name):
            self._wakeups = WatcherWakeups(self._selector, self._sentinel_fired)
        else:
            self._wakeups = PipeWakeups(self._selector)
        self._commands: collections.deque[Callable[[float], list[Action]]] = collections.deque()
        self._wake_pending = False
        # Held while the wake-up pipe is written or closed: once closed, its descriptor
        # number may belong to another file, which a late call() must not write to.
        self._wake_lock = threading.Lock()
        self._closed = False
        self._dropped: collections.deque[tuple[int, int]] = collections.deque()
        self._stop_when_done = False
        self.started = threading.Event()  # set once the first workers are started
        self._started_workers = False
        self._start_context: BaseContext | None = None  # overrides _ctx while launching
        self.thread = threading.Thread(target=self._run, name="corepool-supervisor", daemon=True)
        self._handlers: dict[type[Any], Callable[..., list[Action]]] = {
            p.Done: self._on_done,
            p.Part: self._on_part,
            p.Logged: self._on_logged,
            p.Ready: self._on_ready,
            p.Unreadable: self._on_unreadable,
            p.InitFailed: self._on_init_failed,
            p.Run: self._on_unexpected,
            p.Quit: self._on_unexpected,
            p.DropShared: self._on_unexpected,
            p.Levels: self._on_unexpected,
            p.ResultsFree: self._on_unexpected,
            p.Record: self._on_forwarded,
            p.Output: self._on_forwarded,
        }
        on_release(self)
        self._returns = Returns(self.results_returned)  # lent result segments let go

    # Other threads --------------------------------------------------------------------
    def call(self, command: Callable[[float], list[Action]]) -> bool:
        """Run ``command(now)`` on the supervisor thread and apply the actions it returns.

        False if the supervisor has ended (the command will never run)."""
        with self._wake_lock:
            if self._closed:
                return False
            self._commands.append(command)
            if self._wake_pending:
                return True  # the supervisor has not drained yet: it will see this too
            self._wake_pending = True
            self._wakeups.wake()
        return True

    def shared_released(self, token: tuple[int, int]) -> None:
        """A ``corepool.shared`` handle was released (any thread): tell the workers now,
        so that an idle one does not keep the memory until its next task."""
        self._dropped.append(token)
        self.call(self._tell_dropped)

    def _tell_dropped(self, now: float) -> list[Action]:
        tokens: list[tuple[int, int]] = []
        while self._dropped:
            tokens.append(self._dropped.popleft())
        if tokens:
            for wid, proc in self._procs.items():
                if proc.channel_open:
                    proc.writer.push(p.DropShared(tokens))
                    self._flush(wid, proc)
        return []

    def results_returned(self) -> None:
        """Result segments the user's arrays no longer use (any thread): tell the workers
        that lent them, so that they fill them again (see ``corepool.lending``)."""

        def tell(now: float) -> list[Action]:
            for pid, tags in self._returns.take().items():
                for wid, proc in self._procs.items():
                    if proc.process.pid == pid and proc.channel_open:
                        proc.writer.push(p.ResultsFree(tags))
                        self._flush(wid, proc)
            return []

        self.call(tell)

    def finish(self) -> None:
        """Let the thread end once no worker is left (after close or terminate)."""

        def mark(now: float) -> list[Action]:
            self._stop_when_done = True
            return []

        self.call(mark)

    def note_levels(self, job: Any) -> None:
        """In the caller's thread, as a stream ``job`` starts: the caller's logging levels
        now, for the workers that run it (read here, not on this thread as the first
        chunk goes out, where it would delay that chunk)."""
        self._levels.note(job)

    def launch(self, first_context: BaseContext | None = None) -> None:
        """Start the first workers, then the supervisor thread; return once both are.

        With ``first_context`` (``fork``), the first workers are forked here, in the
        calling thread, before the supervisor thread exists; see ``startup.py``.
        """
        if first_context is not None:
            self._start_context = first_context
            try:
                self._apply(self.state.start(time.monotonic()))
            finally:
                self._start_context = None
                self._started_workers = True
        self.thread.start()
        self.started.wait()

    # The thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            try:
                if not self._started_workers:
                    self._apply(self.state.start(time.monotonic()))
            finally:
                self.started.set()
            while not (self._stop_when_done and not self._procs):
                deadline = self.state.next_deadline(self.read_slot, time.monotonic())
                timeout = None
                if deadline is not None:
                    # Capped: select() overflows past about 24 days; a wake-up looks again.
                    timeout = min(max(0.0, deadline - time.monotonic()), 86400.0)
                for key, mask in self._selector.select(timeout):
                    kind, wid = key.data
                    if kind == "wake":
                        self._drain_commands()
                    elif kind == "chan":
                        self._on_channel(wid, mask)
                    else:
                        self._on_sentinel(wid)
                self._apply(self.state.on_tick(time.monotonic(), self.read_slot))
        except BaseException as exc:  # a bug here must not leave callers waiting forever
            failure = CorepoolError(f"the corepool supervisor thread failed: {exc!r}")
            failure.__cause__ = exc
            try:
                self._apply(self.state.terminate(time.monotonic(), failure))
            except BaseException:
                pass
            for proc in self._procs.values():
                try:
                    proc.process.kill()
                except Exception:
                    pass
        finally:
            self._close_all()

    def _sentinel_fired(self, wid: int) -> None:
        """(The sentinel watcher's thread) worker ``wid``'s process ended."""

        def ended(now: float) -> list[Action]:
            self._on_sentinel(wid)
            return []

        self.call(ended)

    def _drain_commands(self) -> None:
        # Empty the pipe first, then clear the flag, then run the commands: a command
        # queued after the flag is cleared writes a fresh byte, so none is left unseen.
        self._wakeups.drain()
        self._wake_pending = False
        while self._commands:
            command = self._commands.popleft()
            self._apply(command(time.monotonic()))

    def read_slot(self, wid: int) -> tuple[int, int, float]:
        proc = self._procs.get(wid)
        if proc is None:
            return -1, -1, 0.0
        slot = proc.slot
        seq, pos, started = slot[0], slot[1], slot[2]
        return int(seq), int(pos), float(started)

    def _read_log(self, wid: int, seq: int) -> dict[int, tuple[Any, Any]]:
        """What worker ``wid`` logged of chunk ``seq`` (nothing if it had not begun it)."""
        proc = self._procs.get(wid)
        if proc is None or int(proc.slot[worker_module.SLOT_SEQ]) != seq:
            return {}
        return read_log(proc.log, int(proc.slot[worker_module.SLOT_LOG]))

    def _on_channel(self, wid: int, mask: int) -> None:
        proc = self._procs.get(wid)
        if proc is None:
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(wid, proc)
        if mask & selectors.EVENT_READ:
            self._read_frames(wid, proc)

    def _read_frames(self, wid: int, proc: _Proc) -> None:
        handlers = self._handlers
        for message, body, fds in proc.reader.read():
            self._apply(handlers[type(message)](wid, message, body, fds))
        if proc.reader.eof and proc.channel_open:
            proc.channel_open = False
            self._selector.unregister(proc.sock)

    # Messages from a worker, by type: each returns the state's actions.
    def _on_done(self, wid: int, msg: p.Done, body: bytearray, fds: list[int]) -> list[Action]:
        now = time.monotonic()
        self._received(wid, msg.seq, msg.released)
        try:
            values, failures = unpack(body, fds, lent=self._lent_by(wid, fds))
        except BaseException as exc:  # even SystemExit from a __reduce__: not ours
            return self.state.on_result_unreadable(wid, msg.seq, exc, now)
        return self.state.on_done(
            wid, msg.seq, msg.busy, values, failures, now, msg.retiring, msg.sent
        )

    def _on_part(self, wid: int, msg: p.Part, body: bytearray, fds: list[int]) -> list[Action]:
        try:
            values, failures = unpack(body, fds, lent=self._lent_by(wid, fds))
        except Exception as exc:
            error = SerializationError(
                f"a task's result cannot be unpickled in the calling process: "
                f"{type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            values, failures = [None], {0: error}
        return self.state.on_part(wid, msg.seq, msg.position, values, failures)

    def _on_logged(self, wid: int, msg: p.Logged, body: bytearray, fds: list[int]) -> list[Action]:
        _close_fds(fds)
        return self.state.on_logged(wid, msg.seq, read_log(body, len(body)))

    def _on_ready(self, wid: int, msg: p.Ready, body: bytearray, fds: list[int]) -> list[Action]:
        _close_fds(fds)
        return self.state.on_ready(wid, msg.pid, time.monotonic())

    def _on_unreadable(
        self, wid: int, msg: p.Unreadable, body: bytearray, fds: list[int]
    ) -> list[Action]:
        _close_fds(fds)
        self._received(wid, msg.seq, released=False)
        return self.state.on_unreadable(wid, msg.seq, msg.what, msg.info, time.monotonic())

    def _on_init_failed(
        self, wid: int, msg: p.InitFailed, body: bytearray, fds: list[int]
    ) -> list[Action]:
        _close_fds(fds)
        return self.state.on_init_failed(wid, msg.info, time.monotonic())

    def _on_forwarded(
        self, wid: int, msg: p.Record | p.Output, body: bytearray, fds: list[int]
    ) -> list[Action]:
        _close_fds(fds)
        outputs.receive(msg, self.state, wid)
        return []

    def _on_unexpected(
        self, wid: int, msg: p.Message, body: bytearray, fds: list[int]
    ) -> list[Action]:
        _close_fds(fds)  # a parent-bound message from a worker: ignored
        return []

    def _lent_by(self, wid: int, fds: list[int]) -> Callable[[int, Any], None] | None:
        proc = self._procs.get(wid)
        return self._returns.watcher(proc.process.pid) if fds and proc is not None else None

    def _on_sentinel(self, wid: int) -> None:
        proc = self._procs.get(wid)
        if proc is None:
            return
        if proc.process.pid:
            self._leaving[wid] = proc.process.pid
        del self._procs[wid]
        self._wakeups.unwatch(proc.process.sentinel)
        if proc.channel_open:
            self._read_frames(wid, proc)  # results it sent just before it ended still count
        proc.process.join(1.0)
        self._procs[wid] = proc  # keep its slot readable while the state decides
        try:
            actions = self.state.on_exit(
                wid, proc.process.exitcode, time.monotonic(), self.read_slot
            )
        finally:
            del self._procs[wid]
            self._release(proc)
            self._leaving.pop(wid, None)
        self._apply(actions)

    def _release(self, proc: _Proc) -> None:
        if proc.channel_open:
            proc.channel_open = False
            try:
                self._selector.unregister(proc.sock)
            except (KeyError, ValueError):
                pass
        proc.writer.clear()
        proc.reader.close()
        for packed in proc.inflight.values():
            packed.sent -= 1  # the process, and its mappings, are gone
        proc.inflight.clear()
        p.close_quietly(proc.sock)
        if proc.process.pid is not None:
            transport.worker_gone(proc.process.pid)  # segments it made that no one took
        try:
            proc.process.close()
        except ValueError:
            pass

    # Actions ------------------------------------------------------------------------
    def _apply(self, actions: list[Action]) -> None:
        for action in actions:  # the kinds every chunk makes first
            if isinstance(action, Send):
                self._send(action)
            elif isinstance(action, Deliver):
                action.job.deliver(action.piece)
            elif isinstance(action, Measured):
                action.job.sizer.observe(action.items, action.busy)
            elif isinstance(action, Start):
                self._start(action.wid)
            elif isinstance(action, Quit):
                proc = self._procs.get(action.wid)
                if proc is not None:
                    proc.writer.push(p.Quit())
                    self._flush(action.wid, proc)
            elif isinstance(action, Kill):
                proc = self._procs.get(action.wid)
                if proc is not None:
                    _signal(proc.process, action.signum)
            elif isinstance(action, FailJob):
                action.job.fail(action.error)
            elif isinstance(action, CancelJob):
                action.job.cancel()

    def _send(self, action: Send) -> None:
        proc = self._procs.get(action.wid)
        if proc is None:
            return
        chunk: Chunk = action.chunk
        job = chunk.job
        if not job.claim():
            self._apply(self.state.on_refused(action, time.monotonic()))
            return
        with_function = action.with_function or not job.cache_function
        levels = self._levels.before_run(action.wid, job)  # (read by note_levels)
        if levels is not None:
            proc.writer.push(p.Levels(levels))
        fn_fds = descriptors_of(job.fn_segments) if with_function else []
        meta = p.Run(
            chunk.seq,
            job.id if job.cache_function else -1,
            job.fn_bytes if with_function else None,
            job.style,
            p.SEND_EACH if job.answers_each else p.TRACKED if job.timeout is not None else 0,
            action.forget,
            len(fn_fds),
        )
        payload = chunk.payload
        if isinstance(payload, Packed):
            proc.writer.push(meta, payload.body, fn_fds + payload.fds)
            if payload.pool is not None:
                payload.sent += 1
                proc.inflight[chunk.seq] = payload
        else:
            proc.writer.push(meta, payload, fn_fds)
        self._flush(action.wid, proc)

    def _received(self, wid: int, seq: int, released: bool) -> None:
        """The worker is done with chunk ``seq``'s inputs; ``released``: it unmapped them."""
        proc = self._procs.get(wid)
        packed = proc.inflight.pop(seq, None) if proc is not None else None
        if packed is not None:
            packed.sent -= 1
            packed.pinned = packed.pinned or not released

    def _flush(self, wid: int, proc: _Proc) -> None:
        try:
            proc.writer.flush()
        except OSError:
            proc.writer.clear()  # the worker is gone; its sentinel will tell the state
        want_write = proc.writer.pending
        if want_write != proc.writing and proc.channel_open:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self._selector.modify(proc.sock, events, ("chan", wid))
            proc.writing = want_write

    def _start(self, wid: int) -> None:
        ctx = self._start_context or self._ctx
        inherited: tuple[int, ...] | None = None
        if self._start_context is not None:  # forked from here: it gets copies of ours
            inherited = (*self._wakeups.descriptors(), self._selector.fileno())
            inherited += tuple(proc.sock.fileno() for proc in self._procs.values())
        parent_end, child_end = p.new_channel()
        slot = ctx.RawArray("d", worker_module.SLOT_SIZE)
        slot[worker_module.SLOT_SEQ] = -1
        log = ctx.RawArray("B", LOG_BYTES)
        inherited = None if inherited is None else (*inherited, parent_end.fileno())
        process = ctx.Process(  # type: ignore[attr-defined]
            target=worker_module.main,
            args=(
                child_end,
                slot,
                self._init_blob,
                os.getpid(),
                self._threads,
                self._memory_limit,
                inherited,
                log,
                self._levels.starting(wid),
            ),
            name=f"corepool-worker-{wid}",
            daemon=False,
        )
        try:
            process.start()
        except Exception:
            p.close_quietly(parent_end)
            p.close_quietly(child_end)
            # Count it as a worker that died while starting; the state decides what next.
            self._apply(self.state.on_exit(wid, None, time.monotonic(), self.read_slot))
            return
        p.close_quietly(child_end)
        self.state.on_spawned(wid, process.pid)
        proc = _Proc(process, parent_end, slot, log)
        self._procs[wid] = proc
        self._selector.register(parent_end, selectors.EVENT_READ, ("chan", wid))
        self._wakeups.watch(wid, process.sentinel)

    def _close_all(self) -> None:
        self._returns.close()
        off_release(self)
        with self._wake_lock:
            self._closed = True  # no call() writes to the pipe from now on
        for wid, proc in list(self._procs.items()):
            try:
                proc.process.kill()
                proc.process.join(2.0)
            except Exception:
                pass
            self._release(proc)
            del self._procs[wid]
        try:
            self._selector.close()
        finally:
            self._wakeups.close()

    def pids(self) -> list[int]:
        """Process ids of the workers (for tests and stats), including one that ended
        until its leftovers are removed."""
        live = [proc.process.pid for proc in list(self._procs.values()) if proc.process.pid]
        return live + [pid for pid in list(self._leaving.values()) if pid not in live]


def _signal(process: Any, signum: int) -> None:
    """SIGTERM or SIGKILL through the Process (``terminate``/``kill``: the same signals
    on POSIX, ``TerminateProcess`` on Windows, which has neither); another signal as it
    is. A process that ended already is fine."""
    try:
        if signum == signal.SIGTERM:
            process.terminate()
        elif signum == KILL:
            process.kill()
        else:
            os.kill(process.pid, signum)
    except (ProcessLookupError, TypeError, ValueError, AttributeError):
        pass  # gone already (or closed: no pid any more)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        p.close_quietly(fd)
