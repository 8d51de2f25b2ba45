"""Watching corepool work: the live pages and what they show (private).

``live.py`` is :func:`corepool.watch`; ``server.py`` the read-only HTTP server of every
page (also ``corepool dashboard``'s and ``corepool run --dashboard``'s); ``html.py``
their shared style, script and shell; ``recorder.py`` what a watched pool did;
``workers.py`` what each worker does now; ``page.py`` the watch page. Nothing here is
imported until a page is asked for (``html.py`` alone, by the command line's report).
"""
