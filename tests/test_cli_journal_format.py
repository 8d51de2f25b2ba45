"""The journal's format: a first run appends without the key's index and the next run
builds it; occurrences numbered as results come; version 2 journals still resume.

Every test runs ``corepool run`` for real (subprocesses, real SQLite files) and checks
the journal's rows and the output, the way a resumed batch relies on them.
"""

from __future__ import annotations

import collections
import sqlite3
from pathlib import Path

import pytest

from corepool.cli.jsonl import canonical_digest
from test_cli_run import (
    cli,
    executions,
    journal_count,
    rows,
    start,
    wait_for_rows,
    write_lines,
)


def _indexes(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'")}


def _keys(db: Path) -> collections.Counter[tuple[bytes, int]]:
    with sqlite3.connect(db) as conn:
        return collections.Counter(
            (bytes(d), o) for d, o in conn.execute("SELECT digest, occurrence FROM tasks"))


def _occurrences(values: list[object]) -> collections.Counter[tuple[bytes, int]]:
    """The keys a journal of ``values`` must hold: each content once per line with it."""
    seen: collections.Counter[bytes] = collections.Counter()
    keys: collections.Counter[tuple[bytes, int]] = collections.Counter()
    for value in values:
        digest = canonical_digest(value)
        seen[digest] += 1
        keys[(digest, seen[digest])] += 1
    return keys


@pytest.mark.timeout(60)
def test_a_first_run_appends_and_the_next_run_builds_the_index_and_reuses_all(
        tmp_path: Path) -> None:
    values = [i % 7 for i in range(700)]  # every content 100 times
    write_lines(tmp_path / "in.jsonl", values)
    args = ["run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
            "--no-progress"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    db = tmp_path / "out.jsonl.journal.db"
    expected = [{"index": i, "ok": True, "result": v * v} for i, v in enumerate(values)]
    assert rows(tmp_path / "out.jsonl") == expected
    assert _indexes(db) == set()  # appended: no index yet
    assert _keys(db) == _occurrences(values)  # one task per line, numbered 1..100 each
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "ran 0" in again.stderr and "700 from the journal" in again.stderr
    assert rows(tmp_path / "out.jsonl") == expected
    assert _indexes(db) == {"tasks_key"}
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone() == ("3",)
        plan = " ".join(str(row) for row in conn.execute(
            "EXPLAIN QUERY PLAN SELECT ok FROM tasks WHERE digest = ? AND occurrence = ?",
            (b"x", 1)))
        assert "tasks_key" in plan, plan


@pytest.mark.timeout(60)
def test_a_first_run_killed_midway_resumes_with_duplicates_none_lost_none_twice(
        tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.touch()
    inputs = [[i % 40, str(log), 0.01] for i in range(240)]  # each content 6 times
    write_lines(tmp_path / "in.jsonl", inputs)
    args = ["run", "cli_tasks:logged", "in.jsonl", "-o", "out.jsonl", "--star",
            "--workers", "2", "--no-progress"]
    db = tmp_path / "out.jsonl.journal.db"
    proc = start(*args, cwd=tmp_path)
    wait_for_rows(db, proc, 60)
    proc.kill()
    proc.communicate(timeout=10)
    committed = journal_count(db)
    assert 60 <= committed < len(inputs)
    assert _indexes(db) == set()  # killed while appending
    ran_before = sum(executions(log).values())
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{committed} from the journal" in done.stderr
    assert rows(tmp_path / "out.jsonl") == [
        {"index": i, "ok": True, "result": 2 * x} for i, (x, _, _) in enumerate(inputs)]
    assert _keys(db) == _occurrences(inputs)  # every line one task, none twice
    assert _indexes(db) == {"tasks_key"}
    # The resume ran exactly what the journal lacked.
    assert sum(executions(log).values()) - ran_before == len(inputs) - committed


@pytest.mark.timeout(60)
def test_a_key_twice_in_an_unindexed_journal_keeps_the_last_row(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [1, 2, 3])
    args = ["run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", "--no-progress"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    db = tmp_path / "out.jsonl.journal.db"
    with sqlite3.connect(db) as conn:  # a row for line 2 again, with another result
        conn.execute("INSERT INTO tasks (digest, occurrence, ok, kind, payload, line, run) "
                     "SELECT digest, occurrence, ok, kind, '40', line, run FROM tasks "
                     "WHERE line = 2")
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [1, 40, 9]
    assert journal_count(db) == 3 and _indexes(db) == {"tasks_key"}


@pytest.mark.timeout(60)
def test_failures_bad_lines_and_unwritable_results_of_a_first_run_come_back_the_same(
        tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text(
        '"ok"\n"raise"\n{oops\n"object"\n"ok"\n\n"crash"\n[1, 2]\n"raise"\n')
    args = ["run", "cli_tasks:troubled", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
            "--no-progress"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr
    out = rows(tmp_path / "out.jsonl")
    kinds = [(r["index"], r["ok"], r.get("error", {}).get("kind"),
              r.get("error", {}).get("type")) for r in out]
    assert kinds == [
        (0, True, None, None), (1, False, "exception", "ValueError"),
        (2, False, "input", "JSONDecodeError"), (3, False, "exception", "TypeError"),
        (4, True, None, None), (5, False, "crash", "WorkerCrashed"),
        (6, True, None, None), (7, False, "exception", "ValueError"),
    ]
    assert out[2]["error"]["line"] == 3 and "line 3" in out[2]["error"]["message"]
    assert "cannot be written as JSON" in out[3]["error"]["message"]
    db = tmp_path / "out.jsonl.journal.db"
    values = ["ok", "raise", "object", "ok", "crash", [1, 2], "raise"]
    assert _keys(db) == _occurrences(values)  # the bad line is no task
    again = cli(*args, cwd=tmp_path)  # the failed ones are kept, not run again
    assert again.returncode == 1, again.stderr
    assert "ran 0" in again.stderr
    assert rows(tmp_path / "out.jsonl") == out


def _as_version_2(db: Path, into: Path) -> None:
    """Copy a journal into the format of version 2 (the WITHOUT ROWID table)."""
    with sqlite3.connect(into) as new, sqlite3.connect(db) as old:
        new.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE tasks (digest BLOB NOT NULL, occurrence INTEGER NOT NULL, "
            "ok INTEGER NOT NULL, kind TEXT, payload TEXT NOT NULL, line INTEGER NOT NULL, "
            "run INTEGER NOT NULL, finished INTEGER, micros INTEGER, logged TEXT, "
            "PRIMARY KEY (digest, occurrence)) WITHOUT ROWID;")
        new.executemany("INSERT INTO meta VALUES (?, ?)",
                        [(k, "2" if k == "version" else v)
                         for k, v in old.execute("SELECT name, value FROM meta")])
        new.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        old.execute("SELECT digest, occurrence, ok, kind, payload, line, "
                                    "run, finished, micros, logged FROM tasks"))


@pytest.mark.timeout(60)
def test_a_version_2_journal_is_resumed_and_stays_version_2(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [1, 2, 2, 3])
    made = ["run", "cli_tasks:square", "in.jsonl", "-o", "made.jsonl", "--no-progress"]
    assert cli(*made, cwd=tmp_path).returncode == 0
    _as_version_2(tmp_path / "made.jsonl.journal.db", tmp_path / "old.db")
    write_lines(tmp_path / "in.jsonl", [1, 2, 2, 3, 2, 4])
    args = ["run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", "--journal", "old.db",
            "--no-progress"]
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ran 2" in done.stderr and "4 from the journal" in done.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [1, 4, 4, 9, 4, 16]
    db = tmp_path / "old.db"
    assert _keys(db) == _occurrences([1, 2, 2, 3, 2, 4])
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'version'").fetchone() == ("2",)
        assert "WITHOUT ROWID" in conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
    assert _indexes(db) == set()  # its table is the key's B-tree: no index added
