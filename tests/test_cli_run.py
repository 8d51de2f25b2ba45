"""``corepool run`` and ``corepool status``, run for real as subprocesses on real SQLite."""

from __future__ import annotations

import collections
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import corepool
from corepool.cli.jsonl import canonical_digest

TESTS = Path(__file__).resolve().parent
TASKS_FILE = str(TESTS / "cli_tasks.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    source = str(Path(corepool.__file__).resolve().parent.parent)  # absolute: the one tested
    env["PYTHONPATH"] = os.pathsep.join([source, str(TESTS), env.get("PYTHONPATH", "")])
    env.pop("COREPOOL_BACKEND", None)
    return env


def cli(*args: str, cwd: Path, stdin: str | None = None,
        timeout: float = 40) -> subprocess.CompletedProcess[str]:
    """``python -m corepool ARGS`` in ``cwd``, with tests/ importable."""
    return subprocess.run([sys.executable, "-m", "corepool", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout, env=_env(),
                          check=False)


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "corepool", *args], cwd=cwd, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def write_lines(path: Path, values: list[Any]) -> None:
    path.write_text("".join(json.dumps(v) + "\n" for v in values))


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def journal_count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM tasks").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def journal_digests(db: Path) -> set[bytes]:
    with sqlite3.connect(db) as conn:
        return {bytes(d) for (d,) in conn.execute("SELECT digest FROM tasks")}


def wait_for_rows(db: Path, proc: subprocess.Popen[str], count: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while journal_count(db) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the journal did not fill in time"
        time.sleep(0.02)


def executions(log: Path) -> collections.Counter[int]:
    return collections.Counter(int(x) for x in log.read_text().split())


@pytest.mark.timeout(60)
def test_thousands_of_inputs_in_order_then_all_from_the_journal(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", list(range(3000)))
    done = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = rows(tmp_path / "out.jsonl")
    assert out == [{"index": i, "ok": True, "result": i * i} for i in range(3000)]
    assert "3000 ok, 0 failed" in done.stderr and "ran 3000" in done.stderr
    db = tmp_path / "out.jsonl.journal.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == 3000
    again = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "ran 0" in again.stderr and "3000 from the journal" in again.stderr
    assert rows(tmp_path / "out.jsonl") == out


def _slow_batch(tmp_path: Path, n: int) -> tuple[list[str], Path, list[list[Any]]]:
    log = tmp_path / "log.txt"
    log.touch()
    inputs = [[i, str(log), 0.02] for i in range(n)]
    write_lines(tmp_path / "in.jsonl", inputs)
    args = ["run", "cli_tasks:logged", "in.jsonl", "-o", "out.jsonl", "--star",
            "--workers", "2", "--no-progress"]
    return args, log, inputs


def _check_resumed(tmp_path: Path, log: Path, inputs: list[list[Any]],
                   committed: set[bytes], max_twice: int) -> None:
    out = rows(tmp_path / "out.jsonl")
    assert out == [{"index": i, "ok": True, "result": 2 * i} for i in range(len(inputs))]
    ran = executions(log)
    assert set(ran) == set(range(len(inputs)))  # none lost
    for value in inputs:  # what the journal held at the stop never ran again
        if canonical_digest(value) in committed:
            assert ran[value[0]] == 1, value
    twice = [x for x, count in ran.items() if count > 1]
    assert all(ran[x] == 2 for x in twice)
    assert len(twice) <= max_twice, twice


def _children(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def _all_gone(procs: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(procs, timeout=10)
    assert not alive, alive


def run_state(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("SELECT state FROM runs ORDER BY id DESC").fetchone()[0])


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@pytest.mark.timeout(60)
def test_kill_9_midway_then_rerun_runs_only_what_is_missing(tmp_path: Path) -> None:
    args, log, inputs = _slow_batch(tmp_path, 300)
    db = tmp_path / "out.jsonl.journal.db"
    out, partial = tmp_path / "out.jsonl", tmp_path / "out.jsonl.partial"
    # A first, complete run over the first 100 lines leaves a complete output...
    write_lines(tmp_path / "in.jsonl", inputs[:100])
    assert cli(*args, cwd=tmp_path).returncode == 0
    before = out.read_bytes()
    # ...which a run over all 300, killed midway, must leave exactly as it was.
    write_lines(tmp_path / "in.jsonl", inputs)
    proc = start(*args, cwd=tmp_path)
    wait_for_rows(db, proc, 140)
    workers = _children(proc.pid)
    proc.kill()
    proc.communicate(timeout=10)
    _all_gone(workers)  # workers die with their parent, even after SIGKILL
    committed = journal_digests(db)
    assert 140 <= len(committed) < len(inputs)
    assert out.read_bytes() == before  # never a half-rewritten output that looks complete
    half = rows(partial)  # the new rows so far: in order, each one in the journal
    assert [r["index"] for r in half] == list(range(len(half)))
    assert len(half) <= len(committed)
    assert integrity(db) == "ok"
    status = cli("status", str(db), cwd=tmp_path)
    assert "last run killed" in status.stdout, status.stdout
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{len(committed)} from the journal" in done.stderr
    assert not partial.exists()
    # Ran twice: at most the tasks in flight (6 chunks of 1 slow task) plus those
    # finished but not yet committed: the batch being built (0.2 s at ~100 tasks/s) and
    # at most 3 more on their way to the writer: 6 + 4 x 20.
    _check_resumed(tmp_path, log, inputs, committed, max_twice=86)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_cleanly_with_exit_130_and_resumes(tmp_path: Path) -> None:
    args, log, inputs = _slow_batch(tmp_path, 300)
    db = tmp_path / "out.jsonl.journal.db"
    proc = start(*args, cwd=tmp_path)
    wait_for_rows(db, proc, 40)
    workers = _children(proc.pid)
    assert len(workers) >= 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    _all_gone(workers)  # the workers are gone
    # The journal is consistent: intact, the run recorded as interrupted, and every row
    # reported is in it.
    assert integrity(db) == "ok" and run_state(db) == "interrupted"
    committed = journal_digests(db)
    assert not (tmp_path / "out.jsonl").exists()  # an interrupted run is not complete
    partial = rows(tmp_path / "out.jsonl.partial")
    assert [r["index"] for r in partial] == list(range(len(partial)))
    # Every row written is in the journal; the journal may hold more: results recorded
    # as they came, whose rows wait for a task before them that was still running.
    assert {canonical_digest(inputs[r["index"]]) for r in partial} <= committed
    assert "interrupted" in err and "out.jsonl.partial" in err
    # The command to resume is printed, and resuming with it completes the batch.
    command = shlex.split(err.split("To resume:", 1)[1].strip().splitlines()[0])
    assert command[:2] == ["corepool", "run"]
    done = cli(*command[1:], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    # After a clean stop only the tasks running at the Ctrl-C run again (2 workers).
    _check_resumed(tmp_path, log, inputs, committed, max_twice=4)


@pytest.mark.timeout(60)
def test_bad_json_lines_are_input_rows_and_the_rest_runs(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'1\n{oops\n\n2\n\xff\n3\n')
    done = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    out = rows(tmp_path / "out.jsonl")
    assert [r["index"] for r in out] == [0, 1, 2, 3, 4]
    assert [r.get("result") for r in out if r["ok"]] == [1, 4, 9]
    bad = [r["error"] for r in out if not r["ok"]]
    assert [(e["kind"], e["line"]) for e in bad] == [("input", 2), ("input", 5)]
    assert bad[0]["type"] == "JSONDecodeError" and "line 2" in bad[0]["message"]
    assert "2 input" in done.stderr or "(2 input)" in done.stderr


@pytest.mark.timeout(60)
def test_nothing_can_run_exits_2_with_what_to_fix(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [1])
    cases = {
        ("no_such_module:f", "in.jsonl"): "cannot import module 'no_such_module'",
        ("cli_tasks:nope", "in.jsonl"): "has no function 'nope'",
        ("cli_tasks", "in.jsonl"): "expected MODULE:FUNC",
        ("cli_tasks:square", "missing.jsonl"): "cannot read the input file missing.jsonl",
        ("./missing.py:f", "in.jsonl"): "no such Python file",
    }
    for (target, source), message in cases.items():
        done = cli("run", target, source, "-o", "out.jsonl", cwd=tmp_path)
        assert done.returncode == 2, (target, done.stderr)
        assert message in done.stderr, done.stderr
    done = cli("run", "cli_tasks:square", "in.jsonl", "--max-failures", "0", cwd=tmp_path)
    assert done.returncode == 2 and "--max-failures" in done.stderr


@pytest.mark.timeout(60)
def test_exception_timeout_crash_and_non_json_results(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", ["a", "raise", "hang", "crash", "object", "b"])
    # The function is given as a path to its .py file.
    done = cli("run", TASKS_FILE + ":troubled", "in.jsonl", "-o", "out.jsonl",
               "--timeout", "1", "--workers", "2", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    out = rows(tmp_path / "out.jsonl")
    assert [r["index"] for r in out] == list(range(6))
    assert out[0]["result"] == "a" and out[5]["result"] == "b"
    kinds = [r["error"]["kind"] for r in out[1:5]]
    assert kinds == ["exception", "timeout", "crash", "exception"]
    raised, timeout, crash, obj = (r["error"] for r in out[1:5])
    assert raised["type"] == "ValueError" and raised["message"] == "bad input raise"
    assert 'raise ValueError(f"bad input {x}")' in raised["traceback"]
    assert timeout["type"] == "TaskTimeout" and timeout["timeout"] == 1.0
    assert crash["exitcode"] == 3 and "exit code 3" in crash["message"]
    assert obj["type"] == "TypeError" and "JSON" in obj["message"]


@pytest.mark.timeout(60)
def test_stdin_to_stdout_with_the_default_journal(tmp_path: Path) -> None:
    done = cli("run", "cli_tasks:square", cwd=tmp_path, stdin="3\n4\n")
    assert done.returncode == 0, done.stderr
    assert [json.loads(x) for x in done.stdout.splitlines()] == [
        {"index": 0, "ok": True, "result": 9}, {"index": 1, "ok": True, "result": 16}]
    assert list(tmp_path.glob("corepool-run-square-*.journal.db"))
    again = cli("run", "cli_tasks:square", "-", cwd=tmp_path, stdin="4\n5\n")
    assert again.returncode == 0, again.stderr
    assert [json.loads(x)["result"] for x in again.stdout.splitlines()] == [16, 25]
    assert "ran 1" in again.stderr and "1 from the journal" in again.stderr


@pytest.mark.timeout(60)
def test_star_and_kwargs(tmp_path: Path) -> None:
    write_lines(tmp_path / "star.jsonl", [[1, 2], [5], {"a": 1}])
    done = cli("run", "cli_tasks:add", "star.jsonl", "-o", "s.jsonl", "--star", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    out = rows(tmp_path / "s.jsonl")
    assert [r.get("result") for r in out[:2]] == [3, 5]
    assert out[2]["error"]["kind"] == "input" and "--star" in out[2]["error"]["message"]
    write_lines(tmp_path / "kw.jsonl", [{"a": 1, "b": 2}, {"a": 7}, {"c": 1}])
    done = cli("run", "cli_tasks:add", "kw.jsonl", "-o", "k.jsonl", "--kwargs", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    out = rows(tmp_path / "k.jsonl")
    assert [r.get("result") for r in out[:2]] == [3, 7]
    assert out[2]["error"]["kind"] == "exception" and out[2]["error"]["type"] == "TypeError"


@pytest.mark.timeout(60)
def test_journal_of_another_function_is_refused_unless_forced(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [[1, 2]])
    first = cli("run", "cli_tasks:add", "in.jsonl", "--star", "--journal", "j.db",
                cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    other = cli("run", "cli_tasks:square", "in.jsonl", "--journal", "j.db", cwd=tmp_path)
    assert other.returncode == 2
    assert "was made for function cli_tasks:add" in other.stderr and "--force" in other.stderr
    mode = cli("run", "cli_tasks:add", "in.jsonl", "--journal", "j.db", cwd=tmp_path)
    assert mode.returncode == 2 and "made for --star (this run: one value per line)" in mode.stderr
    forced = cli("run", "cli_tasks:square", "in.jsonl", "--journal", "j.db", "--force",
                 cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr


@pytest.mark.timeout(60)
def test_retry_failed_and_edited_input_reuse(tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.touch()
    write_lines(tmp_path / "in.jsonl", [[1, str(flag)], [2, str(flag)], [1, str(flag)]])
    args = ["run", "cli_tasks:flaky", "in.jsonl", "-o", "out.jsonl", "--star"]
    first = cli(*args, cwd=tmp_path)
    assert first.returncode == 1 and "3 failed" in first.stderr
    flag.unlink()
    kept = cli(*args, cwd=tmp_path)  # failures are kept without --retry-failed
    assert kept.returncode == 1 and "ran 0" in kept.stderr
    retried = cli(*args, "--retry-failed", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [1, 2, 1]
    # Reordered, with one more copy of a line: only the new third [1, ...] runs.
    write_lines(tmp_path / "in.jsonl", [[2, str(flag)], [1, str(flag)], [1, str(flag)],
                                        [1, str(flag)]])
    edited = cli(*args, cwd=tmp_path)
    assert edited.returncode == 0, edited.stderr
    assert "ran 1 " in edited.stderr and "3 from the journal" in edited.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [2, 1, 1, 1]


@pytest.mark.timeout(60)
def test_max_failures_stops_early_with_the_journal_intact(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", list(range(200)))
    for limit in ("3", "40%"):
        db = tmp_path / f"j{limit[:-1] or limit}.db"
        done = cli("run", "cli_tasks:fail_odd", "in.jsonl", "-o", "out.jsonl", "--journal",
                   str(db), "--workers", "1", "--max-failures", limit, cwd=tmp_path)
        assert done.returncode == 1, done.stderr
        assert "stopped early" in done.stderr and "To resume:" in done.stderr
        assert not (tmp_path / "out.jsonl").exists()
        out = rows(tmp_path / "out.jsonl.partial")
        assert [r["index"] for r in out] == list(range(len(out)))
        assert len(out) < 200 and journal_count(db) >= len(out)  # the output may lag


@pytest.mark.timeout(60)
def test_status_reports_counts_function_and_failures(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", list(range(10)))
    ran = cli("run", "cli_tasks:fail_odd", "in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert ran.returncode == 1
    done = cli("status", "out.jsonl.journal.db", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "cli_tasks:fail_odd" in text and "10 tasks: 5 ok, 5 failed" in text
    assert "exception  5" in text and "ValueError: odd 1" in text and "tasks/s" in text
    data = json.loads(cli("status", "out.jsonl.journal.db", "--json", cwd=tmp_path).stdout)
    assert data["ok"] == 5 and data["failed_by_kind"] == {"exception": 5}
    assert data["last_run"]["state"] == "finished" and data["last_run"]["pending"] == 0
    assert data["last_run"]["rows"] == 10 and data["last_run"]["total"] == 10
    assert data["last_run"]["eta_seconds"] is None  # only while it runs
    assert data["bad_input_lines"] == 0 and "bad line" not in text
    missing = cli("status", "nope.db", cwd=tmp_path)
    assert missing.returncode == 2 and "no journal" in missing.stderr


@pytest.mark.timeout(60)
def test_status_counts_the_last_runs_bad_lines_as_the_run_does(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('1\n{oops\n2\n[3\n')
    ran = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert ran.returncode == 1 and "4 rows: 2 ok, 2 failed (2 input)" in ran.stderr
    text = cli("status", "out.jsonl.journal.db", cwd=tmp_path).stdout
    assert "2 tasks: 2 ok, 0 failed" in text
    assert "input:    2 bad line(s) in the last run" in text and "line 2, 4" in text
    data = json.loads(cli("status", "out.jsonl.journal.db", "--json", cwd=tmp_path).stdout)
    assert data["bad_input_lines"] == 2


@pytest.mark.timeout(60)
def test_address_needs_a_cluster_backend(tmp_path: Path) -> None:
    write_lines(tmp_path / "in.jsonl", [1])
    for backend in ([], ["--backend", "process"], ["--backend", "thread"],
                    ["--backend", "serial"]):
        done = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl",
                   "--address", "tcp://127.0.0.1:8786", *backend, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "needs --backend dask or ray" in done.stderr, done.stderr
        assert not (tmp_path / "out.jsonl.journal.db").exists()  # checked before anything


def test_resume_command_keeps_the_address() -> None:
    from corepool.cli.main import build_parser
    from corepool.cli.run import resume_command

    args = build_parser().parse_args(
        ["run", "m:f", "in.jsonl", "--backend", "dask", "--address", "tcp://h:8786"])
    assert resume_command(args, "j.db").endswith(
        "--journal j.db --backend dask --address tcp://h:8786")


@pytest.mark.timeout(60)
def test_a_fresh_run_numbers_duplicate_lines_and_a_rerun_reuses_each(tmp_path: Path) -> None:
    # Equal lines are one task each, numbered 1..n, so a rerun finds every one of them.
    values = [i % 3 for i in range(300)]
    write_lines(tmp_path / "in.jsonl", values)
    first = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(tmp_path / "out.jsonl.journal.db") as conn:
        keys = conn.execute("SELECT digest, occurrence FROM tasks").fetchall()
    assert sorted(n for d, n in keys if d == canonical_digest(1)) == list(range(1, 101))
    assert {d for d, _ in keys} == {canonical_digest(v) for v in range(3)}
    again = cli("run", "cli_tasks:square", "in.jsonl", "-o", "out.jsonl", cwd=tmp_path)
    assert again.returncode == 0 and "ran 0 " in again.stderr, again.stderr
    assert [r["result"] for r in rows(tmp_path / "out.jsonl")] == [v * v for v in values]
