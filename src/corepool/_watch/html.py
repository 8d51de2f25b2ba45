"""What every corepool web page shares: its style, its polling script, its shell.

``corepool report`` / ``corepool dashboard`` (:mod:`corepool.cli.htmlview`) and the
page of :func:`corepool.watch` are drawn from these pieces. No external file: the
style and the script are inline, so a page opens without network, and the
Content-Security-Policy of the server allows nothing from elsewhere. The live page
fetches its JSON endpoint every few seconds and swaps the rendered fragment in,
keeping open ``<details>`` open.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = ["POLL_SECONDS", "card", "clock", "esc", "seconds", "shell"]

POLL_SECONDS = 2.0  # how often a live page asks for a new view

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d3557;color:#fff;padding:12px 20px}
header h1{font-size:18px;margin:0} header p{margin:2px 0 0;opacity:.85;font-size:12px}
main{padding:12px 20px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px 14px;
margin:0 0 12px}
h2{font-size:15px;margin:0 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{border:1px solid #dde1e6;border-radius:6px;padding:6px 12px;min-width:90px}
.card b{display:block;font-size:20px} .card span{font-size:12px;color:#5b6670}
.bad b{color:#b3261e} .good b{color:#1b7f3b}
.charts{display:flex;flex-wrap:wrap;gap:12px} .charts section{flex:1 1 440px}
svg{width:100%;height:auto} .bar{fill:#457b9d} .bar.fail{fill:#e63946}
.axis{font-size:10px;fill:#5b6670}
table{border-collapse:collapse;width:100%} table.narrow{width:auto}
td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eef0f2;vertical-align:top;
font-size:13px}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.msg{max-width:520px;overflow-wrap:anywhere} .input{font-family:monospace;font-size:12px}
pre{white-space:pre-wrap;font-size:12px;background:#f3f4f6;padding:6px;margin:4px 0}
.kind{font-weight:600} .state-running,.state-busy{color:#1b7f3b}
.state-killed{color:#b3261e} .muted{color:#5b6670}
progress{width:160px}
"""

# Polls the JSON endpoint and swaps the rendered view in; open <details> stay open.
# When the server is gone (a fetch that gets no answer: its batch or watch has ended),
# the page says so and since when its view is the last one, and keeps trying.
SCRIPT = """
(function(){
  var main=document.getElementById('view'), status=document.getElementById('live');
  var last=new Date().toLocaleTimeString();
  function tick(){
    fetch(main.dataset.api,{cache:'no-store'}).then(function(r){
      if(!r.ok){throw new Error('HTTP '+r.status);} return r.json();
    }).then(function(data){
      var open=[];
      main.querySelectorAll('details[open]').forEach(function(d){open.push(d.id);});
      main.innerHTML=data.html;
      open.forEach(function(id){var d=document.getElementById(id); if(d){d.open=true;}});
      last=new Date().toLocaleTimeString();
      status.textContent='live, updated '+last;
    }).catch(function(e){
      status.textContent=e instanceof TypeError
        ? 'stopped: the server of this page is gone (its batch ended, or it was stopped); '
          +'this is the view of '+last
        : 'not updated: '+e.message;
    })
      .then(function(){setTimeout(tick,INTERVAL);});
  }
  setTimeout(tick,INTERVAL);
})();
"""


def esc(value: Any) -> str:
    """``value`` as HTML text (None as nothing), quotes included."""
    return html.escape("" if value is None else str(value), quote=True)


def clock(value: float | None) -> str:
    """``1:02:03``, ``2:03``, or ``?``."""
    if value is None:
        return "?"
    minutes, secs = divmod(int(value + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def seconds(value: float | None) -> str:
    """A duration for people: µs, ms, s, or h:mm:ss past a minute."""
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if value < 60 else clock(value)


def card(label: str, value: Any, cls: str = "") -> str:
    """A summary card; ``data-key`` names it for tests (``failed: crash`` is
    ``failed-crash``)."""
    key = label.replace("failed: ", "failed-").replace(" ", "-")
    return (f'<div class="card {cls}" data-key="{esc(key)}"><b>{esc(value)}</b>'
            f"<span>{esc(label)}</span></div>")


def shell(title: str, heading: str, subtitle: str, body: str, *, api: str | None,
          note: str = "", interval: float = POLL_SECONDS) -> str:
    """A whole page around ``body`` (HTML, already escaped). With ``api`` (the JSON
    endpoint's URL) it is live: it fetches a new ``body`` every ``interval`` seconds."""
    live = '<p id="live">live</p>' if api else f'<p id="live">{esc(note)}</p>'
    script = ("" if api is None else
              "<script>" + SCRIPT.replace("INTERVAL", str(int(interval * 1000))) + "</script>")
    data_api = "" if api is None else f' data-api="{esc(api)}"'
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{esc(heading)}</h1><p>{esc(subtitle)}</p>{live}</header>"
        f'<main id="view"{data_api}>{body}</main>{script}</body></html>\n'
    )
