"""corepool: run Python functions on every core, and on a cluster, without the traps.

>>> import corepool
>>> corepool.map(abs, [-1, -2, 3], workers=2)
[1, 2, 3]

The public names below are loaded on first use, so that ``import corepool`` is cheap,
and a worker process, which imports only the engine's worker loop, starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_WHERE = {
    "map": "api",
    "imap": "api",
    "starmap": "api",
    "amap": "aio",
    "aimap": "aio",
    "Pool": "pool",
    "AsyncResult": "pool",
    "Executor": "executor",
    "cpu_count": "cpus",
    "get_context": "context",
    "PoolStats": "progress",
    "WorkerStats": "progress",
    "BrokenPool": "errors",
    "CorepoolError": "errors",
    "RemoteTraceback": "errors",
    "SerializationError": "errors",
    "TaskError": "errors",
    "TaskTimeout": "errors",
    "WorkerCrashed": "errors",
    "Shared": "sharedmem",
    "shared": "sharedmem",
    "watch": "_watch.live",
}

__all__ = [
    "AsyncResult",
    "BrokenPool",
    "CorepoolError",
    "Executor",
    "Pool",
    "PoolStats",
    "RemoteTraceback",
    "SerializationError",
    "Shared",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerStats",
    "__version__",
    "aimap",
    "amap",
    "cpu_count",
    "get_context",
    "imap",
    "map",
    "shared",
    "starmap",
    "watch",
]

if TYPE_CHECKING:
    from ._watch.live import watch
    from .aio import aimap, amap
    from .api import imap, map, starmap
    from .context import get_context
    from .cpus import cpu_count
    from .errors import (
        BrokenPool,
        CorepoolError,
        RemoteTraceback,
        SerializationError,
        TaskError,
        TaskTimeout,
        WorkerCrashed,
    )
    from .executor import Executor
    from .pool import AsyncResult, Pool
    from .progress import PoolStats, WorkerStats
    from .sharedmem import Shared, shared


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'corepool' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
