"""Imported by the fork server when it starts: import the main script there, once.

Each worker started from the fork server must see the program's main module (its
functions are pickled by reference to it). ``multiprocessing`` means to import it in
the server when ``"__main__"`` is in the preload list, but up to Python 3.13 it
never hands the server the script's path (it looks for a ``main_path`` key that
``spawn.get_preparation_data`` does not produce), so every worker re-ran the script's
top level itself: with ``import numpy`` at the top, a replacement worker cost 0.2 s
instead of a few milliseconds.

So corepool puts the script's path (or module name, for ``python -m``) in the preload
list as an entry that imports nothing (``corepool-main-path:/the/script.py``), and
this module, imported first, reads it from the server's ``preload`` argument and
imports the script as ``multiprocessing`` would. Workers forked from the server then
find their main module already there, and skip the import. If anything goes wrong,
nothing is imported here, and each worker imports the script itself, as before.
"""

from __future__ import annotations

import sys
from typing import Any

MAIN_PATH = "corepool-main-path:"
MAIN_NAME = "corepool-main-name:"


def main_entries() -> list[str]:
    """The preload entries naming this program's main module (in the parent)."""
    from multiprocessing import spawn

    try:
        data = spawn.get_preparation_data("corepool")
    except Exception:
        return []
    if "init_main_from_name" in data:
        return [MAIN_NAME + data["init_main_from_name"]]
    if "init_main_from_path" in data:
        return [MAIN_PATH + data["init_main_from_path"]]
    return []


def _requested() -> str | None:
    """The main-module entry of the fork server's preload list, if this runs there."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        if (
            frame.f_code.co_name == "main"
            and frame.f_globals.get("__name__") == "multiprocessing.forkserver"
        ):
            for entry in frame.f_locals.get("preload") or ():
                if isinstance(entry, str) and entry.startswith((MAIN_PATH, MAIN_NAME)):
                    return entry
            return None
        frame = frame.f_back
    return None


def _import_main(entry: str) -> None:
    from multiprocessing import process, spawn

    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None):
        return  # already imported (a Python whose fork server does it itself)
    current: Any = process.current_process()
    current._inheriting = True  # as in a worker: a pool started at import time refuses
    try:
        if entry.startswith(MAIN_PATH):
            spawn.import_main_path(entry[len(MAIN_PATH) :])
        else:
            spawn._fixup_main_from_name(entry[len(MAIN_NAME) :])  # type: ignore[attr-defined]
    except BaseException:
        pass  # each worker imports it then, and reports what fails
    finally:
        del current._inheriting


_entry = _requested()
if _entry is not None:
    _import_main(_entry)
