"""The SQLite journal of ``corepool run``: every finished task, durable, keyed by content.

One database file in WAL mode (readers such as ``corepool status`` never block the
writer). Tables::

    meta   name -> value       schema version, the function (target) and call mode
    tasks  (digest, occurrence) -> ok, kind, payload (JSON text), line, run, finished
    runs   one row per ``corepool run``: started, ended, state, counts

A task's key is the SHA-256 of its input's canonical JSON plus its occurrence number
(the first, second, ... line with that same content), so duplicate lines are distinct
tasks while editing or reordering the input keeps the finished ones. Results and
errors are stored as JSON text, never pickles: opening a journal runs no code.

The writer batches rows in one transaction and commits on :meth:`Journal.commit`; the
caller commits before it reports the rows, so what was reported is always durable.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "Journal",
    "JournalError",
    "KeyFinder",
    "RunInfo",
    "Summary",
    "read_summary",
]

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    digest BLOB NOT NULL,
    occurrence INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    kind TEXT,
    payload TEXT NOT NULL,
    line INTEGER NOT NULL,
    run INTEGER NOT NULL,
    finished REAL NOT NULL,
    PRIMARY KEY (digest, occurrence)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    state TEXT NOT NULL,
    command TEXT NOT NULL,
    pid INTEGER NOT NULL,
    executed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    pending INTEGER
);
"""


class JournalError(Exception):
    """The journal cannot be used: not a journal, or made for another function."""


def _connect(path: str, *, threads: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not threads)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class Journal:
    """The writer's connection: identity check, lookups, batched task records, runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.conn = _connect(path)
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise JournalError(f"{path} is not a usable corepool journal ({exc})") from None
        if str(mode).lower() != "wal":
            raise JournalError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        self._in_transaction = False
        self.uncommitted = 0

    # Identity -------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """Everything in the ``meta`` table."""
        return dict(self.conn.execute("SELECT name, value FROM meta").fetchall())

    def claim(self, target: str, mode: str, *, force: bool) -> None:
        """Bind this journal to ``target`` and ``mode``, or refuse one made for others."""
        meta = self.meta()
        version = meta.get("version")
        if version is not None and version != SCHEMA_VERSION:
            raise JournalError(
                f"{self.path} was written by another journal format (version {version}); "
                "use another --journal file"
            )
        if "target" in meta and not force:
            differences = []
            if meta["target"] != target:
                differences.append(f"function {meta['target']} (not {target})")
            if meta.get("mode") != mode:
                differences.append(f"mode --{meta.get('mode')} (not --{mode})")
            if differences:
                raise JournalError(
                    f"the journal {self.path} was made for {' and '.join(differences)}. "
                    "Give another --journal (or -o) for this batch, or --force to reuse "
                    "its results anyway"
                )
        self.conn.execute("BEGIN IMMEDIATE")
        for name, value in (("version", SCHEMA_VERSION), ("target", target), ("mode", mode)):
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        self.conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('created', ?)", (_iso(time.time()),)
        )
        self.conn.execute("COMMIT")

    # Tasks ----------------------------------------------------------------------------
    def get(self, digest: bytes, occurrence: int) -> tuple[bool, str] | None:
        """``(ok, payload_json)`` of a finished task, or None."""
        row = self.conn.execute(
            "SELECT ok, payload FROM tasks WHERE digest = ? AND occurrence = ?",
            (digest, occurrence),
        ).fetchone()
        return None if row is None else (bool(row[0]), row[1])

    def record(
        self,
        digest: bytes,
        occurrence: int,
        *,
        ok: bool,
        kind: str | None,
        payload: str,
        line: int,
        run: int,
    ) -> None:
        """Add (or replace, for ``--retry-failed``) a finished task; not yet committed."""
        if not self._in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
        self.conn.execute(
            "INSERT OR REPLACE INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, occurrence, int(ok), kind, payload, line, run, time.time()),
        )
        self.uncommitted += 1

    def commit(self) -> None:
        """Make every recorded task durable."""
        if self._in_transaction:
            self.conn.execute("COMMIT")
            self._in_transaction = False
        self.uncommitted = 0

    # Runs -----------------------------------------------------------------------------
    def start_run(self, command: str) -> int:
        """Record the start of a run; returns its id."""
        self.commit()
        cursor = self.conn.execute(
            "INSERT INTO runs (started, state, command, pid) VALUES (?, 'running', ?, ?)",
            (time.time(), command, os.getpid()),
        )
        return int(cursor.lastrowid or 0)

    def end_run(
        self, run: int, state: str, *, executed: int, failed: int, pending: int | None
    ) -> None:
        """Record how a run ended (``finished``, ``stopped`` or ``interrupted``)."""
        self.commit()
        self.conn.execute(
            "UPDATE runs SET ended = ?, state = ?, executed = ?, failed = ?, pending = ? "
            "WHERE id = ?",
            (time.time(), state, executed, failed, pending, run),
        )

    def close(self) -> None:
        """Commit what is recorded and close the connection."""
        self.commit()
        self.conn.close()


class KeyFinder:
    """The input reader's own connection: occurrence numbers and what is already done.

    Occurrence counts live in a temporary table, so memory stays bounded however long
    the input is. Used by one thread at a time (the pool's input feeder).
    """

    def __init__(self, path: str) -> None:
        # The lock keeps close() (main thread) from racing a lookup of the feeder thread,
        # which still runs for a moment after the pool is stopped.
        self._lock = threading.Lock()
        self.conn = _connect(path, threads=True)
        self.conn.execute("PRAGMA temp_store = FILE")
        self.conn.execute(
            "CREATE TEMP TABLE seen (digest BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
        )

    def occurrence(self, digest: bytes) -> int:
        """1 the first time this content is seen in the input, 2 the second time, ..."""
        with self._lock:
            row = self.conn.execute(
                "INSERT INTO seen VALUES (?, 1) ON CONFLICT (digest) DO UPDATE SET n = n + 1 "
                "RETURNING n",
                (digest,),
            ).fetchone()
        return int(row[0])

    def done(self, digest: bytes, occurrence: int) -> bool | None:
        """True: finished ok; False: finished failed; None: not in the journal."""
        with self._lock:
            row = self.conn.execute(
                "SELECT ok FROM tasks WHERE digest = ? AND occurrence = ?", (digest, occurrence)
            ).fetchone()
        return None if row is None else bool(row[0])

    def close(self) -> None:
        """Close the connection (its temporary table goes with it); later lookups raise."""
        with self._lock:
            self.conn.close()


# Reading a journal for ``corepool status`` ------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """One ``corepool run`` as the journal recorded it."""

    id: int
    started: float
    ended: float | None
    state: str
    command: str
    pid: int
    executed: int
    failed: int
    pending: int | None


@dataclass(frozen=True)
class Summary:
    """What ``corepool status`` reports about a journal."""

    meta: dict[str, str]
    ok: int
    failed_by_kind: dict[str, int]
    first_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    runs: list[RunInfo] = field(default_factory=list)
    last_run_done: int = 0  # tasks the last run finished so far

    @property
    def failed(self) -> int:
        """Failed tasks of every kind."""
        return sum(self.failed_by_kind.values())


def read_summary(path: str, failures: int = 5) -> Summary:
    """Counts, the first ``failures`` failures and the runs of the journal at ``path``."""
    if not os.path.isfile(path):
        raise JournalError(f"no journal at {path}")
    conn = _ro_connect(path)
    try:
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        ok = 0
        by_kind: dict[str, int] = {}
        for is_ok, kind, count in conn.execute(
            "SELECT ok, kind, count(*) FROM tasks GROUP BY ok, kind"
        ):
            if is_ok:
                ok += count
            else:
                by_kind[kind or "exception"] = count
        first = [
            (int(line), json.loads(payload))
            for line, payload in conn.execute(
                "SELECT line, payload FROM tasks WHERE ok = 0 ORDER BY finished LIMIT ?",
                (failures,),
            )
        ]
        runs = [RunInfo(*row) for row in conn.execute(
            "SELECT id, started, ended, state, command, pid, executed, failed, pending "
            "FROM runs ORDER BY id"
        )]
        last_done = 0
        if runs:
            last_done = conn.execute(
                "SELECT count(*) FROM tasks WHERE run = ?", (runs[-1].id,)
            ).fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"{path} is not a corepool journal ({exc})") from None
    finally:
        conn.close()
    return Summary(meta, ok, by_kind, first, runs, last_done)


def _ro_connect(path: str) -> sqlite3.Connection:
    """A connection that never changes the file (status must not create or migrate it)."""
    conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
