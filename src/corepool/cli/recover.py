"""A damaged or unwritable journal: telling which, and ``--recover`` for a damaged one.

A journal can be damaged (bytes overwritten by something else, a disk that lied about
a flush): SQLite then answers "database disk image is malformed" or "file is not a
database". Nothing is run on a damaged journal. ``corepool run ... --recover`` moves it
aside to ``JOURNAL.damaged`` (with its ``-wal``) and copies into a new journal every
task it can still read, scanning the table from 256 starting points so that one bad
page loses only the tasks on it; then the batch runs what is missing.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import time
from typing import Any

__all__ = ["DAMAGED_SUFFIX", "damage_advice", "describe_failure", "is_damage", "is_disk_full",
           "salvage"]

DAMAGED_SUFFIX = ".damaged"
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_FULL_CODE = 13  # SQLITE_FULL


def is_damage(exc: BaseException | None) -> bool:
    """``exc`` says the database file is damaged (not busy, not full, not missing)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code: int | None = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` is the disk (or a quota) running out of space."""
    if isinstance(exc, OSError):
        return bool(exc.errno in (errno.ENOSPC, errno.EDQUOT))
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) == _FULL_CODE
    return isinstance(exc, sqlite3.Error) and "disk is full" in str(exc)


def damage_advice(path: str, command: str = "the same command") -> str:
    """What to do about a damaged journal at ``path`` (``command``: the ``corepool run``
    to run again, as the user knows it)."""
    return (f"the journal {path} is damaged. Either move it aside "
            f"(mv {path} {path}{DAMAGED_SUFFIX}) and run again, which runs everything again, "
            f"or run {command} with --recover: it moves the journal aside and keeps "
            "every task it can still read, then runs only what is missing")


def describe_failure(exc: BaseException, journal: str, output: str | None) -> str:
    """One sentence for a journal or output failure: damaged, disk full, or other."""
    detail = f"{type(exc).__name__}: {exc}"
    if is_damage(exc):
        return f"{damage_advice(journal)} ({detail})"
    if is_disk_full(exc):
        where = {os.path.dirname(os.path.abspath(p)) for p in (journal, output) if p}
        return (f"the disk is full ({detail}); free space in {', '.join(sorted(where))} "
                "before you resume")
    return detail


_SQLITE_HEADER = b"SQLite format 3\x00"


def unreadable(command: str, path: str, exc: BaseException) -> str:
    """What ``corepool COMMAND`` says when it cannot read the journal at ``path``. A
    file that is no SQLite database at all is another file given by mistake
    (``out.jsonl`` for ``out.jsonl.journal.db``), not a damaged journal: advice to move
    it aside would rename the user's results."""
    if not is_damage(exc.__cause__):
        return f"corepool {command}: {exc}"
    try:
        with open(path, "rb") as f:
            sqlite = f.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        sqlite = True
    if not sqlite:
        beside = f"{path}.journal.db"
        hint = (f"; the journal of a run writing {path} is {beside}"
                if os.path.isfile(beside) else "")
        return (f"corepool {command}: {path} is not a corepool journal (not an SQLite "
                f"database){hint}")
    advice = damage_advice(path, "the corepool run command that wrote it")
    return f"corepool {command}: {exc}; {advice}"


def salvage(path: str) -> tuple[str, int, int]:
    """Move the damaged journal at ``path`` aside and copy what it still holds into a
    new one; returns where it went, the tasks kept, and the tasks found unreadable (a
    lower bound: a lost page may hide more)."""
    from .journal import Journal

    aside = path + DAMAGED_SUFFIX
    if os.path.exists(aside):
        aside = f"{path}{DAMAGED_SUFFIX}-{time.strftime('%Y%m%d-%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    meta, tasks, errors = _read_what_can_be_read(aside)
    journal = Journal(path)
    try:
        conn = journal.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                         [(k, v) for k, v in meta.items() if k != "version"])
        conn.executemany("INSERT OR REPLACE INTO tasks (digest, occurrence, ok, kind, "
                         "payload, line, run) VALUES (?, ?, ?, ?, ?, ?, ?)", tasks.values())
        conn.execute("COMMIT")
    finally:
        journal.close()
    return aside, len(tasks), errors


def _is_json(text: Any) -> bool:
    """A payload that is JSON text (random bytes inside a readable page are not)."""
    try:
        json.loads(text)
    except (TypeError, ValueError):
        return False
    return isinstance(text, str)


def _read_what_can_be_read(path: str) -> tuple[dict[str, str], dict[Any, tuple[Any, ...]], int]:
    uri = f"file:{os.path.abspath(path)}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error:
        return {}, {}, 1
    meta: dict[str, str] = {}
    tasks: dict[Any, tuple[Any, ...]] = {}
    errors = 0
    try:
        try:
            meta = {str(k): str(v) for k, v in conn.execute("SELECT name, value FROM meta")}
        except sqlite3.Error:
            errors += 1
        # 256 scans over parts of the table: a bad page stops one scan, not the others.
        for where, bounds in _table_parts(conn):
            try:
                for row in conn.execute(
                    "SELECT digest, occurrence, ok, kind, payload, line, run FROM tasks "
                    f"WHERE {where}", bounds,
                ):
                    if isinstance(row[0], bytes) and _is_json(row[4]):
                        tasks[(row[0], row[1])] = row
            except sqlite3.Error:
                errors += 1
    finally:
        conn.close()
    return meta, tasks, errors


def _table_parts(conn: sqlite3.Connection) -> list[tuple[str, tuple[Any, ...]]]:
    """256 ranges covering ``tasks``, each read by its own scan: of row ids (a version
    3 journal's table; later rows win, as they did when written), or of key digests (a
    version 2 journal's WITHOUT ROWID table, ordered by them)."""
    try:
        last = conn.execute("SELECT max(rowid) FROM tasks").fetchone()[0]
    except sqlite3.Error:
        last = None  # no rowid column (version 2), or its last page is unreadable
    if last is not None:
        step = int(last) // 256 + 1
        return [("rowid >= ? AND rowid < ? ORDER BY rowid", (n * step, (n + 1) * step))
                for n in range(256)]
    return [("digest >= ? AND digest < ?",
             (bytes([n]), bytes([n + 1]) if n < 255 else b"\xff" * 17)) for n in range(256)]
