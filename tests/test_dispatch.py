"""Chunk sizing from measured durations, without len(): pure rules."""

from __future__ import annotations

import pytest

from corepool._tasks.sizing import (
    MAX_CHUNK_ITEMS_UNSIZED,
    TARGET_CHUNK_SECONDS,
    ChunkSizer,
    window_size,
)


def test_starts_with_one_task_so_the_first_result_is_fast() -> None:
    assert ChunkSizer(2).next_size() == 1


def test_tiny_tasks_grow_geometrically_to_the_cap() -> None:
    sizer = ChunkSizer(2)
    sizes = []
    for _ in range(10):
        size = sizer.next_size()
        sizes.append(size)
        sizer.observe(size, size * 1e-7)  # 0.1 us per task
    assert sizes[:4] == [1, 8, 64, 512]
    assert sizes[-1] == MAX_CHUNK_ITEMS_UNSIZED


def test_slow_tasks_stay_one_per_chunk() -> None:
    sizer = ChunkSizer(2)
    for _ in range(5):
        sizer.observe(sizer.next_size(), 0.15)
        assert sizer.next_size() == 1


def test_chunks_aim_at_the_target_duration() -> None:
    sizer = ChunkSizer(2)
    for _ in range(20):
        size = sizer.next_size()
        sizer.observe(size, size * 0.001)  # 1 ms per task
    assert sizer.next_size() == int(TARGET_CHUNK_SECONDS / 0.001)


def test_length_caps_chunks_like_multiprocessing() -> None:
    sizer = ChunkSizer(2, length=200_000)
    for _ in range(20):
        size = sizer.next_size()
        sizer.observe(size, size * 1e-7)
    assert sizer.next_size() == 25_000  # 200,000 / (4 x 2 workers)


def test_explicit_chunksize_wins() -> None:
    sizer = ChunkSizer(2, fixed=7)
    sizer.observe(7, 100.0)
    assert sizer.next_size() == 7
    with pytest.raises(ValueError):
        ChunkSizer(2, fixed=0)


def test_large_inputs_keep_chunks_small_in_bytes() -> None:
    sizer = ChunkSizer(2)
    for _ in range(10):
        sizer.observe(sizer.next_size(), 1e-6)
    sizer.observe_payload(10, 10 * 1024 * 1024)  # 1 MiB per input
    assert sizer.next_size() <= 4


def test_window_grows_with_workers() -> None:
    assert window_size(2) < window_size(8)


def test_measurements_from_another_thread_wait_for_the_owner_and_stay_few() -> None:
    sizer = ChunkSizer(2)
    for _ in range(10_000):  # a function called once per submit: nobody pulls input
        sizer.observe(1, 1e-6)
    assert len(sizer._measured) <= 32
    assert sizer.seconds_per_item is None  # not taken in yet: the owner does that
    assert sizer.next_size() > 1 and not sizer._measured
