"""``corepool run`` keeps the last lines a failed task logged, in its journal row, and
``corepool status`` / ``corepool report`` show them beside the failure."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from test_cli_run import cli, write_lines

TASKS = """
import logging

log = logging.getLogger("jobs.work")

def work(x):
    log.debug("debug %s", x)
    for n in range(30):
        log.info("step %s of %s", n, x)
    if x % 2:
        log.warning("about to fail on %s", x)
        raise ValueError(f"odd {x}")
    return x
"""


def _logged(db: Path) -> dict[int, str | None]:
    with sqlite3.connect(db) as conn:
        return {line: logged for line, logged in conn.execute("SELECT line, logged FROM tasks")}


@pytest.mark.timeout(90)
def test_a_failed_tasks_last_logged_lines_are_in_its_journal_row(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(TASKS)
    write_lines(tmp_path / "in.jsonl", list(range(6)))
    ran = cli("run", "jobs.py:work", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
              "--no-progress", cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr
    # What the runner printed is as before: WARNING and up (logging's last resort), no INFO.
    assert "about to fail on 1" in ran.stderr and "step " not in ran.stderr
    logged = _logged(tmp_path / "out.jsonl.journal.db")
    assert [line for line, text in sorted(logged.items()) if text] == [2, 4, 6]
    for line in (2, 4, 6):
        x = line - 1
        lines = str(logged[line]).splitlines()
        assert len(lines) == 20  # the last 20
        assert lines[0] == f"INFO jobs.work: step 11 of {x}"
        assert lines[-1] == f"WARNING jobs.work: about to fail on {x}"
        assert "debug" not in str(logged[line])
    status = cli("status", "out.jsonl.journal.db", cwd=tmp_path)
    assert "    | WARNING jobs.work: about to fail on 1" in status.stdout, status.stdout
    as_json = json.loads(cli("status", "out.jsonl.journal.db", "--json", cwd=tmp_path).stdout)
    assert "about to fail on 1" in as_json["first_failures"][0]["logged"]
    report = cli("report", "out.jsonl.journal.db", "-o", "r.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "r.html").read_text()
    assert '<details id="log-2"><summary>logged</summary>' in page
    assert "step 29 of 1" in page


@pytest.mark.timeout(90)
@pytest.mark.skipif(sqlite3.sqlite_version_info < (3, 35), reason="DROP COLUMN")
def test_a_journal_without_the_column_is_read_then_migrated(tmp_path: Path) -> None:
    (tmp_path / "jobs.py").write_text(TASKS)
    write_lines(tmp_path / "in.jsonl", list(range(4)))
    cli("run", "jobs.py:work", "in.jsonl", "-o", "out.jsonl", "--no-progress", cwd=tmp_path)
    db = tmp_path / "out.jsonl.journal.db"
    with sqlite3.connect(db) as conn:  # as a journal of the previous version was
        conn.execute("ALTER TABLE tasks DROP COLUMN logged")
    status = cli("status", str(db), cwd=tmp_path)
    assert status.returncode == 0 and "ValueError: odd 1" in status.stdout, status.stderr
    report = cli("report", str(db), "-o", "r.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    again = cli("run", "jobs.py:work", "in.jsonl", "-o", "out.jsonl", "--retry-failed",
                "--no-progress", cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    logged = _logged(db)
    assert logged[1] is None and logged[3] is None  # kept rows: nothing was logged then
    assert "about to fail on 1" in str(logged[2]) and "about to fail on 3" in str(logged[4])
