"""Shared-memory segments as the chosen transport makes them: one small interface
over ``memfd_create`` (Linux), ``shm_open`` + unlink (macOS's way) and named
segments (portable). :mod:`corepool.segments` is its only user.

What travels for a segment is its descriptor (``SCM_RIGHTS``), or, where descriptors
do not travel, its name and whether the receiver removes that name (:func:`named`).
"""

from __future__ import annotations

import importlib
from collections import deque
from types import ModuleType

from . import current

_hand_off = False  # segments made here are handed off to the receiver (a worker's)
# The last names handed off: removed again if the parent dies before it took them
# (the parent removes each one it takes, so a longer memory would only repeat that).
_handed: deque[str] = deque(maxlen=64)
_MODULES = {"memfd": "linux", "shm-unlinked": "posixshm", "named": "named"}
_backend: ModuleType | None = None  # imported once: a segment collected at exit needs it


def _module() -> ModuleType:
    global _backend
    if _backend is None:
        kind = current().memory
        if kind not in _MODULES:
            raise OSError("no shared memory on this system")
        _backend = importlib.import_module(f"{__package__}.{_MODULES[kind]}")
    return _backend


def available() -> bool:
    """Whether this process can make shared-memory segments at all (False with an
    invalid ``$COREPOOL_TRANSPORT``, which starting a pool reports)."""
    try:
        return current().memory != "none"
    except ValueError:
        return False


def named() -> bool:
    """Whether segments travel by name (the frame carries no descriptors)."""
    return current().memory == "named"


def pwrite_works() -> bool:
    """Whether a new segment can be filled with ``pwrite`` (a memfd); macOS's shared
    memory objects can only be written through a mapping."""
    return current().memory == "memfd"


def hand_off_sent_segments() -> None:
    """From now on, a segment this process sends belongs to whoever receives it
    (called once in a worker: its results' segments are the parent's to remove)."""
    global _hand_off
    _hand_off = True


def create(size: int, label: str = "corepool") -> tuple[int, str | None]:
    """A new segment of ``size`` bytes: descriptor, and name (None if it has none).
    ``label`` names a Linux segment in /proc. A named segment is its creator's until
    :func:`hand_off` gives it away."""
    backend = _module()
    if backend.__name__.endswith(".linux"):
        return backend.memfd(size, label), None
    if backend.__name__.endswith(".posixshm"):
        return backend.create(size), None
    fd, name = backend.create(size)
    return fd, name


def hand_off(name: str) -> bool:
    """Segment ``name`` is being sent: whether its receiver removes the name now.

    In a worker it does: the sender may drop its segment before the parent reads the
    frame, so the name must outlive the sender's copy, and the parent is its remover
    from here on. Elsewhere the creator keeps the name (it may send it again).
    """
    if not _hand_off:
        return False
    _module().disown(name)
    _handed.append(name)
    return True


def release(name: str | None, hand_off: bool) -> None:
    """The creator closed segment ``name``: remove the name unless the receiver does."""
    if name is not None and not hand_off:
        _module().unlink(name)


def open_ref(name: str, hand_off: bool) -> int:
    """A descriptor of the segment a frame names (its name removed if handed off)."""
    fd: int = _module().open_name(name, hand_off=hand_off)
    return fd


def open_ref_failed(name: str) -> None:
    """Remove a handed-off name that will not be opened (its payload is dropped)."""
    _module().unlink(name)


def drop_handed_off() -> None:
    """Remove the names this worker handed off lately (its parent is gone)."""
    for name in list(_handed):
        _module().unlink(name)
