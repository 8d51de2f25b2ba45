"""Backends behind one interface: ``process`` (default), ``thread``, ``serial``,
``dask`` and ``ray``. The optional ones are imported only when chosen."""

from __future__ import annotations

import os
from typing import Any

from .base import Backend

__all__ = ["BACKENDS", "Backend", "backend_class", "create_backend", "resolve_backend_name"]

BACKENDS = ("process", "thread", "serial", "dask", "ray")
_EXTRAS = {"dask": "dask", "ray": "ray"}
_REMOTE = ("dask", "ray")


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


def backend_class(name: str | None) -> type[Backend]:
    """The class of a backend (its capability flags), without starting anything."""
    chosen = resolve_backend_name(name)
    if chosen == "process":
        from .process import ProcessBackend

        return ProcessBackend
    if chosen == "thread":
        from .thread import ThreadBackend

        return ThreadBackend
    if chosen == "serial":
        from .serial import SerialBackend

        return SerialBackend
    module = _import_optional(chosen)
    found: type[Backend] = module.BACKEND
    return found


def _import_optional(chosen: str) -> Any:
    try:
        return __import__(f"{__name__}.{chosen}", fromlist=["create"])
    except ImportError as exc:
        raise ImportError(
            f"the {chosen!r} backend needs extra packages: "
            f"pip install 'corepool[{_EXTRAS[chosen]}]' ({exc})"
        ) from exc


def create_backend(name: str | None, workers: int, **options: Any) -> Backend:
    """A started backend of the given kind.

    ``address=`` and ``client=`` name the cluster of the ``dask`` and ``ray``
    backends; given to another backend they are a ValueError.
    """
    chosen = resolve_backend_name(name)
    if chosen not in _REMOTE:
        for option in ("address", "client"):
            if options.get(option) is not None:
                raise ValueError(
                    f"{option}= names a cluster, for backend='dask' or backend='ray'; "
                    f"the {chosen!r} backend runs on this machine"
                )
    if chosen == "process":
        from .process import ProcessBackend

        return ProcessBackend(workers, **options)
    if chosen == "thread":
        from .thread import ThreadBackend

        return ThreadBackend(workers, **options)
    if chosen == "serial":
        from .serial import SerialBackend

        return SerialBackend(workers, **options)
    module = _import_optional(chosen)
    backend: Backend = module.create(workers, **options)
    return backend
