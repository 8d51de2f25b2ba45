"""corepool's process engine (private).

Data flow, from the caller's inputs to its results::

    caller thread            feeder thread (one per stream)        supervisor thread (one per pool)
    ─────────────            ──────────────────────────────        ────────────────────────────────
    map/imap(fn, inputs) ─▶  pulls a chunk when the job's window   PoolState (state.py) decides; the
      StreamJob (_tasks/)    has room; pickles it (protocol 5) ─▶  supervisor frames Run messages
                             Chunk ─▶ supervisor.call(add)          onto each worker's own socket
                                                                             │  ▲
                                                        worker process (worker.py, no threads):
                                                        unpickle fn once per job, inputs per
                                                        chunk; run; write (chunk, position,
                                                        start time) to its shared slot; send Done
                                                                             │
    pieces() reorders ◀──── Job.deliver(Piece) ◀── supervisor reads Done / sentinel / deadline
    and gives window                                 and applies PoolState's actions
    permits back as the caller consumes

Who owns what: the caller's thread owns the result iterator; a feeder thread owns the
user's input iterator; the supervisor thread owns every socket, process and the
PoolState, and is the only one to change them (other threads queue commands through
``Supervisor.call``; statistics are read that way too). The job, the chunk-size and window
rules, the loop a worker runs a chunk with and the retry and split rules are every
backend's: ``_tasks/``; ``state.py`` and ``recovery.py`` hold the pool's.
"""

# Nothing is imported here: a worker process imports only ``worker`` (and what it
# needs), which keeps worker start-up short. Import from the submodules.
