"""How the process engine talks to its workers on this system: the *transport*.

One transport is chosen per process, the first time it is asked for, from
``$COREPOOL_TRANSPORT`` (``auto``, ``linux``, ``posix-shm``, ``portable``) or else
from what the system offers:

- ``linux`` (:mod:`.linux`): fork server start, Unix sockets that pass descriptors
  (``SCM_RIGHTS``), anonymous ``memfd_create`` memory, ``PR_SET_PDEATHSIG``.
- ``posix-shm`` (:mod:`.posixshm`, macOS's way): the same sockets and descriptor
  passing, memory from ``shm_open`` unlinked the moment it exists, spawn start and the
  watchdog thread.
- ``portable`` (:mod:`.named`): spawn start, sockets that carry bytes only, memory in
  named segments whose names travel in the frame (see :mod:`.named` for why none is
  left behind), the watchdog thread (:mod:`.watchdog`). Where ``shm_open`` does not
  exist (Windows) large buffers travel inline.

Only :mod:`.linux` makes Linux-only calls, and it is imported only when chosen.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple

__all__ = ["ENV", "Transport", "current", "describe"]

ENV = "COREPOOL_TRANSPORT"
_NAMES = ("linux", "posix-shm", "portable")


class Transport(NamedTuple):
    """What the engine needs to know about the chosen transport.

    (A NamedTuple, not a dataclass: a worker imports this module as it starts, and
    ``dataclasses`` would add several milliseconds to every pool's start.)
    """

    name: str
    reason: str
    #: ``forkserver`` (with forked first workers) or ``spawn``.
    start_method: str
    #: Descriptors travel beside frames (``SCM_RIGHTS``); else frames carry bytes only.
    passes_fds: bool
    #: How shared memory is made: ``memfd``, ``shm-unlinked``, ``named`` or ``none``.
    memory: str

    def describe(self) -> str:
        """One line for ``corepool info``."""
        return f"{self.name} ({self.reason})"


_current: Transport | None = None


def _linux_available() -> bool:
    import mmap

    return (
        sys.platform.startswith("linux")
        and hasattr(os, "memfd_create")
        and hasattr(mmap, "MAP_POPULATE")
    )


def _has_shm_open() -> bool:
    import importlib.util

    return importlib.util.find_spec("_posixshmem") is not None


def _has_fd_passing() -> bool:
    import socket

    return hasattr(socket, "SCM_RIGHTS") and hasattr(socket.socket, "sendmsg")


def _build(name: str, reason: str) -> Transport:
    if name == "linux":
        return Transport(name, reason, "forkserver", True, "memfd")
    if name == "posix-shm":
        return Transport(name, reason, "spawn", True, "shm-unlinked")
    # Without shm_open (Windows) large buffers travel inline in the frame.
    memory = "named" if _has_shm_open() else "none"
    return Transport(name, reason, "spawn", False, memory)


def choose(setting: str | None = None) -> Transport:
    """The transport ``setting`` (or ``$COREPOOL_TRANSPORT``) asks for, or the best one
    this system has; ValueError for a name that does not exist or cannot work here."""
    raw = os.environ.get(ENV, "") if setting is None else setting
    wanted = raw.strip().lower() or "auto"
    if wanted == "auto":
        if _linux_available():
            return _build("linux", "Linux: memfd_create and SCM_RIGHTS available")
        if _has_fd_passing() and _has_shm_open():
            return _build("posix-shm", f"{sys.platform}: SCM_RIGHTS and shm_open, no memfd_create")
        return _build("portable", f"{sys.platform}: no descriptor passing")
    if wanted not in _NAMES:
        raise ValueError(f"{ENV} must be auto, {', '.join(_NAMES)}; got {raw!r}")
    if wanted == "linux" and not _linux_available():
        raise ValueError(f"{ENV}=linux needs Linux with memfd_create")
    if wanted == "posix-shm" and not (_has_fd_passing() and _has_shm_open()):
        raise ValueError(f"{ENV}=posix-shm needs SCM_RIGHTS and shm_open")
    return _build(wanted, f"forced by {ENV}={raw.strip()}")


def current() -> Transport:
    """The transport of this process (chosen once; a worker inherits the variable)."""
    global _current
    if _current is None:
        _current = choose()
        if not _current.passes_fds:
            from .. import protocol

            protocol.PLAIN = True
    return _current


def describe() -> dict[str, Any]:
    """The transport in use and why, as ``corepool info`` shows it; an invalid
    ``$COREPOOL_TRANSPORT`` is reported, not raised."""
    try:
        chosen = current()
    except ValueError as exc:
        return {"name": "invalid", "reason": str(exc)}
    return {
        "name": chosen.name,
        "reason": chosen.reason,
        "start_method": chosen.start_method,
        "passes_fds": chosen.passes_fds,
        "memory": chosen.memory,
    }


def worker_started(parent_pid: int, inherited: tuple[int, ...] | None) -> bool:
    """A worker's first steps on this transport; False if its parent is gone already.

    ``linux``: close what a forked worker inherited, arm ``PR_SET_PDEATHSIG``. Others:
    start the watchdog thread (:mod:`.watchdog`); a worker's segments are handed off.
    """
    chosen = current()
    if chosen.name == "linux":
        from . import linux

        if inherited is not None:
            linux.close_inherited(inherited)
        linux.arm_parent_death_signal()
        return linux.parent_alive(parent_pid)
    from . import memory, watchdog

    if chosen.memory == "named":
        memory.hand_off_sent_segments()
    watchdog.start()
    return watchdog.parent_alive()


def worker_orphaned() -> None:
    """The worker's channel ended (its parent is gone, or stopped reading): remove the
    names it handed off lately, which the parent may never have taken."""
    if _current is not None and _current.memory == "named":
        from . import memory

        memory.drop_handed_off()


def worker_gone(pid: int) -> None:
    """A worker of this process ended: remove the segments it made and no one took."""
    if _current is not None and _current.memory in ("named", "shm-unlinked"):
        from . import named

        named.sweep_pid(pid)


def pool_starting() -> Transport:
    """The transport a new pool uses; removes segments left by dead programs first."""
    chosen = current()
    if chosen.memory in ("named", "shm-unlinked"):
        from . import named

        named.sweep_dead()
    return chosen
