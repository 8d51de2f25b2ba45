"""A worker's parent-death watchdog where ``prctl(PR_SET_PDEATHSIG)`` does not exist.

Between tasks the worker learns of its parent's death from its channel (end of file).
During a task nothing reads the channel, so a tiny daemon thread waits on the parent's
*sentinel* (``multiprocessing.parent_process()``: a pipe the parent holds on POSIX, the
parent's process handle on Windows), which becomes ready when the parent ends; it
then removes what the worker handed off and exits the process at once. Waiting costs
nothing: the thread sleeps in one ``wait`` and never polls.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.connection import wait

from . import memory

#: Exit status of a worker that ended because its parent did.
ORPHANED = 70


def _watch(sentinel: int) -> None:
    wait([sentinel])
    memory.drop_handed_off()
    os._exit(ORPHANED)


def start() -> bool:
    """Start the watchdog thread; False if this process has no parent sentinel."""
    parent = multiprocessing.parent_process()
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None
    if sentinel is None:
        return False
    threading.Thread(target=_watch, args=(sentinel,), name="corepool-watchdog", daemon=True).start()
    return True


def parent_alive() -> bool:
    """Whether the parent is still there (checked once, as the worker starts)."""
    parent = multiprocessing.parent_process()
    return parent is None or parent.is_alive()
