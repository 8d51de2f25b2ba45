"""``corepool report`` and ``corepool dashboard`` over HTTP, on real journals."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dashboard_helpers import (
    HOSTILE,
    TASKS,
    corepool,
    env,
    fetch,
    journal_counts,
    serve,
    start,
    stop,
    troubled_batch,
    wait_for_journal,
)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return troubled_batch(tmp_path_factory.mktemp("batch"))


def test_report_counts_every_kind_and_escapes_inputs(journal: Path, tmp_path: Path) -> None:
    before = sorted(os.listdir(journal.parent))
    done = corepool("report", str(journal), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(journal.parent)) == before  # nothing created beside it
    page = (tmp_path / "r.html").read_text()
    counts = journal_counts(journal)
    assert set(counts) >= {"failed-exception", "failed-timeout", "failed-crash",
                           "failed-input"}
    for key, value in counts.items():
        assert f'data-key="{key}"><b>{value}</b>' in page
    assert HOSTILE not in page
    assert "bad input &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from anywhere
    assert page.count('<rect class="bar') > 3


def test_report_of_a_journal_without_timing_data(tmp_path: Path) -> None:
    """A journal of the format before task timings (no finished/seconds, no retries,
    no bad_lines) still reports; a run on it adds the columns and keeps the old rows."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE tasks (digest BLOB NOT NULL, occurrence INTEGER NOT NULL, "
            "ok INTEGER NOT NULL, kind TEXT, payload TEXT NOT NULL, line INTEGER NOT NULL, "
            "run INTEGER NOT NULL, PRIMARY KEY (digest, occurrence)) WITHOUT ROWID;"
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL, "
            "state TEXT NOT NULL, command TEXT NOT NULL, pid INTEGER NOT NULL, "
            "executed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, "
            "pending INTEGER);"
            "INSERT INTO meta VALUES ('version', '2'), ('target', 'tasks.py:work'), "
            "('mode', 'single');"
            "INSERT INTO runs VALUES (1, 1.0, 2.0, 'finished', 'corepool run', 1, 2, 1, 0);")
        conn.execute("INSERT INTO tasks VALUES (?, 1, 1, NULL, '4', 1, 1)", (b"a" * 16,))
        conn.execute("INSERT INTO tasks VALUES (?, 1, 0, 'exception', ?, 2, 1)",
                     (b"b" * 16, json.dumps({"kind": "exception", "type": "E",
                                             "message": "old", "traceback": None})))
    done = corepool("report", str(db), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "r.html").read_text()
    assert 'data-key="ok"><b>1</b>' in page and 'data-key="failed"><b>1</b>' in page
    assert "no timing data in this journal" in page


def test_report_refuses_what_is_not_a_journal(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_text("not sqlite")
    done = corepool("report", str(tmp_path / "x.db"), "-o", "r.html", cwd=tmp_path)
    assert done.returncode == 2 and "corepool report:" in done.stderr
    assert not (tmp_path / "r.html").exists()


def test_dashboard_serves_get_only_and_reads_only(journal: Path) -> None:
    before = sorted(os.listdir(journal.parent))
    proc, url = serve(journal)
    try:
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        status, body = fetch(url + "api/view")
        assert status == 200
        data = json.loads(body)
        counts = journal_counts(journal)
        assert data["view"]["summary"]["done"] == counts["done"]
        assert data["view"]["summary"]["failed_by_kind"]["timeout"] == 1
        assert f'data-key="failed"><b>{counts["failed"]}</b>' in data["html"]
        assert fetch(url + "nothing")[0] == 404
        for method in ("POST", "PUT", "DELETE"):
            assert fetch(url + "api/view", method)[0] == 501
        # A page of another site that resolves its name to 127.0.0.1 (DNS rebinding)
        # sends its own name as Host: refused.
        port = url.rsplit(":", 1)[1].strip("/")
        for host in (f"evil.example:{port}", "evil.example"):
            assert fetch(url + "api/view", headers={"Host": host})[0] == 403
        assert fetch(url + "api/view", headers={"Host": f"localhost:{port}"})[0] == 200
    finally:
        stop(proc)
    assert sorted(os.listdir(journal.parent)) == before


def test_another_address_needs_the_token(journal: Path) -> None:
    proc, url = serve(journal, "--host", "127.0.0.2")
    try:
        assert url.startswith("http://127.0.0.2:") and "?token=" in url
        base, token = url.split("?token=")
        assert len(token) >= 20
        status, body = fetch(base)
        # A page naming its icon: a browser asks for no /favicon.ico (a second 403).
        assert status == 403 and '<link rel="icon" href="data:,">' in body
        assert fetch(base + "api/view")[0] == 403
        assert fetch(base + "api/view?token=" + token[:-1] + "x")[0] == 403
        status, body = fetch(url)
        assert status == 200 and f"/api/view?token={token}" in body
        assert fetch(base + "api/view?token=" + token)[0] == 200
    finally:
        stop(proc)


def test_run_dashboard_on_a_port_in_use_exits_2_before_running(tmp_path: Path) -> None:
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "in.jsonl").write_text("1\n2\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        done = corepool("run", "tasks.py:work", "in.jsonl", "-o", "out.jsonl",
                        "--no-progress", "--dashboard", port, cwd=tmp_path)
    assert done.returncode == 2 and f"--dashboard: cannot listen on port {port}" in done.stderr
    with sqlite3.connect(tmp_path / "out.jsonl.journal.db") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    assert not (tmp_path / "out.jsonl").exists()


NAPS = '''
import time

def nap(x):
    if x < 0:
        raise ValueError(x)
    time.sleep(x)
    return x
'''


@pytest.mark.parametrize("options", [(), ("--timeout", "30"), ("--backend", "thread")],
                         ids=["fast path", "tracked", "thread"])
def test_journal_holds_each_tasks_own_duration(tmp_path: Path, options: tuple[str, ...]) -> None:
    """Every journalled duration is that task's own, measured in the worker: a failure
    in between and the idle time between chunks are included in none."""
    (tmp_path / "naps.py").write_text(NAPS)
    naps = [0.2, 0.01, -1, 0.3, 0.01, 0.01, 0.15, 0.02, 0.25, 0.01]
    (tmp_path / "in.jsonl").write_text("".join(f"{x}\n" for x in naps))
    done = corepool("run", "naps.py:nap", "in.jsonl", "-o", "out.jsonl", "--workers", "1",
                    "--no-progress", *options, cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # the one failure
    with sqlite3.connect(tmp_path / "out.jsonl.journal.db") as conn:
        micros = dict(conn.execute("SELECT line, micros FROM tasks WHERE ok = 1"))
    assert len(micros) == len(naps) - 1
    for line, nap in enumerate(naps, start=1):
        if nap >= 0:  # asleep at least that long, and not much more (a loaded machine)
            assert nap * 1e6 <= micros[line] < nap * 1e6 + 80_000, (line, micros)


@pytest.mark.timeout(60)
def test_run_dashboard_names_each_workers_line_and_its_text(tmp_path: Path) -> None:
    """The worker table of ``corepool run --dashboard`` names the input line each worker
    runs and shows that line's text (a first run sends raw lines: no bytes repr)."""
    (tmp_path / "tasks.py").write_text(NAPS)
    (tmp_path / "in.jsonl").write_text("".join(f"{30 + i / 1000}\n" for i in range(4)))
    run = start("run", "tasks.py:nap", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
                "--no-progress", "--dashboard", cwd=tmp_path)
    try:
        assert run.stderr is not None
        line = run.stderr.readline()
        assert line.startswith("corepool run: dashboard at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        deadline = time.monotonic() + 30
        while True:
            status, body = fetch(url.rstrip("/") + "/api/view")
            assert status == 200
            inputs = re.findall(r'<td class="task">line (\d)</td><td class="input">([^<]*)<',
                                json.loads(body)["html"])
            if len(inputs) == 2:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.1)
        assert {(int(n), text) for n, text in inputs} == {(1, "30.0"), (2, "30.001")}
    finally:
        stop(run)


FLAKY = '''
import os

def work(x):
    mark = f"tried-{x}"
    if x % 5 == 0 and not os.path.exists(mark):
        open(mark, "w").close()
        raise RuntimeError("the first try fails")
    return x
'''


@pytest.mark.parametrize("options", [(), ("--timeout", "30")], ids=["fast path", "tracked"])
def test_report_counts_the_retried_attempts(tmp_path: Path, options: tuple[str, ...]) -> None:
    """Tasks that failed once and then succeeded on their retry show as retried (they
    are neither failures nor invisible), on the report and the live view."""
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(1, 21)))
    done = corepool("run", "flaky.py:work", "in.jsonl", "-o", "out.jsonl", "--retries", "2",
                    "--no-progress", *options, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    db = tmp_path / "out.jsonl.journal.db"
    assert corepool("report", str(db), "-o", "r.html", cwd=tmp_path).returncode == 0
    page = (tmp_path / "r.html").read_text()
    assert 'data-key="ok"><b>20</b>' in page and 'data-key="failed"><b>0</b>' in page
    assert 'data-key="retried"><b>4</b>' in page  # 5, 10, 15, 20: one retry each
    proc, url = serve(db)
    try:
        status, body = fetch(url + "api/view")
        assert status == 200 and json.loads(body)["view"]["summary"]["retried"] == 4
    finally:
        stop(proc)


def test_a_run_with_no_task_finished_yet_is_not_called_an_old_journal(tmp_path: Path) -> None:
    """The live view of a batch whose first tasks are still running says so; "no timing
    data (written by an older corepool)" is for journals that have no timing columns."""
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "in.jsonl").write_text('"hang"\n"hang"\n')
    run = start("run", "tasks.py:work", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
                "--no-progress", cwd=tmp_path)
    db = tmp_path / "out.jsonl.journal.db"
    proc = None
    try:
        wait_for_journal(db, run)
        proc, url = serve(db)
        status, body = fetch(url + "api/view")
        assert status == 200
        data = json.loads(body)
        summary = data["view"]["summary"]
        assert summary["done"] == 0 and summary["state"] == "running"
        assert "older corepool" not in data["html"]
        assert "no task has finished yet" in data["html"]
    finally:
        stop(run)
        if proc is not None:
            stop(proc)


LONG_ERRORS = '''
def work(x):
    raise ValueError("<i>" + "L" * x)
'''


def test_report_cuts_long_messages_and_tracebacks_short(tmp_path: Path) -> None:
    """A failure whose message holds a long hostile input: the report shows it escaped,
    the message cut to 2,000 characters and the traceback to 20,000."""
    (tmp_path / "long.py").write_text(LONG_ERRORS)
    (tmp_path / "in.jsonl").write_text("50000\n")
    done = corepool("run", "long.py:work", "in.jsonl", "-o", "out.jsonl", "--no-progress",
                    cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert corepool("report", "out.jsonl.journal.db", "-o", "r.html", cwd=tmp_path).returncode == 0
    page = (tmp_path / "r.html").read_text()
    assert "<i>" not in page and "&lt;i&gt;" in page
    message = re.search(r'<div class="msg">([^<]*)</div>', page)
    trace = re.search(r"<summary>traceback</summary><pre>([^<]*)</pre>", page)
    assert message is not None and trace is not None
    assert 2_000 <= len(message.group(1)) < 2_100 and message.group(1).endswith(" more)")
    assert 20_000 <= len(trace.group(1)) < 20_100 and trace.group(1).endswith(" more)")


@pytest.mark.parametrize("command", ["report", "dashboard", "status"])
def test_the_output_file_given_for_the_journal_gets_no_advice_to_move_it(
        journal: Path, command: str) -> None:
    """``corepool report out.jsonl`` (the results, not the journal) is refused as not a
    journal, pointing at the journal beside it; it is not called a damaged journal to
    move aside (which would rename the results) or to run with --recover."""
    output = journal.parent / "out.jsonl"
    before = output.read_bytes()
    done = corepool(command, str(output), *(["-o", "r.html"] if command == "report" else []),
                    cwd=journal.parent)
    assert done.returncode == 2
    assert f"{output} is not a corepool journal" in done.stderr, done.stderr
    assert f"{output}.journal.db" in done.stderr
    assert "damaged" not in done.stderr and "mv " not in done.stderr
    assert output.read_bytes() == before and not (journal.parent / "r.html").exists()


def test_a_damaged_journal_is_told_to_be_salvaged_by_its_run(journal: Path,
                                                              tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.db"
    data = bytearray(journal.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # the header page stays: an SQLite file
    damaged.write_bytes(bytes(data))
    done = corepool("report", str(damaged), "-o", "r.html", cwd=tmp_path)
    assert done.returncode == 2
    assert f"the journal {damaged} is damaged" in done.stderr, done.stderr
    assert "run the corepool run command that wrote it with --recover" in done.stderr


ORPHANS = '''
import ctypes, json, os, subprocess, sys
import psutil

ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER: orphans come to us
done = subprocess.run([sys.executable, "-m", "corepool", *sys.argv[1:]],
                      stderr=subprocess.DEVNULL, check=False)
left = []
for child in psutil.Process().children():
    try:
        left.append(" ".join(child.cmdline()))
    except psutil.Error:
        pass
while True:  # reap them all
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
print(json.dumps({"code": done.returncode, "left": left}))
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER")
def test_run_dashboard_forks_its_workers_and_leaves_no_process_behind(tmp_path: Path) -> None:
    """With ``--dashboard`` the run still forks its first workers (its server thread
    starts after them): it used to start a fork server and a resource tracker, which
    outlived the run (and whose CPU its parent never counted)."""
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(50)))
    (tmp_path / "orphans.py").write_text(ORPHANS)
    done = subprocess.run(
        [sys.executable, "orphans.py", "run", "tasks.py:work", "in.jsonl", "-o", "out.jsonl",
         "--workers", "2", "--no-progress", "--dashboard"],
        cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(done.stdout)
    assert report == {"code": 0, "left": []}, report
