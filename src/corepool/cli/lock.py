"""One writer per journal and per output file: an OS lock that dies with its process.

``corepool run`` takes an exclusive, non-blocking lock on ``JOURNAL.lock`` and, with
``-o``, on ``OUTPUT.lock`` before it touches either. The lock belongs to the open file
description, so the kernel drops it when the process ends however it ends (``kill -9``
included): a lock is never left stuck. The file holds who took it (pid, host, command,
since when) for the message a second run prints when it is refused; the holder removes
it when it is done.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import IO, Any

from .target import UsageError

__all__ = ["LOCK_SUFFIX", "PathLock"]

LOCK_SUFFIX = ".lock"

if sys.platform == "win32":  # pragma: no cover - not run on the Linux CI
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


class PathLock:
    """The exclusive lock on ``path + ".lock"``, taken on creation (else UsageError)."""

    def __init__(self, path: str, what: str, command: str) -> None:
        # The real path: two spellings of one file (a symlink, ./x) share one lock.
        self.path = os.path.realpath(path) + LOCK_SUFFIX
        self._file: IO[str] | None = None
        for _ in range(20):  # a holder may remove the file between our open and lock
            try:
                handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - see release
            except OSError as exc:
                raise UsageError(f"cannot create the lock file {self.path}: "
                                 f"{exc.strerror}") from None
            if not _try_lock(handle.fileno()):
                holder = _read_holder(handle)
                handle.close()
                raise UsageError(_busy_message(path, what, holder))
            if _same_file(handle, self.path):
                self._file = handle
                break
            handle.close()  # we locked a file its holder had just removed: take the new one
        else:  # pragma: no cover - 20 races in a row
            raise UsageError(f"cannot lock {self.path}: it keeps being replaced")
        holder_info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                       "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(holder_info) + "\n")
            handle.flush()
        except OSError:
            pass  # a full disk: the lock holds all the same, only its note is missing

    def release(self) -> None:
        """Remove the lock file and drop the lock (the removal first, while still held)."""
        if self._file is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        self._file.close()
        self._file = None


def _same_file(handle: IO[str], path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False


def _read_holder(handle: IO[str]) -> dict[str, Any]:
    try:
        handle.seek(0)
        data = json.loads(handle.read() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _busy_message(path: str, what: str, holder: dict[str, Any]) -> str:
    who = "another corepool run"
    if holder:
        who += (f" (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since "
                f"{holder.get('since', '?')}: {holder.get('command', '?')})")
    return (f"the {what} {path} is in use by {who}. One run writes a {what} at a time: "
            "wait for that run to end (or stop it), or give this batch another "
            + ("--journal" if what == "journal" else "-o") + " file")
