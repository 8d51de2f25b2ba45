"""corepool: run Python functions on every core, and on a cluster, without the traps.

>>> import corepool
>>> corepool.map(abs, [-1, -2, 3], workers=2)
[1, 2, 3]
"""

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

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "BrokenPool",
    "CorepoolError",
    "Executor",
    "Pool",
    "PoolStats",
    "RemoteTraceback",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerStats",
    "__version__",
    "cpu_count",
    "get_context",
    "imap",
    "map",
    "starmap",
]
