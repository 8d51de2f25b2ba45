"""Large buffers through shared memory, and ``corepool.shared``: with real workers."""

from __future__ import annotations

import functools
import gc
import os
import pickle
import socket
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import corepool
import shm_tasks as st
from corepool import sharedmem
from corepool._engine import protocol as p
from corepool.api import shutdown_default_pool

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sharedmem.AVAILABLE, reason="needs memfd_create (Linux)"),
]

BIG = sharedmem.THRESHOLD // 8 * 4  # float64 elements: 4x the threshold


def _wait_until(condition, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()  # type: ignore[no-any-return]


def _parent_holds_no_segments() -> bool:
    gc.collect()
    return st.memfd_fds() == 0 and st.memfd_mappings() == 0


# Packing, without processes ------------------------------------------------------------


def test_small_payloads_stay_plain_bytes() -> None:
    payload = sharedmem.pack([np.arange(100.0), b"x" * 1000, "text"])
    assert isinstance(payload, bytes)
    assert sharedmem.unpack(payload, [])[1] == b"x" * 1000


def test_large_buffers_go_to_one_segment_and_come_back_equal() -> None:
    a = np.random.default_rng(0).random(BIG)
    f_order = np.asfortranarray(np.arange(BIG, dtype=np.int32).reshape(64, -1))
    big_bytes = os.urandom(sharedmem.THRESHOLD + 1)
    payload = sharedmem.pack([a, f_order, big_bytes, bytearray(big_bytes), 7])
    assert isinstance(payload, sharedmem.Packed)
    assert len(payload.segments) == 1
    assert len(payload.body) < 4096  # the data itself is not in the message
    fds = [os.dup(fd) for fd in payload.fds]
    back = sharedmem.unpack(payload.body, fds)
    assert np.array_equal(back[0], a) and st.backed_by_mapping(back[0])
    assert np.array_equal(back[1], f_order) and back[1].flags.f_contiguous
    assert back[2] == big_bytes and type(back[2]) is bytes
    assert back[3] == big_bytes and type(back[3]) is bytearray
    assert back[4] == 7


def test_a_read_only_array_arrives_read_only() -> None:
    a = np.arange(BIG, dtype=np.float64)
    a.flags.writeable = False
    payload = sharedmem.pack(a)
    assert isinstance(payload, sharedmem.Packed)
    back = sharedmem.unpack(payload.body, [os.dup(fd) for fd in payload.fds])
    assert not back.flags.writeable and np.array_equal(back, a)


def test_without_shared_memory_everything_goes_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sharedmem, "AVAILABLE", False)
    a = np.arange(BIG, dtype=np.float64)
    payload = sharedmem.pack([a])
    assert isinstance(payload, bytes)
    assert np.array_equal(sharedmem.unpack(payload, [])[0], a)


@pytest.mark.linux_transport  # the portable transport's frames carry no descriptors
def test_frames_carry_descriptors_in_order_through_partial_writes() -> None:
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    parent.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    parent.setblocking(False)
    writer = p.FrameWriter(parent)
    reader = p.FrameReader(child)
    segments = [sharedmem.Segment.write([memoryview(bytes([i]) * 10)])[0] for i in range(20)]
    sent = []
    for i in range(60):
        seg = segments[i // 3] if i % 3 == 0 else None
        body = os.urandom(100_000 if i % 5 == 0 else 10)
        writer.push(p.Part(i, i * 2), body, [seg.fd] if seg else [])
        sent.append((i, body, seg is not None))
    received = []
    child.setblocking(False)
    deadline = time.monotonic() + 10
    while len(received) < len(sent) and time.monotonic() < deadline:
        writer.flush()
        received.extend(reader.read())
    assert len(received) == len(sent)
    for (i, body, has_fd), (message, got_body, fds) in zip(sent, received, strict=True):
        assert message == p.Part(i, i * 2) and type(message) is p.Part
        assert bytes(got_body) == body
        assert len(fds) == (1 if has_fd else 0)
        if fds:
            assert os.pread(fds[0], 1, 0) == bytes([i // 3])
            os.close(fds[0])
    parent.close()
    child.close()


# Through real workers ---------------------------------------------------------------


def test_large_arguments_arrive_through_shared_memory() -> None:
    rng = np.random.default_rng(1)
    arrays = [rng.random(BIG) for _ in range(4)]
    arrays.append(np.asfortranarray(rng.random((64, BIG // 64))))
    small = np.arange(10.0)
    with corepool.Pool(2) as pool:
        got = pool.map(st.describe, [*arrays, small])
    for i, (a, (total, mapped, writable, dtype, shape, fortran)) in enumerate(
        zip(arrays, got, strict=False)
    ):
        assert total == pytest.approx(float(a.sum()))
        assert mapped and writable and dtype == "float64" and shape == a.shape
        assert fortran == (i == 4)  # Fortran order survives
    assert got[5][1] is False  # a small array stays inline


def test_large_results_come_back_through_shared_memory() -> None:
    with corepool.Pool(2) as pool:
        out = pool.map(st.filled, [(BIG, float(i)) for i in range(6)])
        small = pool.apply(st.filled, ((10, 1.0),))
    for i, a in enumerate(out):
        assert a.shape == (BIG,) and (a == i).all()
        assert st.backed_by_mapping(a) and a.flags.writeable
    assert not st.backed_by_mapping(small)
    del out, a
    assert _wait_until(_parent_holds_no_segments)


def test_bytes_bytearray_and_memoryview_arguments() -> None:
    raw = bytes(range(256)) * (sharedmem.THRESHOLD // 256 + 1)
    items = [raw, bytearray(raw), b"small"]
    view = memoryview(np.arange(BIG, dtype=np.int64)).cast("B").cast("q", (BIG // 8, 8))
    with corepool.Pool(2) as pool:
        assert pool.map(st.kind_and_size, items) == [
            ("bytes", len(raw)),
            ("bytearray", len(raw)),
            ("bytes", 5),
        ]
        got = pool.apply(st.memoryview_info, (view,))
        assert got == ("q", (BIG // 8, 8), False, 0, True)
        small_view = memoryview(b"0123456789")
        assert pool.apply(st.memoryview_info, (small_view,))[:4] == ("B", (10,), True, ord("7"))


def test_a_retried_task_sees_its_original_argument_not_the_crashed_attempts_writes(
    tmp_path: Path,
) -> None:
    a = np.ones(BIG)
    marker = str(tmp_path / "crashed-once")
    with corepool.Pool(2, retries=1) as pool:
        assert pool.apply(st.scribble_then_crash_once, ((a, marker),)) == float(BIG)
    assert (a == 1.0).all()  # the parent's array was never touched


def test_no_segment_outlives_crashes_timeouts_and_results() -> None:
    a = np.ones(BIG)
    for fn, timeout in ((st.crash, None), (st.hang, 0.5)):
        errors = corepool.map(fn, [a, a], workers=2, timeout=timeout, on_error="return")
        assert all(isinstance(e, corepool.TaskError) for e in errors)
    results = corepool.map(st.filled, [(BIG, 2.0)] * 4, workers=2)
    assert all((r == 2.0).all() for r in results)
    # Workers drop their view of a chunk's arguments once it is done; of the results,
    # they hold only the segments lent to the parent (4 arrays alive here), to fill again.
    seen = corepool.map(st.pid_and_segments, range(8), workers=2, chunksize=1)
    assert {held for _, held in seen} == {(0, 0)}
    lent = corepool.map(st.result_segments, range(8), workers=2, chunksize=1)
    assert all(fds <= 4 for _, fds in lent)
    del results
    shutdown_default_pool()  # its pool of reusable segments goes with it
    assert _wait_until(_parent_holds_no_segments)


def test_argument_memory_is_reused_but_never_under_a_task_that_kept_a_view() -> None:
    arrays = [np.full(BIG, float(i)) for i in range(4)]
    with corepool.Pool(2) as pool:
        for _ in range(10):
            assert pool.map(st.describe, arrays)[3][0] == 3.0 * BIG
        assert st.memfd_fds() <= 8  # reused, not one new segment per array per map
        # A task that keeps its argument: later maps must not write into that memory.
        pool.apply(st.keep, (np.full(BIG, 7.0),))
        for _ in range(5):
            pool.map(st.describe, arrays)
        assert set(pool.map(st.kept_sum, range(4), chunksize=1)) <= {7.0 * BIG, None}
        assert 7.0 * BIG in pool.map(st.kept_sum, range(8), chunksize=1)


def test_thread_and_serial_backends_pass_large_buffers_as_they_are(backend: str) -> None:
    a = np.arange(BIG, dtype=np.float64)
    with corepool.Pool(2, backend=backend) as pool:
        total, mapped, *_ = pool.apply(st.describe, (a,))
    assert total == float(a.sum())
    assert mapped == (backend == "process")


# corepool.shared ---------------------------------------------------------------------


def test_shared_array_is_mapped_once_per_worker_and_read_only() -> None:
    big = np.arange(BIG * 4, dtype=np.float64)
    handle = corepool.shared(big)
    assert handle.value is big and handle.nbytes >= big.nbytes
    with corepool.Pool(2) as pool:
        got = pool.map(st.object_id_and_sum, [(handle, i) for i in range(12)], chunksize=1)
        per_worker: dict[int, set[int]] = {}
        for pid, obj_id, total in got:
            assert total == float(big.sum())
            per_worker.setdefault(pid, set()).add(obj_id)
        assert all(len(ids) == 1 for ids in per_worker.values())  # kept, not re-read
        total, mapped, writable = pool.apply(st.sum_shared, ((handle, 0),))
        assert mapped and writable  # a copy-on-write view of the shared pages, not a copy


def test_a_shared_array_is_copy_on_write_so_libraries_do_not_copy_it() -> None:
    image = np.ones((1024, 1024))  # 8 MB
    handle = corepool.shared(image)
    with corepool.Pool(1) as pool:
        # scipy copies an input it cannot write to: with a view it may write to, its
        # peak is the output alone, not the output plus a copy of the image.
        peak = pool.apply(st.convolve_peak, ((handle, 0),))
        assert peak < 1.5 * image.nbytes
        # A task's writes stay in its worker: not in the parent, not in the shared pages.
        assert pool.apply(st.fill_shared, ((handle, 2.0),)) == 2.0 * image.size
    assert (image == 1.0).all()
    with corepool.Pool(1) as fresh:
        assert fresh.apply(st.sum_shared, ((handle, 0),))[0] == float(image.size)


@pytest.mark.parametrize("how", ["map", "imap", "apply_async", "submit", "run_on_workers"])
def test_a_handle_inside_the_function_travels_as_its_segment(how: str) -> None:
    """``functools.partial(task, handle)``: the handle went by value with the pickled
    function (the whole object copied to every worker, ~110 ms for an 11 MB image);
    it travels as its segment, as in an argument, and arrives mapped."""
    big = np.arange(BIG * 4, dtype=np.float64)
    handle = corepool.shared(big)
    task = functools.partial(st.mapped_sum, handle)
    with corepool.Pool(2) as pool:
        if how == "map":
            got = pool.map(task, range(6), chunksize=1)
        elif how == "imap":
            got = list(pool.imap(task, range(6)))
        elif how == "apply_async":
            got = [r.get(60) for r in [pool.apply_async(task, (i,)) for i in range(6)]]
        elif how == "submit":
            got = [f.result(60) for f in [pool.submit(task, i) for i in range(6)]]
        else:
            got = list(pool.run_on_workers(task).values())
    assert got and all(total == float(big.sum()) and mapped for total, mapped in got)
    handle.release()


def test_shared_any_picklable_object_and_nested_handles() -> None:
    table = {"weights": list(range(1000)), "name": "model"}
    handle = corepool.shared(table)
    with corepool.Pool(2) as pool:
        assert pool.map(len, [handle, handle]) == [2, 2]
        assert pool.apply(st.kind_and_size, ({"inner": [handle]}["inner"][0],)) == ("dict", 2)


def test_shared_handle_on_every_local_backend(backend: str) -> None:
    handle = corepool.shared(np.arange(1000.0))
    got = corepool.map(st.object_id_and_sum, [(handle, i) for i in range(4)], backend=backend)
    assert [total for _, _, total in got] == [float(np.arange(1000.0).sum())] * 4
    assert corepool.starmap(np.add, [(handle, 1)], backend=backend)[0][0] == 1.0


def _mapped_segments(pid: int) -> int:
    with open(f"/proc/{pid}/maps") as f:
        return sum("memfd:corepool" in line for line in f)


def test_released_handle_frees_its_memory_in_parent_and_workers() -> None:
    handle = corepool.shared(np.ones(BIG * 4))
    with corepool.Pool(1) as pool:
        pool.apply(st.sum_shared, ((handle, 0),))
        assert pool.apply(st.memfd_mappings) == 1  # the worker keeps its view
        assert st.memfd_fds() == 1
        (worker,) = pool.pids()
        handle.release()
        assert handle.released and st.memfd_fds() == 0
        # The idle worker is told at once, not at its next task.
        assert _wait_until(lambda: _mapped_segments(worker) == 0)
        assert pool.apply(st.memfd_mappings) == 0
    assert handle.value.sum() == BIG * 4  # the parent's own object is untouched


def test_handle_pickled_outside_corepool_carries_its_object() -> None:
    handle = corepool.shared([1, 2, 3])
    assert pickle.loads(pickle.dumps(handle)) == [1, 2, 3]


def test_shared_array_memory_is_counted_once_across_workers() -> None:
    size = 16 * 1024 * 1024  # 128 MB of float64
    big = np.ones(size)
    with corepool.Pool(2) as pool:
        pool.map(st.memfd_mappings, range(2))  # both workers up
        procs = [psutil.Process()] + [psutil.Process(pid) for pid in pool._core.backend.pids()]

        def total_pss() -> int:
            return sum(proc.memory_full_info().pss for proc in procs)

        before = total_pss()
        handle = corepool.shared(big)
        got = pool.map(st.touch_pages, [(handle, i) for i in range(8)], chunksize=1)
        assert got == [float(size // 512)] * 8
        grew = total_pss() - before
        del handle
    assert grew < 1.25 * big.nbytes, f"grew by {grew / 2**20:.0f} MiB for a 128 MiB array"


# Arrays made in shared memory from the start --------------------------------------


def test_an_array_made_by_zeros_is_sent_without_any_copy() -> None:
    a = sharedmem.zeros((BIG // 4, 4))
    a[:] = 2.0
    segment, offset = sharedmem.locate(memoryview(a).cast("B"))  # type: ignore[misc]
    assert offset == 0
    inode = os.fstat(segment.fd).st_ino
    payload = sharedmem.pack([a, np.ones(BIG)])
    assert isinstance(payload, sharedmem.Packed)
    assert payload.segments[0] is segment  # its own memory, not a copy
    with corepool.Pool(1) as pool:
        inodes, total = pool.apply(st.inodes_of_argument, (a,))
    assert inode in inodes and total == 2.0 * BIG


def test_a_result_made_by_zeros_comes_back_without_any_copy() -> None:
    with corepool.Pool(1) as pool:
        out = pool.apply(st.zeros_result, ((BIG, 3.0),))
        assert (out == 3.0).all() and st.backed_by_mapping(out)
        pool.apply(st.write_into_kept, (9.0,))  # the worker writes into its own array...
        assert (out == 9.0).all()  # ...and the parent's result is that same memory


def test_zeros_memory_is_freed_with_the_last_view() -> None:
    a = sharedmem.zeros(BIG)
    view = a[10:20]
    del a
    assert st.memfd_mappings() >= 1
    del view
    assert _wait_until(_parent_holds_no_segments)


def test_more_shared_objects_in_one_task_than_a_message_can_carry() -> None:
    handles = [corepool.shared(np.full(10, float(i))) for i in range(300)]
    arrays = [sharedmem.zeros(BIG // 64) for _ in range(300)]
    payload = sharedmem.pack([handles, arrays])
    assert isinstance(payload, sharedmem.Packed) and len(payload.fds) <= p.MAX_FDS
    with corepool.Pool(1) as pool:
        totals = pool.apply(st.sum_all, (handles, arrays))
    assert totals == (float(sum(10 * i for i in range(300))), 0.0)


# Result segments lent and filled again (corepool.lending) ---------------------------------


def _inode_of(array: np.ndarray) -> int:
    """The inode of the shared-memory file ``array`` lives in (from /proc/self/maps)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as f:
        for line in f:
            span, _, _, _, inode = line.split()[:5]
            start, end = (int(x, 16) for x in span.split("-"))
            if start <= address < end:
                return int(inode)
    raise AssertionError("not a mapping")


@pytest.mark.linux_transport  # a named segment's name is gone once received: never lent
def test_a_result_segment_the_caller_let_go_is_filled_again() -> None:
    with corepool.Pool(1) as pool:
        first = pool.apply(st.filled, ((BIG, 1.0),))
        inode = _inode_of(first)
        del first  # the worker hears that its segment is free before the next task
        gc.collect()
        second = pool.apply(st.filled, ((BIG, 2.0),))
        assert (second == 2.0).all()
        assert _inode_of(second) == inode  # the same pages, not a new file


def test_results_the_caller_keeps_are_never_written_over() -> None:
    with corepool.Pool(2) as pool:
        kept = pool.map(st.filled, [(BIG, float(i)) for i in range(4)])
        inodes = {_inode_of(a) for a in kept}
        for round_ in range(3):
            later = pool.map(st.filled, [(BIG, 10.0 + round_)] * 4)
            assert all((a == 10.0 + round_).all() for a in later)
            assert not inodes & {_inode_of(a) for a in later}
            del later
        assert all((a == float(i)).all() for i, a in enumerate(kept))
        # A worker that dies with segments lent: the caller's arrays stay valid.
        crashed = pool.apply_async(st.crash, (None,))
        crashed.wait(30)
        assert crashed.ready() and not crashed.successful()
        assert len(pool.map(st.result_segments, range(2))) == 2  # the pool goes on
    assert all((a == float(i)).all() for i, a in enumerate(kept))
    del kept
    assert _wait_until(_parent_holds_no_segments)
