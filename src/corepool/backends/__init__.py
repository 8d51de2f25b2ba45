"""Backends behind one interface: ``process`` (default), ``thread``, ``serial``,
``dask`` and ``ray``. The optional ones are imported only when chosen."""

from __future__ import annotations

import os
from typing import Any

from .base import Backend

__all__ = ["BACKENDS", "Backend", "create_backend", "resolve_backend_name"]

BACKENDS = ("process", "thread", "serial", "dask", "ray")
_EXTRAS = {"dask": "dask", "ray": "ray"}


def resolve_backend_name(name: str | None) -> str:
    """The backend to use: ``name``, else ``$COREPOOL_BACKEND``, else ``process``."""
    chosen = name or os.environ.get("COREPOOL_BACKEND") or "process"
    chosen = chosen.strip().lower()
    if chosen not in BACKENDS:
        raise ValueError(
            f"unknown backend {chosen!r}: choose one of {', '.join(BACKENDS)}"
            + (" (from the COREPOOL_BACKEND environment variable)" if not name else "")
        )
    return chosen


def create_backend(name: str | None, workers: int, **options: Any) -> Backend:
    """A started backend of the given kind."""
    chosen = resolve_backend_name(name)
    if chosen == "process":
        from .process import ProcessBackend

        return ProcessBackend(workers, **options)
    if chosen == "thread":
        from .thread import ThreadBackend

        return ThreadBackend(workers, **options)
    if chosen == "serial":
        from .serial import SerialBackend

        return SerialBackend(workers, **options)
    try:
        module = __import__(f"{__name__}.{chosen}", fromlist=["create"])
    except ImportError as exc:
        raise ImportError(
            f"the {chosen!r} backend needs extra packages: "
            f"pip install 'corepool[{_EXTRAS[chosen]}]' ({exc})"
        ) from exc
    backend: Backend = module.create(workers, **options)
    return backend
