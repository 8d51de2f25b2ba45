"""``corepool run MODULE:FUNC INPUT.jsonl``: the command around one :mod:`batch`.

Before anything runs, it checks the options and the files it will write
(:mod:`~corepool.cli.checks`), takes the one-writer locks on the journal and the output
(:mod:`~corepool.cli.lock`), and binds the journal to the function, its call mode and
the fingerprint of its code; a damaged journal is refused (or, with ``--recover``,
salvaged: :mod:`~corepool.cli.recover`). Then it streams the input through the pool and
says at the end what the journal holds and how to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import hashlib
import os
import shlex
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from .. import errors
from ..options import check_timeout
from . import tasklog
from .batch import (
    BACKLOG_LIMIT,
    FLUSH_SECONDS,
    Batch,
    Spilled,
    Stop,
    error_object,
    parse_max_failures,
)
from .checks import check_arity, check_paths, code_fingerprint
from .firstrun import FirstRun
from .journal import Journal, JournalError, KeyFinder, RunProgress
from .jsonl import call_kwargs, call_line, call_star, call_to_json, count_lines
from .lock import PathLock
from .output import Committer, Output
from .recover import damage_advice, describe_failure, is_damage, salvage
from .report import Progress, summary
from .target import UsageError, load_function

if TYPE_CHECKING:
    from ..core import PoolCore
    from ..streams import Batches

__all__ = ["BACKLOG_LIMIT", "Batch", "Spilled", "UsageError", "default_journal",
           "error_object", "load_function", "parse_max_failures", "resume_command", "run"]

CLUSTER_BACKENDS = ("dask", "ray")
_CALLERS: dict[str, Callable[..., Any]] = {"star": call_star, "kwargs": call_kwargs}


# The command ----------------------------------------------------------------------------
def _open_input(path: str | None) -> tuple[IO[bytes], int | None]:
    """The input stream and its row count (known for a file, not for stdin)."""
    if path is None or path == "-":
        return sys.stdin.buffer, None
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by _run
        total = count_lines(path) if os.path.isfile(path) else None
    except OSError as exc:
        raise UsageError(f"cannot read the input file {path}: {exc.strerror}") from None
    return stream, total


def default_journal(identity: str, input_path: str | None, mode: str) -> str:
    """The journal of a batch written to stdout: in the current directory, named after
    the function, the input and the mode, so unrelated batches never share one."""
    source = "stdin" if input_path in (None, "-") else os.path.abspath(str(input_path))
    key = hashlib.sha256(f"{identity}\0{source}\0{mode}".encode()).hexdigest()[:10]
    name = "".join(c if c.isalnum() or c in "_-" else "_" for c in identity.rsplit(":")[-1])
    return f"corepool-run-{name}-{key}.journal.db"


def _journal_path(args: argparse.Namespace, identity: str) -> str:
    if args.journal:
        return str(args.journal)
    if args.output and args.output != "-":
        return f"{args.output}.journal.db"
    return default_journal(identity, args.input, args.mode)


def resume_command(args: argparse.Namespace, journal: str) -> str:
    """The command that continues this batch (the journal made explicit)."""
    parts = ["corepool", "run", args.target]
    if args.input is not None:
        parts.append(args.input)
    if args.output:
        parts += ["-o", args.output]
    parts += ["--journal", journal]
    for flag, value in (("--workers", args.workers), ("--timeout", args.timeout),
                        ("--retries", args.retries or None), ("--backend", args.backend),
                        ("--address", args.address), ("--max-failures", args.max_failures)):
        if value is not None:
            parts += [flag, str(value)]
    if args.mode != "single":
        parts.append(f"--{args.mode}")
    if args.retry_failed:
        parts.append("--retry-failed")
    if args.no_progress:
        parts.append("--no-progress")
    command = shlex.join(parts)
    if args.input in (None, "-"):
        command += "   (with the same input on stdin)"
    return command


def run(args: argparse.Namespace) -> int:
    """``corepool run``: returns the exit status (0, 1, 2 or 130)."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"corepool run: {exc}", file=sys.stderr)
        return 2


def _backend(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The backend name and its options; ``--address`` only with a cluster backend."""
    from ..backends import resolve_backend_name

    try:
        name = resolve_backend_name(args.backend)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.address is None:
        return name, {}
    if name not in CLUSTER_BACKENDS:
        raise UsageError(
            f"--address {args.address} is where a cluster's scheduler listens: it needs "
            f"--backend dask or ray (the {name} backend runs on this machine)"
        )
    return name, {"address": args.address}


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    parse_max_failures(args.max_failures)
    try:
        check_timeout(args.timeout, "--timeout")  # the library's rule: inf is no limit
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.retries < 0:
        raise UsageError(f"--retries must be 0 or more, got {args.retries}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {args.workers}")
    backend, options = _backend(args)
    fn, identity = load_function(args.target)
    check_arity(fn, args.mode, args.target)
    path = _journal_path(args, identity)
    check_paths(args.input, args.output, path)
    command = resume_command(args, path)
    locks = [PathLock(path, "journal", command)]
    try:
        if args.output not in (None, "-"):
            locks.append(PathLock(args.output, "output file", command))
        stream, total = _open_input(args.input)
        try:
            journal = _open_journal(args, path, identity, code_fingerprint(fn))
            try:
                with tasklog.collecting():  # before the pool starts: it takes the levels
                    return _with_pool(args, fn, backend, options, journal, stream, path,
                                      total, started)
            finally:
                journal.close()
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()
    finally:
        for lock in reversed(locks):
            lock.release()


def _open_journal(args: argparse.Namespace, path: str, identity: str,
                  code: str | None) -> Journal:
    """The journal, checked and bound to this function; a damaged one is refused, or
    salvaged first with ``--recover``."""
    for salvaged in (False, True):
        journal: Journal | None = None
        try:
            journal = Journal(path)
            journal.check()
            journal.claim(identity, args.mode, code, force=args.force,
                          accept_changed_code=args.accept_changed_code)
            return journal
        except (JournalError, sqlite3.Error) as exc:
            if journal is not None:
                journal.close()
            cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else exc
            if is_damage(cause) and args.recover and not salvaged:
                aside, kept, unreadable = salvage(path)
                print(f"corepool run: moved the damaged journal to {aside}; {kept} tasks "
                      f"it still held are kept in a new {path}"
                      + (f" ({unreadable} unreadable region(s) skipped)" if unreadable
                         else ""), file=sys.stderr)
                continue
            if is_damage(cause):
                raise UsageError(f"{damage_advice(path)} ({cause})") from None
            if isinstance(exc, JournalError) and exc.__cause__ is None:
                raise UsageError(str(exc)) from None
            raise UsageError(f"cannot use the journal {path}: "
                             f"{describe_failure(cause, path, args.output)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _with_pool(args: argparse.Namespace, fn: Callable[..., Any], backend: str,
               options: dict[str, Any], journal: Journal, stream: IO[bytes], path: str,
               total: int | None, started: float) -> int:
    from ..core import PoolCore
    from ..cpus import cpu_count

    live = _start_dashboard(args, path)  # before the run is recorded: it may fail
    try:
        try:
            first = journal.is_empty()
            if first:
                journal.append_only()
            else:
                journal.index_keys()
            run_id = journal.start_run(resume_command(args, path), total, args.retries)
            finder = KeyFinder(path, lookups=not first)
        except sqlite3.Error as exc:
            raise UsageError(f"cannot use the journal {path}: "
                             f"{describe_failure(exc, path, args.output)}") from None
        out: Output | None = None
        try:
            try:
                core = PoolCore(args.workers or cpu_count(), backend, **options)
            except (ValueError, TypeError, ImportError, errors.CorepoolError) as exc:
                raise UsageError(f"cannot start the workers: {exc}") from None
            if live is not None:  # serve now: the first workers are started (see below)
                live.start()
            try:
                out = Output(args.output)
                with _rare_collections():
                    return _execute(args, fn, core, journal, finder, stream, out, path,
                                    total, started, run_id, live)
            finally:
                core.terminate()
        finally:
            finder.close()
            if out is not None:
                out.close()
    finally:
        if live is not None:
            live.close()


def _record_arrived(batch: Batch, batches: Batches) -> None:
    """After Ctrl-C, before the workers are stopped: record the tasks that finished and
    came back but were not taken yet, so that a clean stop runs again only the tasks
    that were running (not those whose results were on their way)."""
    arrived = batches.arrived()
    try:
        if arrived.returned:
            batch.take(arrived.returned)
        if arrived.failed:
            batch.take_failed(arrived.failed)
    except Stop:
        pass  # --max-failures reached by these: the batch stops anyway, interrupted
    batch.drain()


@contextlib.contextmanager
def _rare_collections(young: int = 100_000) -> Iterator[None]:
    """Collect cyclic garbage every ``young`` new objects rather than every 700 while the
    batch runs. Its threads make a few small tuples per line, none of them in a cycle,
    and at the default threshold the collector ran every few hundred lines: about 8% of
    the runner's CPU on tiny tasks (measured)."""
    threshold = gc.get_threshold()
    gc.set_threshold(max(young, threshold[0]), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def _start_dashboard(args: argparse.Namespace, path: str) -> Any:
    """``--dashboard``: the live view of this run's journal, with its workers."""
    if args.dashboard is None:
        return None
    from .dashboard import Dashboard, RunWorkers

    workers = RunWorkers()
    try:
        live = Dashboard(path, port=args.dashboard, extra=workers.html)
    except OSError as exc:
        raise UsageError(f"--dashboard: cannot listen on port {args.dashboard} "
                         f"({exc})") from None
    live.workers = workers  # attached to the pool and the batch by _execute
    # Listening already (a page opened now waits in the backlog), but served only once
    # the pool has started: a process with one thread forks its first workers, one with
    # the server's thread would start a fork server and its resource tracker first.
    print(f"corepool run: dashboard at {live.url}", file=sys.stderr, flush=True)
    return live


def _execute(args: argparse.Namespace, fn: Callable[..., Any], core: PoolCore, journal: Journal,
             finder: KeyFinder, stream: IO[bytes], out: Output, path: str,
             total: int | None, started: float, run_id: int, live: Any = None) -> int:
    progress = Progress(total, enabled=not args.no_progress)
    committer = Committer(journal, run_id, out)
    first = finder.counts is not None  # nothing to look up: the workers read the lines
    batch = (FirstRun if first else Batch)(args, finder, stream, committer, progress, run_id,
                                           retried=lambda: core.stats().retried)
    if live is not None and live.workers is not None:  # --dashboard: each worker's line
        live.workers.attach(core, batch.inflight)
    caller = _CALLERS.get(args.mode)
    call = fn if caller is None else functools.partial(caller, fn)
    task = (functools.partial(call_line, call, args.mode) if first
            else functools.partial(call_to_json, call))
    state, stopped, status, damaged = "finished", None, 0, False
    previous_sigint = signal.getsignal(signal.SIGINT)
    batches: Batches | None = None
    try:
        try:
            try:
                # As they finish: a slow task does not hold back the records of later
                # ones; a wake-up at least every FLUSH_SECONDS flushes rows meanwhile.
                batches = core.batches(task, batch.feed(), wake=FLUSH_SECONDS,
                                       timeout=args.timeout, retries=args.retries)
            except errors.SerializationError as exc:
                raise UsageError(str(exc)) from None
            try:
                for finished in batches:
                    if finished.returned:
                        batch.take(finished.returned)
                    if finished.failed:
                        batch.take_failed(finished.failed)
                    batch.tick()
            finally:
                batches.close()
            batch.drain()
        except KeyboardInterrupt:
            # A second Ctrl-C must not break the cleanup below.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            state, status = "interrupted", 130
            if batches is not None:
                _record_arrived(batch, batches)
        finally:
            batch.stop_feeding()
            core.terminate()
            try:
                batch.flush()
            finally:
                progress.close()
                committer.close()  # every batch handed over is committed and written
    except Stop as exc:
        state, stopped, status = "stopped", str(exc), 1
    except UsageError:
        state = "failed"
        raise
    except (errors.CorepoolError, OSError, sqlite3.Error) as exc:  # pool, input or disk
        state, stopped, status = "failed", describe_failure(exc, path, args.output), 2
        damaged = is_damage(exc)
    finally:
        try:
            if not damaged:
                done = committer.committed  # what the journal holds, not what ran
                journal.end_run(run_id, state, RunProgress(done.rows, done.executed,
                                                           done.executed_failed,
                                                           retried=done.retried),
                                batch.pending())
            if state == "finished":
                out.complete()
        except (OSError, sqlite3.Error) as exc:  # the disk broke down: say so
            state, stopped = "failed", describe_failure(exc, path, args.output)
            status = status if status == 130 else 2
            damaged = damaged or is_damage(exc)
        finally:
            if status == 130:
                signal.signal(signal.SIGINT, previous_sigint)
    # What the journal holds, not what ran: rows after a failed commit are not counted.
    print(summary(committer.committed, time.monotonic() - started, path, stopped),
          file=sys.stderr)
    if damaged:
        return 2  # the advice is in the summary; no resume command that fails the same way
    if state != "finished":
        kept = f" The rows so far are in {out.partial}." if out.partial else ""
        print(f"corepool run: {state}; the journal is consistent.{kept} To resume:\n  "
              f"{resume_command(args, path)}", file=sys.stderr)
        return status
    return 1 if batch.counts.failures else 0
