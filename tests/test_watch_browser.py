# ruff: noqa: F811
"""``corepool.watch`` and ``corepool run --dashboard``'s workers in a real headless
Chromium: the current task of each worker and how long it has run, and a library
map's page changing while it runs. Skipped without the browser, except in CI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from dashboard_helpers import env, start, stop

# The browser fixture and helpers are the report tests' (imported: ruff sees a redefinition).
from test_cli_dashboard_browser import DOCS, _card, _errors, _until, browser  # noqa: F401

HERE = Path(__file__).resolve().parent
SLOW_TASKS = '''
import time

def work(x):
    if x == "slow":
        time.sleep(60)
    time.sleep(0.01)
    return x
'''


def _cells(driver: Any, selector: str) -> list[str]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(function(e){return e.textContent;});", selector))


def _running_for(text: str) -> float:
    number, unit = text.split()
    return float(number) * {"µs": 1e-6, "ms": 1e-3, "s": 1.0}[unit]


def test_run_dashboard_shows_each_workers_current_task(browser: Any, tmp_path: Path) -> None:
    """A batch with one slow task: its worker's row names the task's input line and
    value, and its running time grows from one update to the next."""
    (tmp_path / "tasks.py").write_text(SLOW_TASKS)
    values = ['"slow"' if i == 6 else str(i) for i in range(40)]
    (tmp_path / "in.jsonl").write_text("\n".join(values) + "\n")
    run = start("run", "tasks.py:work", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
                "--timeout", "120", "--no-progress", "--dashboard", cwd=tmp_path)
    try:
        assert run.stderr is not None
        url = run.stderr.readline().rsplit(" ", 1)[1].strip()
        browser.get_log("browser")
        browser.get(url)

        def slow_row() -> list[str] | None:
            rows = browser.execute_script(
                "return Array.from(document.querySelectorAll('#workers tr.worker'))"
                ".map(function(r){return Array.from(r.cells).map(function(c)"
                "{return c.textContent;});});")
            found = [row for row in rows if row[3] == "line 7"]
            return found[0] if found else None

        _until(lambda: slow_row() is not None and _card(browser, "done") == "39", 30,
               "the slow task never showed as running while the others finished")
        first = slow_row()
        assert first is not None and first[4] == '"slow"' and first[2] == "busy"  # its text
        _until(lambda: (row := slow_row()) is not None
               and _running_for(row[5]) > _running_for(first[5]) + 1, 15,
               "the running time did not grow")
        assert re.fullmatch(r"\d+\.\d MiB", first[6]), first
        if os.environ.get("COREPOOL_SCREENSHOTS"):  # for the docs
            browser.save_screenshot(str(DOCS / "dashboard-workers.png"))
        assert _errors(browser) == []
    finally:
        stop(run)


def _script(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    script = tmp_path / "watched.py"
    script.write_text((HERE / "watch_script.py").read_text())
    proc = subprocess.Popen([sys.executable, str(script), *args], cwd=tmp_path, env=env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    return proc, url


def test_watched_pool_page_changes_while_its_map_runs(browser: Any, tmp_path: Path) -> None:
    """``corepool.watch(pool)`` in a real script: the page's counts rise without a
    reload, the slow task shows in the worker table, the failures of every kind show
    with their input (the hostile one as text), a replaced worker is counted, and the
    final counts are the map's."""
    proc, url = _script(tmp_path)
    try:
        browser.get_log("browser")
        browser.get(url)
        browser.execute_script("window.notReloaded = true;")
        _until(lambda: int(_card(browser, "done")) > 0, 30, "no task was counted")
        first = int(_card(browser, "done"))
        _until(lambda: "#5" in _cells(browser, "#workers td.task"), 30,
               "the slow task never showed in the worker table")
        _until(lambda: int(_card(browser, "done")) > first, 30, "the count never rose")

        def replaced() -> int:  # the crash's worker, while the timeout's task still runs
            found = re.search(r"(\d+) worker\(s\) replaced",
                              " ".join(_cells(browser, "#workers p.muted")))
            return int(found.group(1)) if found else 0

        _until(lambda: replaced() >= 1, 30, "the replaced worker was not counted")
        if os.environ.get("COREPOOL_SCREENSHOTS"):  # for the docs
            browser.save_screenshot(str(DOCS / "watch-live.png"))
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "done 5"
        _until(lambda: _card(browser, "done") == "152", 10, "the final count never showed")
        assert _card(browser, "failed") == "5"
        assert _card(browser, "failed-exception") == "3"
        assert _card(browser, "failed-timeout") == "1" and _card(browser, "failed-crash") == "1"
        inputs = _cells(browser, "#failures td.input")
        assert sorted(inputs) == ["1000", "1001", "13", "77", "99"]
        messages = " ".join(_cells(browser, "#failures .msg"))
        assert "<script>alert(1)</script>" in messages  # shown as text, not run
        assert browser.execute_script("return window.notReloaded === true;")
        assert _errors(browser) == []
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
        assert proc.returncode == 0


def test_watch_everywhere_follows_corepool_map(browser: Any, tmp_path: Path) -> None:
    """``corepool.watch()`` with no pool shows a plain ``corepool.map``."""
    proc, url = _script(tmp_path, "everywhere")
    try:
        browser.get(url)
        _until(lambda: _card(browser, "done") not in ("0", "None"), 30, "no task counted")
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "done 3"
        _until(lambda: _card(browser, "done") == "150", 10, "the final count never showed")
        assert "__main__.work" in " ".join(_cells(browser, "#jobs td"))
        assert _errors(browser) == []
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=30)
