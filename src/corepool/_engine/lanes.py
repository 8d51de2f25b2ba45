"""The queue of chunks waiting for a worker: one lane per job, served in turn.

A pool serves several jobs at once: streams from several threads, a ``map`` next to
an endless ``imap``, calls from ``submit``. One shared FIFO let whichever job queued
first take every free worker, and when a chunk failed, its tasks, re-queued at the
front one by one, went ahead of every other job's work. Here each job has a lane of
its own (single calls, which are small and many, share one lane, in submission
order), and the next free worker takes the next chunk from the next lane in turn (a
lane that appears goes ahead of the lanes that had a turn already, behind those that
did not). A
chunk put back after a failure goes to the front of its own lane only: it runs before
the rest of its job, never before the other jobs' turns.

Chunks stay here, in the parent, until a worker is free for them (at most one more,
of the same job, is prefetched behind a running chunk known to be short, see
``PoolState._capacity``), so work cancelled before it starts never reached a worker.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Chunk

CALLS_LANE = -1  # the lane every single call (apply_async, submit) shares


class Lanes:
    """Chunks by job, handed out round-robin over the jobs that have any."""

    __slots__ = ("_count", "_fresh", "_lanes")

    def __init__(self) -> None:
        # Lane key -> its chunks; the order of the keys is the order of turns.
        self._lanes: OrderedDict[int, deque[Chunk]] = OrderedDict()
        self._fresh: deque[int] = deque()  # lanes at the front that had no turn yet
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __iter__(self) -> Iterator[Chunk]:
        for lane in self._lanes.values():
            yield from lane

    def push(self, chunk: Chunk, front: bool = False) -> None:
        """Queue ``chunk`` at the end (or the front) of its job's lane."""
        key = chunk.job.lane
        lane = self._lanes.get(key)
        if lane is None:
            # Ahead of the lanes that had their turn, behind the others still waiting.
            lane = self._lanes[key] = deque()
            self._lanes.move_to_end(key, last=False)
            for waiting in reversed(self._fresh):
                self._lanes.move_to_end(waiting, last=False)
            self._fresh.append(key)
        if front:
            lane.appendleft(chunk)
        else:
            lane.append(chunk)
        self._count += 1

    def pop(self, key: int | None = None) -> Chunk | None:
        """The next chunk of the lane whose turn it is (that lane goes to the back), or
        of lane ``key`` only; None if there is none."""
        if key is None:
            if not self._lanes:
                return None
            key, lane = next(iter(self._lanes.items()))
        else:
            found = self._lanes.get(key)
            if found is None:
                return None
            lane = found
        chunk = lane.popleft()
        self._count -= 1
        if key in self._fresh:
            self._fresh.remove(key)  # it had its turn
        if lane:
            self._lanes.move_to_end(key)
        else:
            del self._lanes[key]
        return chunk

    def pop_run(self, key: int, limit: int, accept: Callable[[Chunk], bool]) -> list[Chunk]:
        """Up to ``limit`` chunks from the front of lane ``key``, while ``accept`` says
        yes (taken together with the chunk just popped from it: no turn of its own)."""
        lane = self._lanes.get(key)
        taken: list[Chunk] = []
        if lane is None:
            return taken
        while lane and len(taken) < limit and accept(lane[0]):
            taken.append(lane.popleft())
        self._count -= len(taken)
        if not lane:
            del self._lanes[key]
            if key in self._fresh:
                self._fresh.remove(key)
        return taken

    def lane(self, key: int) -> deque[Chunk] | tuple[()]:
        """The chunks queued in lane ``key``, in order (read only)."""
        return self._lanes.get(key, ())

    def drop(self, job_id: int, lane_key: int) -> None:
        """Forget the queued chunks of job ``job_id`` (in lane ``lane_key``)."""
        lane = self._lanes.get(lane_key)
        if lane is None:
            return
        kept = deque(c for c in lane if c.job.id != job_id)
        self._count -= len(lane) - len(kept)
        if kept:
            self._lanes[lane_key] = kept
        else:
            del self._lanes[lane_key]
            if lane_key in self._fresh:
                self._fresh.remove(lane_key)

    def clear(self) -> None:
        """Forget every queued chunk."""
        self._lanes.clear()
        self._fresh.clear()
        self._count = 0
