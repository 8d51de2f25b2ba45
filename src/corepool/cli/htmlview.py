"""The HTML of ``corepool report`` and ``corepool dashboard``: one page, no network.

Everything is drawn here in Python: the charts are inline SVG (a bar is a ``<rect>``),
the tables plain HTML, so a report opens anywhere (a mail attachment, a browser with
scripts off) and weighs a few tens of kilobytes. The live page is the same HTML plus a
small inline script that fetches the newly rendered view from the dashboard's JSON
endpoint and swaps it in, keeping open tracebacks open. No chart library: two bar
charts do not need one, and an inlined library would be most of the page.

Every text from the journal (messages, tracebacks, the command line) goes through
:func:`html.escape` and is cut short by :mod:`~corepool.cli.runview`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .._watch.html import POLL_SECONDS, clock, shell
from .._watch.html import card as _card
from .._watch.html import esc as _e
from .._watch.html import seconds as _seconds

__all__ = ["POLL_SECONDS", "api_body", "fragment", "page"]


def _summary(view: dict[str, Any]) -> str:
    s = view["summary"]
    cards = [_card("done", s["done"]), _card("ok", s["ok"], "good"),
             _card("failed", s["failed"], "bad" if s["failed"] else "")]
    cards += [_card(f"failed: {kind}", count, "bad")
              for kind, count in s["failed_by_kind"].items()]
    cards.append(_card("retries per task", s["retries"]))
    cards.append(_card("retried", s["retried"]))
    cards.append(_card("failed after retries", s["retried_failures"]))
    cards.append(_card("elapsed", _seconds(s["elapsed"])))
    rate = s["rate"]
    cards.append(_card("tasks/s", f"{rate:.1f}" if rate else "-"))
    if s["state"] == "running":
        total = s["total"]
        cards.append(_card("rows written", f"{s['rows']}/{total}" if total else s["rows"]))
        recent = s["recent_rate"]
        if total and recent:
            cards.append(_card("ETA", clock(max(0, total - s["rows"]) / recent)))
    return (f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}'
            "</div></section>")


def _bars(series: list[list[int]], labels: tuple[str, str], title: str, unit: str) -> str:
    """An SVG bar chart; each entry of ``series`` is ``[height, failed part]``."""
    width, height, left, bottom = 560, 190, 44, 22
    top = max((value for value, _ in series), default=0) or 1
    step = (width - left - 4) / max(1, len(series))
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="{_e(title)}">',
             f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
             'stroke="#99a"/>',
             f'<text class="axis" x="{left - 4}" y="12" text-anchor="end">{top}</text>',
             f'<text class="axis" x="{left - 4}" y="{height - bottom}" '
             'text-anchor="end">0</text>',
             f'<text class="axis" x="{left}" y="{height - 6}">{_e(labels[0])}</text>',
             f'<text class="axis" x="{width}" y="{height - 6}" text-anchor="end">'
             f'{_e(labels[1])}</text>']
    scale = (height - bottom - 8) / top
    for index, (value, failed) in enumerate(series):
        x = left + index * step
        for part, cls in ((value, "bar"), (failed, "bar fail")):
            if part:
                h = max(1.0, part * scale)
                parts.append(f'<rect class="{cls}" x="{x + 0.5:.1f}" y="{height - bottom - h:.1f}"'
                             f' width="{max(1.0, step - 1):.1f}" height="{h:.1f}">'
                             f'<title>{part} {_e(unit)}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def _charts(view: dict[str, Any]) -> str:
    through, durations = view["throughput"], view["durations"]
    if through:
        span = through["width"] * len(through["counts"])
        chart = _bars(through["counts"], ("0 s", f"{span:.1f} s"),
                      "tasks finished over time", "tasks (failed in red)")
        note = f"tasks finished per {through['width']:.2f} s, failed in red"
    elif not view["timed"]:
        chart, note = "", "no timing data in this journal (written by an older corepool)"
    else:
        running = view["summary"]["state"] == "running"
        chart, note = "", "no task has finished yet" if running else "no task ran"
    first = f'<section><h2>Throughput</h2><p class="muted">{_e(note)}</p>{chart}</section>'
    if durations:
        chart = _bars([[n, 0] for n in durations["counts"]],
                      (_seconds(durations["low"]), _seconds(durations["high"])),
                      "task durations", "tasks")
        note = (f"{durations['count']} timed tasks (log scale), mean "
                f"{_seconds(durations['mean'])}; a crash or an exception has no duration")
    else:
        chart, note = "", "no task durations recorded"
    second = f'<section><h2>Task durations</h2><p class="muted">{_e(note)}</p>{chart}</section>'
    return f'<div class="charts">{first}{second}</div>'


def _slowest(view: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="n">{task["line"]}</td><td class="n">{_seconds(task["seconds"])}</td>'
        f'<td>{"ok" if task["ok"] else _e(task["kind"])}</td></tr>'
        for task in view["slowest"])
    if not rows:
        return ""
    return ('<section id="slowest"><h2>Slowest tasks</h2><table class="narrow"><tr>'
            '<th class="n">input line</th><th class="n">duration</th><th>outcome</th></tr>'
            f"{rows}</table></section>")


def _failures(view: dict[str, Any]) -> str:
    failures = view["failures"]
    total = view["summary"]["failed"]
    if not failures:
        return '<section id="failures"><h2>Failures</h2><p>None.</p></section>'
    rows = []
    for failure in failures:
        trace = failure["traceback"]
        message = f'<div class="msg">{_e(failure["message"])}</div>'
        if trace:
            message += (f'<details id="tb-{failure["line"]}"><summary>traceback</summary>'
                        f"<pre>{_e(trace)}</pre></details>")
        if failure.get("logged"):
            message += (f'<details id="log-{failure["line"]}"><summary>logged</summary>'
                        f'<pre>{_e(failure["logged"])}</pre></details>')
        rows.append(
            f'<tr class="failure"><td class="kind">{_e(failure["kind"])}</td>'
            f'<td>{_e(failure["type"])}</td><td>{message}</td>'
            f'<td class="n">{failure["line"]}</td><td class="n">{failure["attempts"]}</td></tr>')
    shown = f" (first {len(failures)} of {total})" if total > len(failures) else ""
    return (f'<section id="failures"><h2>Failures{shown}</h2><table><tr><th>kind</th>'
            '<th>type</th><th>message</th><th class="n">input line</th>'
            f'<th class="n">attempts</th></tr>{"".join(rows)}</table></section>')


def _runs(view: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td class="n">{run["id"]}</td><td>{time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["started"]))}</td>'  # noqa: E501
        f'<td class="state-{_e(run["state"])}">{_e(run["state"])}</td>'
        f'<td class="n">{run["executed"]}</td><td class="n">{run["failed"]}</td>'
        f'<td class="n">{_seconds(run["elapsed"])}</td><td class="msg">{_e(run["command"])}</td>'
        "</tr>" for run in view["runs"])
    return ('<section id="runs"><h2>Runs</h2><table><tr><th class="n">#</th><th>started</th>'
            '<th>state</th><th class="n">ran</th><th class="n">failed</th>'
            f'<th class="n">elapsed</th><th>command</th></tr>{rows}</table></section>')


def fragment(view: dict[str, Any], extra: str = "") -> str:
    """The body of the view (everything the live page replaces on each update);
    ``extra`` is more HTML (already escaped), shown after the summary."""
    return "".join((_summary(view), extra, _charts(view), _slowest(view), _failures(view),
                    _runs(view)))


def page(view: dict[str, Any], *, api: str | None = None, interval: float = POLL_SECONDS,
         extra: str = "") -> str:
    """A whole page: the report, or with ``api`` (the JSON endpoint's URL) the live view,
    which fetches a new fragment every ``interval`` seconds."""
    generated = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(view["generated"]))
    function = view["function"]
    return shell(f"corepool: {function}", f"corepool run: {function}",
                 f"journal {view['journal']} (mode {view['mode']})", fragment(view, extra),
                 api=api, note=f"report of {generated}", interval=interval)


def api_body(view: dict[str, Any], extra: str = "") -> bytes:
    """The JSON the live page polls: the view's data and its rendered fragment."""
    return json.dumps({"view": view, "html": fragment(view, extra)}).encode()
