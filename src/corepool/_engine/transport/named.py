"""Named shared-memory segments, for the portable transport (no descriptor passing).

A segment is a POSIX shared-memory object (``shm_open``, what
``multiprocessing.shared_memory`` uses) whose *name* travels in the frame; the receiver
opens it by name and maps it. A name outlives a crash unless someone removes it, so
every name has exactly one remover, and a backstop for when that process dies too:

- Names are ``/cp<pid>_<n>_<random>``: ``pid`` is the process that created it.
- A segment the parent makes (task arguments, ``corepool.shared``) is the parent's:
  it unlinks the name when the segment is closed or collected, and at exit.
- A segment a worker makes (a large result) is *handed off*: the parent unlinks the
  name the moment it has opened it; the worker only closes its descriptor.
- Every name is registered with ``multiprocessing``'s resource tracker (spawn starts it
  anyway; workers share the parent's): when the parent is killed with ``kill -9``, the
  tracker sees its last client go and unlinks what is still registered.
- When a worker dies, the parent removes the names with that worker's pid
  (:func:`sweep_pid`), and when a pool starts it removes those of creators that no
  longer exist (:func:`sweep_dead`); both list ``/dev/shm`` where it exists.

Mappings stay valid after a name is unlinked, so unlinking early never breaks a reader.
"""

from __future__ import annotations

import atexit
import importlib
import itertools
import os
import re
import secrets
import threading
from typing import Any

# CPython's own shm_open/shm_unlink (what multiprocessing.shared_memory calls).
_posixshmem: Any = importlib.import_module("_posixshmem")

_SHM_DIR = "/dev/shm"
_PATTERN = re.compile(r"^cpu?(\d+)_")  # named ("cp") and posix-shm's ("cpu") segments
_counter = itertools.count()
_owned: set[str] = set()  # names this process must unlink
_lock = threading.Lock()
_tracking = True


def _tracker(action: str, name: str) -> None:
    global _tracking
    if not _tracking:
        return
    try:
        from multiprocessing import resource_tracker

        getattr(resource_tracker, action)(name, "shared_memory")
    except Exception:  # no tracker here: the owner and the sweepers still remove it
        _tracking = False


def open_new(prefix: str) -> tuple[int, str]:
    """A new shared-memory object named ``<prefix><pid>_<unique>``: descriptor, name."""
    while True:
        name = f"{prefix}{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"
        try:
            fd = int(_posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        except FileExistsError:
            continue
        os.set_inheritable(fd, False)
        return fd, name


def create(size: int) -> tuple[int, str]:
    """A new named segment of ``size`` bytes: its descriptor and name."""
    fd, name = open_new("/cp")
    _tracker("register", name)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        unlink(name)
        raise
    with _lock:
        _owned.add(name)
    return fd, name


def open_name(name: str, *, hand_off: bool) -> int:
    """A descriptor of segment ``name``; with ``hand_off``, the name is removed now
    (the receiver of a worker's segment is its remover)."""
    fd = int(_posixshmem.shm_open(name, os.O_RDWR, 0o600))
    if hand_off:
        unlink(name)
    return fd


def disown(name: str) -> None:
    """Someone else removes ``name`` now (a segment handed off to the parent)."""
    with _lock:
        _owned.discard(name)


def unlink(name: str, *, tracked: bool = True) -> None:
    """Remove ``name`` (already gone is fine); with ``tracked``, stop tracking it.

    Only the process that removed a name tells the tracker (it complains of a name it
    does not hold), and a name of another program's tracker is removed ``tracked=False``.
    """
    with _lock:
        _owned.discard(name)
    try:
        _posixshmem.shm_unlink(name)
    except OSError:
        return
    if tracked:
        _tracker("unregister", name)


def unlink_owned() -> None:
    """Remove every name this process still owns (at exit, or a worker whose parent
    died before it took the worker's results)."""
    with _lock:
        names = list(_owned)
    for name in names:
        unlink(name)


atexit.register(unlink_owned)


def _listed() -> list[tuple[str, int]]:
    try:
        entries = os.listdir(_SHM_DIR)
    except OSError:
        return []  # no listing (macOS): the owners and the tracker remove names
    found = []
    for entry in entries:
        match = _PATTERN.match(entry)
        if match:
            found.append(("/" + entry, int(match.group(1))))
    return found


def sweep_pid(pid: int) -> int:
    """Remove the segments process ``pid`` (a worker that ended) created; how many."""
    removed = 0
    for name, owner in _listed():
        if owner == pid:
            unlink(name, tracked=not name.startswith("/cpu"))  # posix-shm's never were
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def sweep_dead() -> int:
    """Remove segments whose creating process no longer exists; how many."""
    removed = 0
    for name, owner in _listed():
        if not _alive(owner):
            unlink(name, tracked=False)
            removed += 1
    return removed


def leftovers() -> list[str]:
    """Names of corepool segments in ``/dev/shm`` now (for tests and checks)."""
    return [name for name, _ in _listed()]
