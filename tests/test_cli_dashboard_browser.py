"""The report and the live page in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by selenium). Skipped where they are missing, except in CI
(``CI=true``), where a missing browser fails."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard_helpers import (
    HOSTILE,
    TASKS,
    corepool,
    journal_counts,
    serve,
    start,
    stop,
    troubled_batch,
    wait_for_journal,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _missing() -> str | None:
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        return "chromium and chromium-driver are not installed (apt-get install them)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (it is in the test extra)"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot be skipped in CI: {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="corepool-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return troubled_batch(tmp_path_factory.mktemp("batch"))


def _errors(driver: Any) -> list[Any]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _card(driver: Any, key: str) -> str:
    """A summary card's value, read in one step (the live page swaps its elements)."""
    return str(driver.execute_script(
        "var e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
        f'[data-key="{key}"] b'))


def _until(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_report_renders_counts_charts_and_escaped_failures(browser: Any, journal: Path,
                                                           tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    report = tmp_path / "report.html"
    assert corepool("report", str(journal), "-o", str(report), cwd=tmp_path).returncode == 0
    browser.get_log("browser")
    browser.get(report.as_uri())
    counts = journal_counts(journal)
    for key, value in counts.items():
        assert _card(browser, key) == str(value), key
    for chart in browser.find_elements(By.CSS_SELECTOR, "svg.chart"):
        assert chart.find_elements(By.CSS_SELECTOR, "rect.bar"), "a chart without bars"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 2
    rows = browser.find_elements(By.CSS_SELECTOR, "#failures tr.failure")
    assert len(rows) == counts["failed"]
    assert {row.find_element(By.CSS_SELECTOR, ".kind").text for row in rows} == {
        "exception", "timeout", "crash", "input"}
    hostile = [row for row in rows if HOSTILE in row.text]
    assert len(hostile) == 1  # shown as text, not run
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018
    details = hostile[0].find_element(By.TAG_NAME, "details")
    trace = details.find_element(By.TAG_NAME, "pre")
    assert not trace.is_displayed()
    details.find_element(By.TAG_NAME, "summary").click()
    assert trace.is_displayed() and "ValueError" in trace.text
    assert _errors(browser) == []
    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1280, min(2400, int(height) + 140))
    browser.execute_script("window.scrollTo(0, 0);")
    browser.save_screenshot(str(tmp_path / "report.png"))
    if os.environ.get("COREPOOL_SCREENSHOTS"):  # refresh the docs' picture
        shutil.copy(tmp_path / "report.png", DOCS / "dashboard-report.png")


def test_live_page_follows_a_running_batch(browser: Any, tmp_path: Path) -> None:
    """A real ``corepool run`` in one process, ``corepool dashboard`` in another: the
    page's counts rise without a reload, up to the journal's final counts."""
    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(200)))
    run = start("run", "tasks.py:slow", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
                "--no-progress", cwd=tmp_path)
    db = tmp_path / "out.jsonl.journal.db"
    server = None
    try:
        wait_for_journal(db, run)
        server, url = serve(db)
        browser.get_log("browser")
        browser.get(url)
        browser.execute_script("window.notReloaded = true;")
        first = int(_card(browser, "done"))
        _until(lambda: int(_card(browser, "done")) > first, 30, "the count never rose")
        if os.environ.get("COREPOOL_SCREENSHOTS"):  # mid-run, for the docs
            browser.save_screenshot(str(DOCS / "dashboard-live.png"))
        assert run.wait(timeout=60) == 1
        final = journal_counts(db)
        _until(lambda: _card(browser, "done") == str(final["done"]), 10,
               "the page never showed the final count")
        assert _card(browser, "failed-exception") == str(final["failed-exception"])
        assert browser.execute_script("return window.notReloaded === true;")
        assert first < final["done"] == 200
        assert _errors(browser) == []
    finally:
        stop(run)
        if server is not None:
            stop(server)


def test_run_dashboard_shows_the_workers_and_the_token_page_works(browser: Any,
                                                                   tmp_path: Path) -> None:
    """``corepool run --dashboard`` prints its URL and shows its worker processes; a
    dashboard on another address works in the browser with its token only."""
    import psutil
    from selenium.webdriver.common.by import By

    (tmp_path / "tasks.py").write_text(TASKS)
    (tmp_path / "in.jsonl").write_text("".join(f"{i}\n" for i in range(120)))
    run = start("run", "tasks.py:slow", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
                "--no-progress", "--dashboard", cwd=tmp_path)
    server = None
    try:
        assert run.stderr is not None
        line = run.stderr.readline()
        assert line.startswith("corepool run: dashboard at http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1].strip()
        browser.get(url)

        def workers() -> set[int]:
            return {int(pid) for pid in json.loads(browser.execute_script(
                "return JSON.stringify(Array.from(document.querySelectorAll("
                "'#workers td.pid')).map(function(e){return e.textContent;}));"))}

        _until(lambda: len(workers()) >= 2, 20, "the workers never showed")  # started later
        children = {child.pid for child in psutil.Process(run.pid).children(recursive=True)}
        assert workers() <= children
        server, token_url = serve(tmp_path / "out.jsonl.journal.db", "--host", "127.0.0.2")
        base = token_url.split("?")[0]
        browser.get(base)
        assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text
        browser.get_log("browser")  # the 403 above is logged as an error, rightly
        browser.get(token_url)
        before = browser.find_element(By.ID, "live").text  # outside the swapped part
        _until(lambda: browser.find_element(By.ID, "live").text.startswith("live, updated")
               and browser.find_element(By.ID, "live").text != before, 15,
               "the page on 127.0.0.2 did not update with its token")
        assert _errors(browser) == []
        assert run.wait(timeout=60) == 1
    finally:
        stop(run)
        if server is not None:
            stop(server)


EVERY_KIND = '''
import os, time

def work(x):
    if x == "raise" or x == "<script>alert(1)</script>":
        raise ValueError(f"bad input {x}")
    if isinstance(x, dict):  # {"hang": long hostile text}
        time.sleep(60)
    if x == "crash":
        os._exit(3)
    time.sleep(0.03)
    return x
'''
LONG = "<img src=x onerror=alert(2)>" + "L" * 500


def _worker_rows(driver: Any) -> list[list[str]]:
    return list(driver.execute_script(
        "return Array.from(document.querySelectorAll('#workers tr.worker'))"
        ".map(function(r){return Array.from(r.cells).map(function(c){return c.textContent;});});"))


def _replaced(driver: Any) -> int:
    note = driver.execute_script(
        "var e = document.querySelector('#workers p.muted'); return e ? e.textContent : '';")
    found = re.search(r"(\d+) worker\(s\) replaced", str(note))
    return int(found.group(1)) if found else -1


@pytest.mark.timeout(150)  # a 10 s batch; its waits have their own deadlines
def test_live_views_of_a_batch_with_every_kind_of_failure(browser: Any, tmp_path: Path) -> None:
    """One real ``corepool run --dashboard`` whose failures are of every kind (exception,
    timeout, crash, bad input line), watched from its own page and from ``corepool
    dashboard`` in another process: the worker table names the hung task with its input
    escaped and cut short, counts the replaced workers and shows pid, RSS and CPU; the
    other page changes without a reload and ends on the journal's counts, every kind
    included; no JavaScript error on either."""
    import psutil
    from selenium.webdriver.common.by import By

    (tmp_path / "tasks.py").write_text(EVERY_KIND)
    values: list[Any] = list(range(300))
    values[20], values[40], values[60], values[80] = "raise", "crash", {"hang": LONG}, HOSTILE
    lines = [json.dumps(v) for v in values]
    lines[100] = "{oops"
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    run = start("run", "tasks.py:work", "in.jsonl", "-o", "out.jsonl", "--workers", "2",
                "--timeout", "3", "--retries", "1", "--no-progress", "--dashboard",
                cwd=tmp_path)
    db = tmp_path / "out.jsonl.journal.db"
    server = None
    try:
        assert run.stderr is not None
        line = run.stderr.readline()
        assert line.startswith("corepool run: dashboard at http://127.0.0.1:"), line
        run_url = line.rsplit(" ", 1)[1].strip()
        wait_for_journal(db, run)
        server, url = serve(db)
        # Tab one: corepool dashboard, from its own process.
        browser.get_log("browser")
        browser.get(url)
        browser.execute_script("window.notReloaded = true;")
        first = int(_card(browser, "done"))
        watcher = browser.current_window_handle
        # Tab two: the run's own page, with its workers.
        browser.switch_to.new_window("tab")
        browser.get(run_url)

        def hung() -> list[str] | None:
            rows = [row for row in _worker_rows(browser) if row[3] == "line 61"]
            return rows[0] if rows else None

        _until(lambda: hung() is not None, 30, "the hung task never showed in the workers")
        row = hung()
        assert row is not None and row[2] == "busy"
        # A first run's line, as its text: escaped (no alert), and cut short.
        assert row[4].startswith('{"hang": "<img src=x onerror=alert(2)>LLL')
        assert row[4].endswith("...") and len(row[4]) <= 120
        children = {child.pid for child in psutil.Process(run.pid).children(recursive=True)}
        assert int(row[1]) in children
        assert re.fullmatch(r"\d+\.\d MiB", row[6]) and re.fullmatch(r"\d+%", row[7]), row
        _until(lambda: _replaced(browser) >= 2, 30, "the replaced workers were not counted")
        assert _errors(browser) == []
        assert run.wait(timeout=90) == 1
        # The run's page outlives its server: it says so, rather than "Failed to fetch".
        _until(lambda: browser.find_element(By.ID, "live").text.startswith(
            "stopped: the server of this page is gone"), 10, "the page did not say it stopped")
        browser.close()
        browser.switch_to.window(watcher)
        final = journal_counts(db)
        assert {"failed-exception", "failed-timeout", "failed-crash", "failed-input"} <= set(final)
        _until(lambda: _card(browser, "done") == str(final["done"]), 10,
               "the page never showed the final count")
        for key, value in final.items():
            assert _card(browser, key) == str(value), key
        assert _card(browser, "retried") == "4"  # each failed task was tried once more
        assert first < final["done"] == 300
        assert browser.execute_script("return window.notReloaded === true;")
        gone = f"{run_url}api/view - Failed to load resource: net::ERR_CONNECTION_REFUSED"
        assert [e for e in _errors(browser) if e["message"] != gone] == []  # (the log is
        # the browser's, not one tab's: the run's page failed to fetch once its run ended)
    finally:
        stop(run)
        if server is not None:
            stop(server)
