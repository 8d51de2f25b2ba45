"""Chunking and the bounded window, as pure rules.

:class:`ChunkSizer` picks how many inputs go into the next chunk without knowing how
many inputs there are. It starts at one task, so the first result comes back after one
task, and grows geometrically while the measured time per task says chunks are still
far shorter than :data:`TARGET_CHUNK_SECONDS`; slow tasks therefore stay unbatched and
tiny ones are batched by the thousand. When the input has a ``len()``, chunks are also
capped so that every worker gets several (as ``multiprocessing.Pool`` does), and their
pickled size stays under :data:`MAX_CHUNK_BYTES`.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MAX_CHUNK_BYTES", "TARGET_CHUNK_SECONDS", "ChunkSizer", "window_size"]

TARGET_CHUNK_SECONDS = 0.02
MAX_CHUNK_BYTES = 4 * 1024 * 1024
# Without a len(), the window holds several chunks of an input of unknown size:
# this cap keeps an endless input's in-flight part to a few MB.
MAX_CHUNK_ITEMS_UNSIZED = 8192
MAX_CHUNK_ITEMS = 1 << 20
GROWTH = 8
MEASURED_KEPT = 32


def window_size(workers: int) -> int:
    """Chunks that may be pulled from the input and not yet consumed, per job."""
    return 2 * workers + 2


class ChunkSizer:
    """Adaptive chunk size from measured task durations; a fixed ``chunksize`` wins."""

    def __init__(
        self,
        workers: int,
        fixed: int | None = None,
        length: int | None = None,
        max_items: int | None = None,
    ) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"chunksize must be at least 1, got {fixed}")
        self.fixed = fixed
        self._cap = MAX_CHUNK_ITEMS_UNSIZED
        if length is not None and length > 0:
            self._cap = min(MAX_CHUNK_ITEMS, max(1, math.ceil(length / (4 * workers))))
        if max_items is not None:
            self._cap = min(self._cap, max(1, max_items))
        self._size = 1
        self.seconds_per_item: float | None = None
        self._bytes_per_item: float | None = None
        # Measurements reported from other threads (the process backend's supervisor),
        # folded in by the thread that pulls the input, the only one to change the size.
        # Bounded: nobody folds a single call's; and each weighs half the one before.
        self._measured: deque[tuple[int, float]] = deque(maxlen=MEASURED_KEPT)
        #: The process backend's own estimate of seconds per task, read and written by
        #: its state machine only, on its supervisor thread (see ``_engine/state.py``):
        #: kept here, where a lookup is one attribute read, not in a weak mapping.
        self.engine_seconds_per_item: float | None = None

    def next_size(self) -> int:
        """Inputs to put into the next chunk."""
        if self.fixed is not None:
            return self.fixed
        self._fold()
        return min(self._size, self._cap)

    def observe(self, items: int, busy_seconds: float) -> None:
        """A chunk of ``items`` tasks kept its worker busy for ``busy_seconds`` (any
        thread: taken into account by the next :meth:`next_size`)."""
        if items > 0:
            self._measured.append((items, busy_seconds))

    def _fold(self) -> None:
        while self._measured:
            self._learn(*self._measured.popleft())

    def _learn(self, items: int, busy_seconds: float) -> None:
        per_item = max(busy_seconds, 1e-7) / items
        if self.seconds_per_item is None:
            self.seconds_per_item = per_item
        else:
            self.seconds_per_item = 0.5 * self.seconds_per_item + 0.5 * per_item
        wanted = max(1, int(TARGET_CHUNK_SECONDS / self.seconds_per_item))
        if wanted > self._size:
            self._size = min(wanted, self._size * GROWTH)
        else:
            self._size = wanted

    def observe_payload(self, items: int, nbytes: int) -> None:
        """A chunk of ``items`` inputs pickled to ``nbytes``: keep chunks under the byte cap."""
        if items <= 0:
            return
        self._fold()
        self._bytes_per_item = max(nbytes / items, 1.0)
        by_bytes = max(1, int(MAX_CHUNK_BYTES / self._bytes_per_item))
        self._size = min(self._size, by_bytes)
        self._cap = min(self._cap, max(by_bytes, 1))

    def estimate(self, items: int) -> float | None:
        """Expected seconds for a chunk of ``items`` tasks, once something was measured."""
        self._fold()
        if self.seconds_per_item is None:
            return None
        return self.seconds_per_item * items
