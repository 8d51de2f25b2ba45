"""The Linux transport's system calls, kept here so no other module makes them.

Imported only when the ``linux`` transport is chosen (see the package docstring).
"""

from __future__ import annotations

import os
import signal

from .. import protocol


def memfd(size: int, label: str = "corepool") -> int:
    """A new anonymous shared-memory file of ``size`` bytes: no name (``label`` shows
    in /proc only), freed by the kernel with its last descriptor or mapping."""
    fd = os.memfd_create(label, os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def arm_parent_death_signal() -> None:
    """SIGKILL this process when the thread that started it ends (``prctl``)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except Exception:
        return


def parent_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_inherited(fds: tuple[int, ...]) -> None:
    """Close the parent's descriptors a forked worker must not keep open: ``fds``, and
    shared-memory files of the parent's (its memory would outlive their release)."""
    for fd in fds:
        protocol.close_quietly(fd)
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("/memfd:corepool"):
                protocol.close_quietly(int(name))
        except (OSError, ValueError):
            continue
