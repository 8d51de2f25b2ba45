"""The exceptions corepool raises itself.

::

    Exception
     └── CorepoolError                    anything corepool raises on its own
          ├── TaskError                   a task failed; its own exception could not be re-created
          │    ├── TaskTimeout            (also TimeoutError) ran past its timeout; worker replaced
          │    └── WorkerCrashed          the worker died under it (exit code or signal)
          ├── SerializationError          (also TypeError) function, argument or result
          │                               cannot be pickled
          └── BrokenPool                  (also concurrent.futures BrokenProcessPool) workers
                                          cannot start at all, e.g. the initializer fails

A task's *own* exception is not wrapped: it is re-raised as its original type, with a
:class:`RemoteTraceback` as ``__cause__`` that carries the worker's traceback text.

Every class here pickles and unpickles to an equal object (all fields go through
``__init__``), so errors can cross process boundaries themselves.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = [
    "BrokenPool",
    "CorepoolError",
    "RemoteTraceback",
    "SerializationError",
    "TaskError",
    "TaskTimeout",
    "WorkerCrashed",
]


class CorepoolError(Exception):
    """Base class of every error corepool raises itself.

    A task's own exception is not one: it comes back as its own type.

    Examples:
        >>> import corepool
        >>> kinds = (corepool.TaskTimeout, corepool.WorkerCrashed, corepool.BrokenPool)
        >>> all(issubclass(kind, corepool.CorepoolError) for kind in kinds)
        True
    """


class TaskError(CorepoolError):
    """A task failed and its own exception cannot be re-created in the caller.

    Carries the remote exception's type name, message and traceback text. That happens
    when an exception class's ``__init__`` takes other arguments than it passes to
    ``Exception``, so it cannot be rebuilt from its ``args``.

    Examples:
        >>> import corepool
        >>> class Odd(Exception):
        ...     def __init__(self, value, limit):
        ...         super().__init__(f"{value} is above {limit}")
        >>> def check(x):
        ...     raise Odd(x, 2)
        >>> [error] = corepool.map(check, [3], workers=2, on_error="return")
        >>> type(error).__name__, error.message
        ('TaskError', '3 is above 2')
    """

    def __init__(self, message: str, type_name: str = "", traceback_text: str = "") -> None:
        # Exception.__init__, not super(): TaskTimeout is also an OSError (TimeoutError),
        # whose __init__ would read the arguments as errno and strerror.
        Exception.__init__(self, message)
        self.message = message
        self.type_name = type_name
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._init_args(), self.__dict__)

    def _init_args(self) -> tuple[Any, ...]:
        return (self.message, self.type_name, self.traceback_text)

    def __str__(self) -> str:
        if self.type_name:
            return f"{self.type_name}: {self.message}"
        return self.message


class TaskTimeout(TaskError, TimeoutError):
    """A task ran past its timeout; the worker running it was stopped and replaced.

    Also a ``TimeoutError``, so existing ``except TimeoutError`` clauses catch it.

    Examples:
        >>> import corepool, time
        >>> [error] = corepool.map(time.sleep, [60], workers=2, timeout=0.2, on_error="return")
        >>> type(error).__name__, isinstance(error, TimeoutError), error.timeout
        ('TaskTimeout', True, 0.2)
    """

    def __init__(self, message: str, timeout: float | None = None) -> None:
        TaskError.__init__(self, message, "TaskTimeout", "")
        self.timeout = timeout

    def _init_args(self) -> tuple[Any, ...]:
        return (self.message, self.timeout)

    def __str__(self) -> str:
        return self.message


class WorkerCrashed(TaskError):
    """The worker process running the task died.

    ``exitcode`` is the process's exit status (negative: killed by signal ``-exitcode``);
    ``reason`` says in words what is known (signal name, "likely out of memory", ...).

    Examples:
        >>> import corepool, os
        >>> [error] = corepool.map(os._exit, [3], workers=2, on_error="return")
        >>> type(error).__name__, error.exitcode
        ('WorkerCrashed', 3)
        >>> corepool.map(abs, [-1], workers=2)  # the pool replaced the worker
        [1]
    """

    def __init__(self, message: str, exitcode: int | None = None, reason: str = "") -> None:
        TaskError.__init__(self, message, "WorkerCrashed", "")
        self.exitcode = exitcode
        self.reason = reason

    def _init_args(self) -> tuple[Any, ...]:
        return (self.message, self.exitcode, self.reason)

    def __str__(self) -> str:
        return self.message


class SerializationError(CorepoolError, TypeError):
    """A function, argument or result could not be pickled or unpickled.

    The message names which one (function, argument of task *i*, result of task *i*),
    its type, and why. Also a ``TypeError``, as ``pickle`` raises.

    Examples:
        >>> import corepool, threading
        >>> [error] = corepool.map(str, [threading.Lock()], workers=2, on_error="return")
        >>> type(error).__name__, isinstance(error, TypeError)
        ('SerializationError', True)
        >>> str(error).split(":")[0]
        'the input of task 0 (type lock) cannot be pickled'
    """


class BrokenPool(CorepoolError, BrokenProcessPool):
    """The pool cannot run tasks at all: its workers fail to start.

    Raised when the worker initializer fails, or when workers die while starting up
    (for example a script without an ``if __name__ == "__main__":`` guard).

    Examples:
        >>> import corepool
        >>> def connect():
        ...     raise RuntimeError("no database")
        >>> with corepool.Pool(1, initializer=connect) as pool:
        ...     try:
        ...         pool.map(abs, [1])
        ...     except corepool.BrokenPool as error:
        ...         print(error)
        the worker initializer raised RuntimeError: no database; no task can run in this pool
    """


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, attached as ``__cause__``.

    Examples:
        >>> import corepool
        >>> def parse(text):
        ...     return int(text)
        >>> try:
        ...     corepool.map(parse, ["1", "x"], workers=2)
        ... except ValueError as error:
        ...     cause = error.__cause__
        >>> type(cause).__name__, "in parse" in cause.traceback_text
        ('RemoteTraceback', True)
    """

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return "\n\nTraceback in the worker process:\n" + self.traceback_text.rstrip()
