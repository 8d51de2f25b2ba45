"""``corepool run`` against hostile conditions (issue 19, items 5-11 and 14): two runs at
once, a damaged journal, a full disk, output paths that would destroy something, edited
code, a function called with the wrong arity, a read-only journal, and a hung task that
must not hold back the records of the tasks after it. Each runs the real command."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_cli_run import (
    cli,
    executions,
    journal_count,
    rows,
    start,
    wait_for_rows,
    write_lines,
)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only: CI runs as root)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _slow(tmp_path: Path, n: int, delay: float) -> tuple[list[str], Path]:
    log = tmp_path / "log.txt"
    log.touch()
    write_lines(tmp_path / "in.jsonl", [[i, str(log), delay] for i in range(n)])
    return ["run", "cli_tasks:logged", "in.jsonl", "--star", "--workers", "2",
            "--no-progress"], log


@pytest.mark.timeout(90)
def test_a_second_run_on_the_same_journal_or_output_is_refused_at_once(
        tmp_path: Path) -> None:
    args, log = _slow(tmp_path, 400, 0.02)
    first = start(*args, "-o", "out.jsonl", cwd=tmp_path)
    try:
        wait_for_rows(tmp_path / "out.jsonl.journal.db", first, 10)
        for other in (["-o", "out.jsonl"],  # the same journal and output
                      ["-o", "out.jsonl", "--journal", "other.db"],  # the same output
                      ["-o", "b.jsonl", "--journal", "out.jsonl.journal.db"]):  # journal
            began = time.monotonic()
            second = cli(*args, *other, cwd=tmp_path)
            assert second.returncode == 2, (other, second.stderr)
            assert time.monotonic() - began < 10
            assert f"in use by another corepool run (pid {first.pid} on " in second.stderr
            assert "corepool run cli_tasks:logged" in second.stderr  # its command
            assert "Traceback" not in second.stderr
        _, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
    finally:
        first.kill()
    # The first run alone wrote everything: each task once, the output whole, in order.
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [2 * i for i in range(400)]
    assert set(executions(log).values()) == {1}
    assert not (tmp_path / "out.jsonl.lock").exists()
    assert not (tmp_path / "out.jsonl.journal.db.lock").exists()


@pytest.mark.timeout(60)
def test_the_lock_dies_with_a_killed_run(tmp_path: Path) -> None:
    args, _ = _slow(tmp_path, 300, 0.02)
    first = start(*args, "-o", "out.jsonl", cwd=tmp_path)
    wait_for_rows(tmp_path / "out.jsonl.journal.db", first, 10)
    first.kill()
    first.communicate(timeout=10)
    again = cli(*args, "-o", "out.jsonl", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(rows(tmp_path / "out.jsonl")) == 300


def _damage(db: Path, offset: int, size: int) -> None:
    noise = random.Random(19).randbytes(size)
    with open(db, "r+b") as f:
        f.seek(offset)
        f.write(noise)


@pytest.mark.timeout(90)
def test_a_damaged_journal_is_refused_with_what_to_do_and_recover_keeps_the_rest(
        tmp_path: Path) -> None:
    n = 5000
    log = tmp_path / "log.txt"
    write_lines(tmp_path / "in.jsonl", [[i, str(log)] for i in range(n)])
    args = ["run", "cli_tasks:logged", "in.jsonl", "--star", "-o", "out.jsonl",
            "--no-progress"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    db = tmp_path / "out.jsonl.journal.db"
    pages = db.stat().st_size // 4096
    _damage(db, 4096 * (pages // 2), 4096)  # one page in the middle: random bytes
    log.unlink()
    damaged = cli(*args, cwd=tmp_path)
    assert damaged.returncode == 2, damaged.stderr
    assert f"the journal {db.name} is damaged" in damaged.stderr, damaged.stderr
    assert "--recover" in damaged.stderr and f"mv {db.name}" in damaged.stderr
    assert "consistent" not in damaged.stderr and "To resume" not in damaged.stderr
    assert not log.exists()  # nothing ran
    status = cli("status", str(db), cwd=tmp_path)
    assert status.returncode == 2 and "--recover" in status.stderr, status.stderr
    recovered = cli(*args, "--recover", cwd=tmp_path)
    assert recovered.returncode == 0, recovered.stderr
    assert "moved the damaged journal to" in recovered.stderr
    assert (tmp_path / "out.jsonl.journal.db.damaged").exists()
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [2 * i for i in range(n)]
    ran = executions(log)
    assert set(ran.values()) == {1} and 0 < len(ran) < n // 2, len(ran)  # most were kept
    # The header itself overwritten: "not a database", the same advice.
    _damage(db, 0, 100)
    header = cli(*args, cwd=tmp_path)
    assert header.returncode == 2 and "is damaged" in header.stderr, header.stderr


def _summary_ok(stderr: str) -> int:
    found = re.search(r"corepool run: (\d+) rows: (\d+) ok", stderr)
    assert found, stderr
    return int(found.group(2))


@pytest.mark.timeout(120)
def test_a_full_disk_is_reported_and_the_summary_never_claims_more_than_the_journal(
        tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", list(range(30_000)))
    with small_disk(tmp_path / "small", "3m") as disk:
        args = ["run", "cli_tasks:padded", str(tmp_path / "in.jsonl"), "-o",
                str(disk / "out.jsonl"), "--no-progress"]
        full = cli(*args, cwd=tmp_path, timeout=90)
        assert full.returncode == 2, full.stderr
        assert "disk is full" in full.stderr and "Traceback" not in full.stderr, full.stderr
        copy = tmp_path / "copy.db"  # read a copy: the full disk has no room for -shm
        shutil.copy(disk / "out.jsonl.journal.db", copy)
        if (disk / "out.jsonl.journal.db-wal").exists():
            shutil.copy(disk / "out.jsonl.journal.db-wal", str(copy) + "-wal")
        held = journal_count(copy)
        assert _summary_ok(full.stderr) <= held
        with sqlite3.connect(copy) as conn:  # the run's record, as status shows it
            assert conn.execute("SELECT executed FROM runs").fetchone()[0] <= held
        again = cli(*args, cwd=tmp_path, timeout=90)  # still full
        assert again.returncode == 2, again.stderr
        assert "disk is full" in again.stderr and "Traceback" not in again.stderr, again.stderr


@pytest.mark.timeout(60)
def test_output_paths_that_would_destroy_something_are_refused_before_running(
        tmp_path: Path) -> None:
    args, log = _slow(tmp_path, 5, 0.0)
    before = (tmp_path / "in.jsonl").read_bytes()
    same = cli(*args, "-o", "in.jsonl", cwd=tmp_path)
    assert same.returncode == 2 and "is the input file" in same.stderr, same.stderr
    assert (tmp_path / "in.jsonl").read_bytes() == before
    (tmp_path / "folder").mkdir()
    folder = cli(*args, "-o", "folder", cwd=tmp_path)
    assert folder.returncode == 2 and "is a directory" in folder.stderr, folder.stderr
    missing = cli(*args, "-o", "nowhere/out.jsonl", cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert "the folder" in missing.stderr and "does not exist" in missing.stderr
    assert "journal" not in missing.stderr
    assert log.read_text() == ""  # nothing ran


@pytest.mark.timeout(60)
def test_edited_code_is_refused_until_a_new_journal_or_accept_changed_code(
        tmp_path: Path) -> None:
    work = tmp_path / "work.py"
    work.write_text("def square(x):\n    return x * x\n")
    write_lines(tmp_path / "in.jsonl", [1, 2, 3])
    args = ["run", "work.py:square", "in.jsonl", "-o", "out.jsonl", "--no-progress"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    work.write_text("def square(x):\n    return x ** 3\n")
    stale = cli(*args, cwd=tmp_path)
    assert stale.returncode == 2, stale.stderr
    assert "changed since the results" in stale.stderr and "--accept-changed-code" in stale.stderr
    assert "new journal" in stale.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [1, 4, 9]  # untouched
    fresh = cli("run", "work.py:square", "in.jsonl", "-o", "cubes.jsonl", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert [r["result"] for r in rows(tmp_path / "cubes.jsonl")] == [1, 8, 27]
    # Reuse on purpose: the old results stay, new lines use the new code, and the
    # journal now belongs to the new code (no flag needed next time).
    write_lines(tmp_path / "in.jsonl", [1, 2, 3, 4])
    kept = cli(*args, "--accept-changed-code", cwd=tmp_path)
    assert kept.returncode == 0, kept.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [1, 4, 9, 64]
    assert cli(*args, cwd=tmp_path).returncode == 0


@pytest.mark.timeout(60)
def test_two_argument_function_without_star_names_star_and_kwargs(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [[2, 3], [4, 5]])
    wrong = cli("run", "cli_tasks:mul", "in.jsonl", "--no-progress", cwd=tmp_path)
    assert wrong.returncode == 2, wrong.stderr
    assert "needs 2 arguments (a, b)" in wrong.stderr
    assert "--star" in wrong.stderr and "--kwargs" in wrong.stderr
    assert wrong.stdout == ""  # no row ran
    right = cli("run", "cli_tasks:mul", "in.jsonl", "--star", "--no-progress", cwd=tmp_path)
    assert right.returncode == 0 and [json.loads(x)["result"] for x in
                                      right.stdout.splitlines()] == [6, 20]


@pytest.mark.timeout(60)
def test_default_journals_of_unrelated_batches_do_not_collide(tmp_path: Path) -> None:
    star = cli("run", "cli_tasks:add", "--star", "--no-progress", cwd=tmp_path,
               stdin="[1, 2]\n")
    assert star.returncode == 0, star.stderr
    for target in ("cli_tasks:add", "cli_tasks:square"):  # same function, other mode; other
        single = cli("run", target, "--no-progress", cwd=tmp_path, stdin="3\n")
        assert single.returncode == 0, single.stderr
    assert len(list(tmp_path.glob("corepool-run-*.journal.db"))) == 3


def _status_files(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name))


@pytest.mark.timeout(60)
def test_status_leaves_no_files_and_reads_a_read_only_journal(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [1, 2, 3])
    assert cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl",
               cwd=tmp_path).returncode == 0
    db = tmp_path / "out.jsonl.journal.db"
    assert _status_files(db) == [db.name]
    status = cli("status", str(db), cwd=tmp_path)
    assert status.returncode == 0 and "3 tasks: 3 ok" in status.stdout, status.stderr
    assert _status_files(db) == [db.name]  # no -wal, no -shm left behind
    with small_disk(tmp_path / "ro", "1m") as disk:
        shutil.copy(db, disk / db.name)
        remount = subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=False)
        if remount.returncode != 0:
            pytest.skip("cannot remount the tmpfs read-only")
        read_only = cli("status", str(disk / db.name), cwd=tmp_path)
        assert read_only.returncode == 0, read_only.stderr
        assert "3 tasks: 3 ok" in read_only.stdout


@pytest.mark.timeout(90)
def test_finished_rows_are_recorded_while_an_earlier_task_hangs(tmp_path: Path) -> None:
    """Line 0 holds one worker for a minute; the 2,000 after it finish on the other and
    must reach the journal meanwhile, so a kill -9 loses none of them."""
    n = 2000
    log = tmp_path / "log.txt"
    log.touch()
    write_lines(tmp_path / "in.jsonl", [[i, str(log)] for i in range(n)])
    args = ["run", "cli_tasks:zero_waits", "in.jsonl", "--star", "-o", "out.jsonl",
            "--workers", "2", "--no-progress"]
    db = tmp_path / "out.jsonl.journal.db"
    proc = start(*args, cwd=tmp_path)
    try:
        # Up to a chunk of line 0's neighbours can wait with it in its worker.
        wait_for_rows(db, proc, n - 50, limit=45)
        proc.kill()
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    partial = rows(tmp_path / "out.jsonl.partial") if (
        tmp_path / "out.jsonl.partial").exists() else []
    assert partial == []  # the output stays in input order: nothing before line 0
    committed = journal_count(db)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert set(executions(log).values()) == {1}
    log.write_text("")
    # Resume with a timeout for line 0: exactly what the journal did not hold runs.
    again = cli(*args, "--timeout", "2", cwd=tmp_path, timeout=60)
    assert again.returncode == 1, again.stderr
    assert sum(executions(log).values()) == n - committed
    out = rows(tmp_path / "out.jsonl")
    assert out[0]["error"]["kind"] == "timeout"
    assert [r["result"] for r in out[1:]] == list(range(1, n))


@pytest.mark.timeout(120)
def test_a_hung_first_task_lets_the_rest_run_up_to_the_ahead_limit(tmp_path: Path) -> None:
    """While line 0 hangs, the tasks after it run and are recorded until AHEAD_LIMIT of
    them wait for it (their rows are held in memory, in order); then the reader waits,
    and goes on once line 0 times out: no deadlock, every row in order."""
    from corepool.cli.batch import AHEAD_LIMIT

    n = AHEAD_LIMIT + 20_000
    write_lines(tmp_path / "in.jsonl", ["hang", *range(1, n)])
    db = tmp_path / "out.jsonl.journal.db"
    proc = start("run", "cli_tasks:troubled", "in.jsonl", "-o", "out.jsonl", "--timeout",
                 "25", "--workers", "2", "--no-progress", cwd=tmp_path)
    try:
        most = 0
        while True:  # until line 0's timeout is recorded
            time.sleep(0.1)
            assert proc.poll() is None, proc.communicate()
            with contextlib.closing(sqlite3.connect(db)) as conn:
                try:
                    count, timeouts = conn.execute(
                        "SELECT count(*), sum(kind = 'timeout') FROM tasks").fetchone()
                except sqlite3.OperationalError:  # not created yet
                    continue
            if timeouts:
                break
            most = max(most, count)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    # The reader got AHEAD_LIMIT ahead, and no further: recorded, all of those but the
    # chunks still in the pool's window when the reader stopped.
    assert AHEAD_LIMIT * 3 // 4 <= most <= AHEAD_LIMIT, most
    out = rows(tmp_path / "out.jsonl")
    assert out[0]["error"]["kind"] == "timeout"
    assert [r["result"] for r in out[1:]] == list(range(1, n))
