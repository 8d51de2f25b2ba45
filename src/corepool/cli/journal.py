"""The SQLite journal of ``corepool run``: every finished task, durable, keyed by content.

One database file in WAL mode (readers such as ``corepool status`` never block the
writer). Tables::

    meta   name -> value       schema version, the function (target), call mode and
                               the fingerprint of its code (see checks.code_fingerprint)
    tasks  (digest, occurrence) -> ok, kind, payload (JSON text), line, run, and when
           it finished (``finished``, epoch milliseconds) and how long its call took in
           the worker (``micros``, microseconds; NULL when unknown: a crash, an
           exception). Integers, not REALs: smaller rows, a cheaper insert; and for
           a failed task the last lines it logged (``logged``, text; see tasklog.py)
    runs   one row per ``corepool run``: started, ended, state, counts, ``retries`` (the
           attempts a failed task is allowed), ``retried`` (attempts run again so far),
           and while it runs its progress (rows written of ``total``, recent rate), for
           ``status``
    bad_lines  (run, line) -> payload: the input lines a run found unusable (kind
           ``input``); they never run, so they are not tasks

``tasks`` is a plain table with a unique index on its key (``tasks_key``); a run on a
journal with no task yet appends without the index, which the next writer builds (see
:meth:`Journal.append_only`). Version 2 journals keep their WITHOUT ROWID table keyed by
(digest, occurrence) and are used as they are.

Journals of an older version lack ``finished``, ``micros``, ``logged``, ``retries``,
``retried`` and ``bad_lines``: the writer adds them when it opens one (old rows keep
NULL there), and the readers (``status``, ``report``, ``dashboard``) do without them.

A task's key is the SHA-256 (16 bytes of it) of its input's canonical JSON plus its
occurrence number
(the first, second, ... line with that same content), so duplicate lines are distinct
tasks while editing or reordering the input keeps the finished ones. Results and
errors are stored as JSON text, never pickles: opening a journal runs no code.

The writer adds finished tasks in batches, one transaction each
(:meth:`Journal.commit_tasks`); the caller commits before it reports the rows, so what
was reported is always durable.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "TASK_COLUMNS",
    "Journal",
    "JournalError",
    "KeyFinder",
    "OkRecord",
    "RunInfo",
    "RunProgress",
    "Summary",
    "TaskRecord",
    "read_summary",
    "ro_connect",
    "table_columns",
]

SCHEMA_VERSION = "3"
# Version 2 kept ``tasks`` as a WITHOUT ROWID table keyed by (digest, occurrence); such
# journals are still read, resumed and written as they are (see Journal.keyed_table).
_READABLE_VERSIONS = ("2", SCHEMA_VERSION)

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
    finished INTEGER,
    micros INTEGER,
    logged TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    started REAL NOT NULL,
    ended REAL,
    state TEXT NOT NULL,
    command TEXT NOT NULL,
    pid INTEGER NOT NULL,
    executed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    pending INTEGER,
    total INTEGER,
    rows INTEGER NOT NULL DEFAULT 0,
    rate REAL,
    updated REAL,
    retries INTEGER,
    retried INTEGER
);
CREATE TABLE IF NOT EXISTS bad_lines (
    run INTEGER NOT NULL,
    line INTEGER NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (run, line)
) WITHOUT ROWID;
"""
# Columns added to ``runs`` after the first version; older journals get them on open.
_ADDED_COLUMNS = {
    "runs": {"total": "INTEGER", "rows": "INTEGER NOT NULL DEFAULT 0", "rate": "REAL",
             "updated": "REAL", "retries": "INTEGER",
             "retried": "INTEGER"},
    "tasks": {"finished": "INTEGER", "micros": "INTEGER", "logged": "TEXT"},
}
# ``logged`` is not among the columns of every insert: only the few failed tasks that
# logged lines go in with it (one more column in every insert costs the runner ~10%).
TASK_COLUMNS = "digest, occurrence, ok, kind, payload, line, run, finished, micros"
_TASK_VALUES = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
_LOGGED_TASK_ROW = (f"INSERT OR REPLACE INTO tasks ({TASK_COLUMNS}, logged) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
# The key's index. A run that starts on a journal without tasks drops it and appends
# rows (an insert at the end of the table costs about half of one into a B-tree keyed
# by random digests); the next writer to open the journal builds it again, in one
# sorted pass, before it looks anything up.
_KEY_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS tasks_key ON tasks (digest, occurrence)"

#: A finished task as :meth:`Journal.commit_tasks` takes it:
#: ``(digest, occurrence, ok, kind, payload, line, run, finished, micros)``.
TaskRecord = tuple[bytes, int, bool, "str | None", str, int, int, int, "int | None"]
#: A task that succeeded, as :meth:`Journal.commit_tasks` takes it (its ``ok``, ``kind``
#: and ``run`` go without saying): ``(digest, occurrence, payload, line, finished, micros)``.
OkRecord = tuple[bytes, int, str, int, int, "int | None"]
# An ok row's constant columns are written in the statement rather than bound for each
# row: binding is a third of the insert's cost.
_OK_VALUES = "(?, ?, 1, NULL, ?, ?, {run}, ?, ?)"
#: The lines a failed task logged: ``(lines, digest, occurrence)``.
LoggedLines = tuple[str, bytes, int]


class JournalError(Exception):
    """The journal cannot be used: not a journal, or made for another function."""


def _connect(path: str, *, threads: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=not threads)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _max_variables(conn: sqlite3.Connection) -> int:
    """How many ``?`` one statement may hold."""
    getlimit = getattr(conn, "getlimit", None)  # Python 3.11+
    limit = getattr(sqlite3, "SQLITE_LIMIT_VARIABLE_NUMBER", None)
    if getlimit is not None and limit is not None:
        return int(getlimit(limit))
    return 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


class Journal:
    """The writer's connection: identity check, lookups, batched task records, runs."""

    def __init__(self, path: str) -> None:
        self.path = path
        # Used by one thread at a time: the runner's, then its writer's, then again the
        # runner's once the writer is done.
        try:
            self.conn = _connect(path, threads=True)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {path} ({exc})") from exc
        try:
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in self.conn.execute(f"PRAGMA table_info({table})")}
                for name, declaration in columns.items():
                    if name not in have:
                        self.conn.execute(
                            f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise JournalError(f"{path} is not a usable corepool journal ({exc})") from exc
        if str(mode).lower() != "wal":
            raise JournalError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        self._max_variables = _max_variables(self.conn)
        sql = self.conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchone()
        #: A version 2 journal: the table itself is keyed (no index to drop or build).
        self.keyed_table = "WITHOUT ROWID" in str(sql[0] if sql else "").upper()
        self.appending = False  # see append_only()

    def check(self) -> None:
        """Raise ``sqlite3.DatabaseError`` when the file's structure is damaged."""
        problems = [row[0] for row in self.conn.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError(
                "database disk image is malformed: " + "; ".join(map(str, problems)))

    # Identity -------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """Everything in the ``meta`` table."""
        return dict(self.conn.execute("SELECT name, value FROM meta").fetchall())

    def claim(self, target: str, mode: str, code: str | None, *, force: bool,
              accept_changed_code: bool) -> None:
        """Bind this journal to ``target``, ``mode`` and the ``code`` fingerprint, or
        refuse one made for others (``force``) or by other code (``accept_changed_code``)."""
        meta = self.meta()
        version = meta.get("version")
        if version is not None and version not in _READABLE_VERSIONS:
            raise JournalError(
                f"{self.path} was written by another journal format (version {version}); "
                "use another --journal file"
            )
        if "target" in meta and not force:
            differences = []
            if meta["target"] != target:
                differences.append(f"function {meta['target']} (this run: {target})")
            if meta.get("mode") != mode:
                differences.append(f"{_mode(meta.get('mode', '?'))} (this run: {_mode(mode)})")
            if differences:
                raise JournalError(
                    f"the journal {self.path} was made for {' and '.join(differences)}. "
                    "Give another --journal (or -o) for this batch, or --force to reuse "
                    "its results anyway"
                )
        old_code = meta.get("code")
        if (old_code is not None and code is not None and old_code != code
                and not accept_changed_code and not self.is_empty()):
            raise JournalError(
                f"the code of {target} changed since the results in {self.path} were "
                "computed (its module's source differs), so they may be stale. Either start "
                "a new journal (another -o or --journal, or move this one aside) to run "
                "everything with the new code, or add --accept-changed-code to keep the "
                "journal's results and run only what is missing with the new code"
            )
        self.conn.execute("BEGIN IMMEDIATE")
        values = [("target", target), ("mode", mode)]
        for name, value in values + ([("code", code)] if code is not None else []):
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
        self.conn.execute(  # a version 2 journal stays one: its table is keyed
            "INSERT OR IGNORE INTO meta VALUES ('version', ?)",
            ("2" if self.keyed_table else SCHEMA_VERSION,))
        self.conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('created', ?)", (_iso(time.time()),)
        )
        self.conn.execute("COMMIT")

    # Tasks ----------------------------------------------------------------------------
    def is_empty(self) -> bool:
        """No task recorded yet (a first run needs no lookups)."""
        return self.conn.execute("SELECT 1 FROM tasks LIMIT 1").fetchone() is None

    def append_only(self) -> None:
        """This run starts with no task in the journal, so none it adds can replace
        another: drop the key's index and append rows; the next writer to open the
        journal builds the index again (:meth:`index_keys`)."""
        if not self.keyed_table:
            self.conn.execute("DROP INDEX IF EXISTS tasks_key")
            self.appending = True

    def index_keys(self) -> None:
        """Make sure the key's index exists before tasks are looked up or replaced.

        A run that appended (:meth:`append_only`) and was stopped, however, left the
        journal without it. A key twice is not expected (one writer, each task once),
        but if a damaged run left one, the row added last is the one kept.
        """
        if self.keyed_table:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            try:
                self.conn.execute(_KEY_INDEX)
            except sqlite3.IntegrityError:
                self.conn.execute(
                    "DELETE FROM tasks WHERE rowid NOT IN "
                    "(SELECT max(rowid) FROM tasks GROUP BY digest, occurrence)")
                self.conn.execute(_KEY_INDEX)
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def commit_tasks(self, ok: list[OkRecord], failed: list[TaskRecord], run: int,
                     progress: RunProgress, bad: list[tuple[int, str]] | None = None,
                     logged: list[LoggedLines] | None = None) -> None:
        """Add (or replace, for ``--retry-failed``) finished tasks (``ok``, ``failed``),
        the ``bad`` input lines ``(line, payload)``, the lines failed tasks ``logged``
        and the run's progress, durably, in one transaction.
        The records are sorted in place when they go into a keyed B-tree: keys in order
        make its insert cheaper."""
        if not self.appending:
            ok.sort()
            failed.sort()
        if logged:  # few (failed tasks that logged): they go in with their lines
            lines = {(digest, occurrence): text for text, digest, occurrence in logged}
            with_lines = [(*record, lines[record[:2]]) for record in failed
                          if record[:2] in lines]
            failed = [record for record in failed if record[:2] not in lines]
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            self._insert(ok, _OK_VALUES.format(run=int(run)), 6)
            self._insert(failed, _TASK_VALUES, 9)
            if logged:
                self.conn.executemany(_LOGGED_TASK_ROW, with_lines)
            if bad:
                self.conn.executemany("INSERT OR REPLACE INTO bad_lines VALUES (?, ?, ?)",
                                      [(run, line, payload) for line, payload in bad])
            self.conn.execute(
                "UPDATE runs SET rows = ?, executed = ?, failed = ?, rate = ?, updated = ?, "
                "retried = ? WHERE id = ?",
                (progress.rows, progress.executed, progress.failed, progress.rate,
                 time.time(), progress.retried, run),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:  # the records stay with the caller for a retry
                self.conn.execute("ROLLBACK")
            raise

    def _insert(self, records: list[Any], values: str, width: int) -> None:
        """Insert ``records`` (of ``width`` values each, placed by ``values``), many rows
        per statement: SQLite releases the GIL for each statement it runs, and getting
        it back per row costs more than the insert when the runner's other threads are
        busy."""
        head = f"INSERT OR REPLACE INTO tasks ({TASK_COLUMNS}) VALUES "
        size = max(1, min(5000, self._max_variables // width))
        whole = len(records) - len(records) % size
        if whole:
            statement = head + ", ".join([values] * size)
            for start in range(0, whole, size):
                self.conn.execute(
                    statement, list(itertools.chain.from_iterable(records[start:start + size]))
                )
        if whole < len(records):
            self.conn.executemany(head + values, records[whole:])

    # Runs -----------------------------------------------------------------------------
    def start_run(self, command: str, total: int | None, retries: int = 0) -> int:
        """Record the start of a run (``total``: input rows, if known; ``retries``: more
        attempts a failed task gets); returns its id."""
        cursor = self.conn.execute(
            "INSERT INTO runs (started, state, command, pid, total, retries) "
            "VALUES (?, 'running', ?, ?, ?, ?)",
            (time.time(), command, os.getpid(), total, retries),
        )
        return int(cursor.lastrowid or 0)

    def end_run(self, run: int, state: str, progress: RunProgress, pending: int | None) -> None:
        """Record how a run ended (``finished``, ``stopped``, ``interrupted``, ``failed``)."""
        self.conn.execute(
            "UPDATE runs SET ended = ?, state = ?, rows = ?, executed = ?, failed = ?, "
            "pending = ?, rate = NULL, updated = ?, retried = ? WHERE id = ?",
            (time.time(), state, progress.rows, progress.executed, progress.failed, pending,
             time.time(), progress.retried, run),
        )

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


@dataclass(frozen=True)
class RunProgress:
    """How far a run got: rows written, tasks run and failed, recent rows per second,
    attempts run again (after an exception, a timeout or a crash)."""

    rows: int
    executed: int
    failed: int
    rate: float | None = None
    retried: int = 0


class KeyFinder:
    """The input reader's own connection: occurrence numbers, what is already done, and
    a temporary table where output rows that need no run wait when the reader is far
    ahead (:meth:`spill`).

    Occurrence counts are kept in memory for up to :attr:`MEMORY_KEYS` distinct inputs;
    past that they go, sorted, in one batch to a temporary table on disk, and a fixed
    bit filter (4 MiB) answers "never seen" for most later lines without asking SQLite.
    So memory stays bounded however long the input is, and an input of up to a few
    hundred thousand lines never touches the table. Used by one thread at a time (the
    pool's input feeder).
    """

    FILTER_BITS = 1 << 25
    MEMORY_KEYS = 250_000

    def __init__(self, path: str, *, lookups: bool) -> None:
        # The lock keeps close() (main thread) from racing a query of the feeder thread,
        # which still runs for a moment after the pool is stopped.
        self._lock = threading.Lock()
        self.conn = _connect(path, threads=True)
        self.conn.execute("PRAGMA temp_store = FILE")
        self.conn.execute(
            "CREATE TEMP TABLE seen (digest BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID"
        )
        self.conn.execute(
            "CREATE TEMP TABLE waiting (seq INTEGER PRIMARY KEY, ok INTEGER NOT NULL, "
            "kind TEXT, reused INTEGER NOT NULL, row TEXT NOT NULL)"
        )
        self._next_seq = 0
        self._lookups = lookups
        self._filter = bytearray(self.FILTER_BITS // 8)
        self._counts: dict[bytes, int] = {}
        self._spilled = False

    @property
    def counts(self) -> dict[bytes, int] | None:
        """The occurrence counts themselves while counting is all :meth:`find` would
        do (no lookups: a first run; nothing moved to disk yet), else None.

        The reader may then count each line itself, ``counts[d] = counts.get(d, 0) + 1``
        (a method call per line costs as much), and must call :meth:`spill_counts` once
        it holds :attr:`MEMORY_KEYS` keys; :meth:`find` takes over from there.
        """
        return None if self._lookups or self._spilled else self._counts

    def spill_counts(self) -> None:
        """Move the counts to disk (see :attr:`counts`)."""
        self._spill()

    def find(self, digest: bytes) -> tuple[int, tuple[bool, str] | None]:
        """``(occurrence, done)`` for the next input line with this content.

        ``occurrence`` is 1 the first time the content is seen in the input, 2 the
        second time, ...; ``done`` is ``(ok, payload_json)`` when the journal holds that
        task, else None (always None when the journal was empty at the start).
        """
        counts = self._counts
        occurrence = counts.get(digest)
        if occurrence is None:
            occurrence = self._spilled_count(digest) if self._spilled else 0
        occurrence += 1
        counts[digest] = occurrence
        if len(counts) >= self.MEMORY_KEYS:
            self._spill()
        if not self._lookups:
            return occurrence, None
        with self._lock:
            row = self.conn.execute(
                "SELECT ok, payload FROM tasks WHERE digest = ? AND occurrence = ?",
                (digest, occurrence),
            ).fetchone()
        return occurrence, None if row is None else (bool(row[0]), row[1])

    def _spilled_count(self, digest: bytes) -> int:
        bit = int.from_bytes(digest[:4], "little") & (self.FILTER_BITS - 1)
        if not self._filter[bit >> 3] & (1 << (bit & 7)):
            return 0  # certainly not in the table
        with self._lock:
            row = self.conn.execute(
                "SELECT n FROM seen WHERE digest = ?", (digest,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def _spill(self) -> None:
        """Move the counts kept in memory to the table (sorted: a cheaper B-tree insert)."""
        for digest in self._counts:
            bit = int.from_bytes(digest[:4], "little") & (self.FILTER_BITS - 1)
            self._filter[bit >> 3] |= 1 << (bit & 7)
        with self._lock:
            self.conn.executemany(
                "INSERT INTO seen VALUES (?, ?) ON CONFLICT (digest) DO UPDATE SET "
                "n = excluded.n",
                sorted(self._counts.items()),
            )
        self._counts.clear()
        self._spilled = True

    def spill(self, rows: list[tuple[bool, str | None, bool, str]]) -> tuple[int, int]:
        """Keep output rows ``(ok, kind, reused, row)`` on disk, in order, until
        :meth:`unspill`; returns the range of their sequence numbers."""
        first = self._next_seq
        self._next_seq += len(rows)
        with self._lock:
            self.conn.executemany(
                "INSERT INTO waiting VALUES (?, ?, ?, ?, ?)",
                [(first + i, *row) for i, row in enumerate(rows)],
            )
        return first, self._next_seq - 1

    def unspill(self, first: int, last: int) -> list[tuple[bool, str | None, bool, str]]:
        """The rows of one :meth:`spill`, in order, removed from the disk."""
        with self._lock:
            rows = [(bool(ok), kind, bool(reused), row) for ok, kind, reused, row in
                    self.conn.execute(
                        "SELECT ok, kind, reused, row FROM waiting WHERE seq BETWEEN ? AND ? "
                        "ORDER BY seq", (first, last))]
            self.conn.execute("DELETE FROM waiting WHERE seq BETWEEN ? AND ?", (first, last))
        return rows

    def close(self) -> None:
        """Close the connection (its temporary tables go with it); later lookups raise."""
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
    total: int | None
    rows: int
    rate: float | None
    updated: float | None


@dataclass(frozen=True)
class Summary:
    """What ``corepool status`` reports about a journal."""

    meta: dict[str, str]
    ok: int
    failed_by_kind: dict[str, int]
    first_failures: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    runs: list[RunInfo] = field(default_factory=list)
    #: The input lines the last run found unusable (not tasks: not in ``failed``), by
    #: line number, at most a few.
    bad_lines: list[int] = field(default_factory=list)
    bad_count: int = 0

    @property
    def failed(self) -> int:
        """Failed tasks of every kind."""
        return sum(self.failed_by_kind.values())


def read_summary(path: str, failures: int = 5) -> Summary:
    """Counts, the first ``failures`` failures and the runs of the journal at ``path``."""
    if not os.path.isfile(path):
        raise JournalError(f"no journal at {path}")
    conn = ro_connect(path)
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
        logged = "logged" if "logged" in table_columns(conn, "tasks") else "NULL"
        first = [
            (int(line), {**json.loads(payload), **({"logged": lines} if lines else {})})
            for line, payload, lines in conn.execute(
                f"SELECT line, payload, {logged} FROM tasks WHERE ok = 0 "
                "ORDER BY run, line LIMIT ?",
                (failures,),
            )
        ]
        have = table_columns(conn, "runs")
        columns = ", ".join(  # a journal of the first version lacks the progress columns
            name if name in have else "NULL"
            for name in ("id", "started", "ended", "state", "command", "pid", "executed",
                         "failed", "pending", "total", "rows", "rate", "updated")
        )
        runs = [RunInfo(*row) for row in conn.execute(f"SELECT {columns} FROM runs ORDER BY id")]
        bad: list[int] = []
        bad_count = 0
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if runs and "bad_lines" in tables:  # an older journal has no such table
            last = runs[-1].id
            bad_count = conn.execute("SELECT count(*) FROM bad_lines WHERE run = ?",
                                     (last,)).fetchone()[0]
            bad = [int(line) for (line,) in conn.execute(
                "SELECT line FROM bad_lines WHERE run = ? ORDER BY line LIMIT ?",
                (last, failures))]
    except sqlite3.DatabaseError as exc:
        raise JournalError(f"cannot read the journal {path} ({exc})") from exc
    finally:
        conn.close()
    return Summary(meta, ok, by_kind, first, runs, bad, int(bad_count))


def table_columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns of ``table`` (an older journal, read as it is, lacks some)."""
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def ro_connect(path: str) -> sqlite3.Connection:
    """A connection that never changes the file nor adds files beside it (status must
    not create, migrate or litter a journal), and that works on a read-only one.

    Without a ``-wal`` file beside it the journal is complete in its main file, which
    is opened as immutable: SQLite then creates no ``-wal``/``-shm`` (a plain read-only
    open of a WAL database does, and fails where it cannot). With a ``-wal`` (a run is
    writing, or was killed) it is opened read-only to see the latest commits, falling
    back to the main file alone when the directory cannot be written.
    """
    full = os.path.abspath(path)
    immutable = f"file:{full}?immutable=1"
    if not os.path.exists(full + "-wal"):
        return sqlite3.connect(immutable, uri=True)
    conn = sqlite3.connect(f"file:{full}?mode=ro", uri=True)
    conn.execute("PRAGMA busy_timeout = 10000")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:  # no room or no right to open the -shm
        conn.close()
        return sqlite3.connect(immutable, uri=True)
    return conn


def _mode(mode: str) -> str:
    return "one value per line" if mode == "single" else f"--{mode}"


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))
