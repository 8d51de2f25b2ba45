"""The page of :func:`corepool.watch`: progress, rate, failures and workers of pools.

Drawn from a :class:`~.recorder.Recorder`'s view and each watched pool's
:func:`~.workers.worker_status`; every text that comes from a task (messages,
tracebacks, inputs) is escaped here and was cut short by the recorder.
"""

from __future__ import annotations

import json
import os
from typing import Any

from .html import card, clock, esc, seconds, shell
from .workers import WorkersView, worker_status

__all__ = ["api_body", "fragment", "live_page"]


def _summary(view: dict[str, Any]) -> str:
    cards = [card("done", view["done"]),
             card("failed", view["failed"], "bad" if view["failed"] else "")]
    cards += [card(f"failed: {kind}", n, "bad") for kind, n in view["failed_by_kind"].items()]
    rate = view["rate"]
    cards.append(card("tasks/s", f"{rate:.1f}" if rate else "-"))
    cards.append(card("running jobs", view["running"]))
    cards.append(card("watched for", clock(view["elapsed"])))
    return ('<section id="summary"><h2>Summary</h2>'
            f'<div class="cards">{"".join(cards)}</div></section>')


def _jobs(view: dict[str, Any]) -> str:
    rows = []
    for job in view["jobs"]:
        total = job["total"]
        bar = (f'<progress max="{total}" value="{min(job["done"], total)}"></progress> '
               if total else "")
        shown = f'{job["done"]}/{total}' if total is not None else str(job["done"])
        rate = job["rate"]
        rows.append(
            f'<tr class="job" data-job="{job["job"]}"><td class="n">{job["job"]}</td>'
            f'<td>{esc(job["function"])}</td><td class="state-{esc(job["state"])}">'
            f'{esc(job["state"])}</td><td class="done">{bar}{esc(shown)}</td>'
            f'<td class="n">{job["failed"]}</td>'
            f'<td class="n">{f"{rate:.1f}" if rate else "-"}</td>'
            f'<td class="n">{seconds(job["elapsed"])}</td>'
            f'<td class="n">{clock(job["eta"]) if job["eta"] is not None else "-"}</td></tr>')
    if not rows:
        return '<section id="jobs"><h2>Jobs</h2><p>None yet.</p></section>'
    return ('<section id="jobs"><h2>Jobs</h2><table><tr><th class="n">#</th><th>function</th>'
            '<th>state</th><th>done</th><th class="n">failed</th><th class="n">tasks/s</th>'
            f'<th class="n">elapsed</th><th class="n">ETA</th></tr>{"".join(rows)}'
            "</table></section>")


def _failures(view: dict[str, Any]) -> str:
    failures = view["failures"]
    if not failures:
        return '<section id="failures"><h2>Failures</h2><p>None.</p></section>'
    rows = []
    for number, failure in enumerate(failures):
        message = f'<div class="msg">{esc(failure["message"])}</div>'
        if failure["traceback"]:
            ident = f'tb-{failure["job"]}-{failure["task"]}-{number}'
            message += (f'<details id="{esc(ident)}"><summary>traceback</summary>'
                        f'<pre>{esc(failure["traceback"])}</pre></details>')
        rows.append(
            f'<tr class="failure"><td class="kind">{esc(failure["kind"])}</td>'
            f'<td>{esc(failure["type"])}</td><td>{message}</td>'
            f'<td class="input">{esc(failure["input"])}</td>'
            f'<td class="n">{failure["task"]}</td><td class="n">{failure["job"]}</td></tr>')
    shown = (f" (the latest {len(failures)} of {view['failed']})"
             if view["failed"] > len(failures) else "")
    return (f'<section id="failures"><h2>Failures{shown}</h2><table><tr><th>kind</th>'
            '<th>type</th><th>message</th><th>input</th><th class="n">task</th>'
            f'<th class="n">job</th></tr>{"".join(rows)}</table></section>')


def fragment(view: dict[str, Any], cores: list[Any], workers: WorkersView) -> str:
    """The part of the page that each update replaces."""
    sections = [_summary(view), _jobs(view)]
    for number, core in enumerate(cores):
        try:
            status = worker_status(core)
        except Exception:  # a pool being torn down: shown at the next update
            continue
        title = "Workers" if len(cores) == 1 else f"Workers of pool {number + 1}"
        sections.append(workers.html(status, title, "workers" if number == 0 else ""))
    sections.append(_failures(view))
    return "".join(sections)


def live_page(body: str, api: str, what: str) -> str:
    """The whole page around ``body``."""
    return shell(f"corepool: {what}", f"corepool: {what}", f"process {os.getpid()}", body,
                 api=api)


def api_body(view: dict[str, Any], body: str) -> bytes:
    """The JSON the page polls."""
    return json.dumps({"view": view, "html": body}).encode()
