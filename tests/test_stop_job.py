"""``PoolState.stop_job``: the rule behind cancelling ``amap``, without a process."""

from __future__ import annotations

import signal

from corepool._engine.state import Kill
from test_state import RecordingJob, chunk, sends, started_pool


def test_stop_job_stops_its_workers_and_requeues_the_others_chunks() -> None:
    state = started_pool()
    doomed, other = RecordingJob(), RecordingJob()
    sent = sends(state.add([chunk(doomed, 0, [0]), chunk(other, 0, [0])], 0.0))
    assert [(s.wid, s.chunk.job) for s in sent] == [(0, doomed), (1, other)]
    # Behind the doomed chunk, worker 0 holds one of the other job's (a prefetch).
    state.workers[0].queue.append(chunk(other, 1, [1]))
    state.add([chunk(doomed, 1, [1])], 0.0)  # queued, not started

    actions = state.stop_job(doomed, 1.0)

    assert Kill(0, signal.SIGTERM) in actions
    assert not any(isinstance(a, Kill) and a.wid == 1 for a in actions)
    assert not state.workers[0].queue
    # The other job's chunk goes back to the queue (or straight to a worker); the doomed
    # job's queued chunk never runs.
    held = [c for w in state.workers.values() for c in w.queue] + list(state.ready)
    assert sorted((c.job is other, c.start) for c in held) == [(True, 0), (True, 1)]
    assert state.on_exit(0, -15, 1.1, lambda wid: (-1, -1, 0.0)) is not None
    assert not doomed.pieces  # nothing delivered: nobody waits for it


def test_stop_job_leaves_a_pool_without_its_chunks_alone() -> None:
    state = started_pool()
    job, idle = RecordingJob(), RecordingJob()
    state.add([chunk(job, 0, [0])], 0.0)
    assert state.stop_job(idle, 1.0) == []
    assert state.workers[0].queue or state.workers[1].queue
