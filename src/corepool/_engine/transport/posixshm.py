"""macOS's way to shared memory: ``shm_open``, then ``shm_unlink`` at once.

macOS has descriptor passing (``SCM_RIGHTS``) but not ``memfd_create``. A POSIX
shared-memory object opened and unlinked in the same breath behaves like a memfd: the
name exists for microseconds, and from then on the memory lives exactly as long as a
descriptor or a mapping of it, so a crash cannot leak it. Its descriptor travels the
way the Linux transport's does. Runs on Linux too (``COREPOOL_TRANSPORT=posix-shm``),
which is how it is tested.
"""

from __future__ import annotations

import os

from .named import _posixshmem, open_new

PREFIX = "/cpu"  # "corepool unlinked": the name exists between two calls only


def create(size: int) -> int:
    """A descriptor of ``size`` bytes of shared memory that no name refers to."""
    fd, name = open_new(PREFIX)
    try:
        _posixshmem.shm_unlink(name)
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd
