"""The exceptions corepool raises itself.

::

    Exception
     └── CorepoolError                    anything corepool raises on its own
          ├── TaskError                   a task failed; its own exception could not be re-created
          │    ├── TaskTimeout            (also TimeoutError) ran past its timeout; worker replaced
          │    └── WorkerCrashed          (also BrokenProcessPool) the worker died under it
          │                               (exit code or signal); the pool goes on
          ├── SerializationError          (also TypeError) function, argument or result
          │                               cannot be pickled
          ├── BrokenPool                  (also concurrent.futures BrokenProcessPool) workers
          │                               cannot start at all, e.g. the initializer fails
          └── NotSupported                (also NotImplementedError) this backend cannot do
                                          what was asked (e.g. run_on_workers on Ray)

A task's *own* exception is not wrapped: it is re-raised as its original type, with a
:class:`RemoteTraceback` as ``__cause__`` that carries the worker's traceback text.

Every corepool error is also an instance of what the stdlib raises in the same situation
(:func:`stdlib_compatible`; the table is in docs/guide/errors.md), so ``except`` clauses
written for ``multiprocessing`` and ``concurrent.futures`` keep working.

Every class here pickles and unpickles to an equal object (all fields go through
``__init__``), so errors can cross process boundaries themselves.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

_E = TypeVar("_E", bound=BaseException)

__all__ = [
    "BrokenPool",
    "CorepoolError",
    "NotSupported",
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


class WorkerCrashed(TaskError, BrokenProcessPool):
    """The worker process running the task died.

    Also a ``concurrent.futures.process.BrokenProcessPool``, which is what
    ``ProcessPoolExecutor`` raises when a worker dies; here the pool replaced the
    worker and goes on (only this task failed). ``exitcode`` is the process's exit
    status (negative: killed by signal ``-exitcode``); ``reason`` says in words what
    is known (signal name, "likely out of memory", ...).

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


class NotSupported(CorepoolError, NotImplementedError):
    """The backend in use cannot do what was asked; the message says which backend can.

    Raised by ``run_on_workers`` on the Ray backend, whose workers are not addressable
    one by one from corepool.
    """


class _TracebackKind(type):
    """``isinstance(cause, RemoteTraceback)`` holds for every face's worker traceback.

    A Pool and an Executor hand the stdlib's own class for it to the caller (code that
    checks for it keeps working, see :func:`stdlib_compatible`); those carry the same
    ``traceback_text``, and count as corepool's class too.
    """

    def __instancecheck__(cls, instance: Any) -> bool:
        if super().__instancecheck__(instance):
            return True
        return (
            cls.__name__ == "RemoteTraceback"
            and isinstance(instance, _stdlib_traceback_classes())
            and isinstance(getattr(instance, "traceback_text", None), str)
        )


class RemoteTraceback(Exception, metaclass=_TracebackKind):
    """The traceback of an exception raised in a worker, attached as ``__cause__``.

    A :class:`~corepool.Pool` (and ``corepool.map``) attaches it as the stdlib's
    ``multiprocessing.pool.RemoteTraceback``, an :class:`~corepool.Executor` as the
    ``concurrent.futures`` one: each has ``.tb`` as there and ``.traceback_text``, and
    is an instance of this class too.

    Examples:
        >>> import corepool
        >>> def parse(text):
        ...     return int(text)
        >>> try:
        ...     corepool.map(parse, ["1", "x"], workers=2)
        ... except ValueError as error:
        ...     cause = error.__cause__
        >>> isinstance(cause, corepool.RemoteTraceback), "in parse" in cause.traceback_text
        (True, True)
    """

    def __init__(self, traceback_text: str) -> None:
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return "\n\nTraceback in the worker process:\n" + self.traceback_text.rstrip()


# Being also what the stdlib raises ------------------------------------------------
def also(error: _E, *kinds: type[BaseException]) -> _E:
    """``error``, made an instance of each of ``kinds`` as well (if it is not already).

    The new class subclasses ``type(error)`` and ``kinds`` and keeps the name, the
    message and the fields of ``error``; it is made once per combination and pickles
    by rebuilding the same combination. Kinds whose instance layout cannot be combined
    with ``error``'s are left out.

    Examples:
        >>> import pickle
        >>> error = also(SerializationError("cannot pickle"), pickle.PicklingError)
        >>> isinstance(error, pickle.PicklingError), type(error).__name__, str(error)
        (True, 'SerializationError', 'cannot pickle')
    """
    missing = tuple(k for k in kinds if not isinstance(error, k))
    if not missing:
        return error
    base = getattr(type(error), "_corepool_base", type(error))
    cls = _combined(base, tuple(dict.fromkeys((*_kinds_of(type(error)), *missing))))
    if cls is None:
        return error
    copy = cls.__new__(cls, *error.args)
    BaseException.__init__(copy, *error.args)
    copy.__dict__.update(vars(error))
    copy.__cause__ = error.__cause__
    copy.__context__ = error.__context__
    copy.__suppress_context__ = error.__suppress_context__
    copy.__traceback__ = error.__traceback__
    if isinstance(copy, SystemExit):
        copy.code = _exit_code(error)
    return copy  # type: ignore[return-value]


def _exited(error: BaseException | None) -> bool:
    """A task's ``SystemExit``, as it comes back (it is never re-raised as itself)."""
    return isinstance(error, TaskError) and error.type_name == "SystemExit"


def _exit_code(error: BaseException) -> int | str:
    exited = error if _exited(error) else error.__cause__
    message = exited.message if isinstance(exited, TaskError) else ""
    try:
        return int(message)
    except ValueError:
        return message or 1


def _kinds_of(cls: type[BaseException]) -> tuple[type[BaseException], ...]:
    kinds: tuple[type[BaseException], ...] = getattr(cls, "_corepool_kinds", ())
    return kinds


def _rebuild_combined(
    base: type[BaseException], kinds: tuple[type[BaseException], ...], args: tuple[Any, ...],
    state: dict[str, Any],
) -> BaseException:
    error = base(*args)
    error.__dict__.update(state)
    return also(error, *kinds)


_made: dict[tuple[type[BaseException], tuple[type[BaseException], ...]], Any] = {}


def _combined(
    base: type[BaseException], kinds: tuple[type[BaseException], ...]
) -> type[BaseException] | None:
    """The subclass of ``base`` and ``kinds``, made once (None if they cannot combine)."""
    key = (base, kinds)
    if key not in _made:
        _made[key] = _make_combined(base, kinds)
    made: type[BaseException] | None = _made[key]
    return made


def _make_combined(
    base: type[BaseException], kinds: tuple[type[BaseException], ...]
) -> type[BaseException] | None:
    def __reduce__(self: BaseException) -> tuple[Any, ...]:
        init_args = self._init_args() if isinstance(self, TaskError) else self.args
        return (_rebuild_combined, (base, kinds, init_args, dict(vars(self))))

    namespace = {
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__reduce__": __reduce__,
        "__str__": base.__str__,
        "__init__": base.__init__,
        "_corepool_base": base,
        "_corepool_kinds": kinds,
    }
    try:
        return type(base.__name__, (base, *kinds), namespace)
    except TypeError:  # instance layouts that cannot be combined
        if len(kinds) > 1:
            return _combined(base, kinds[:-1])
        return None


def stdlib_compatible(error: BaseException, face: str | None) -> BaseException:
    """``error`` as the face ``"pool"`` or ``"executor"`` hands it to the caller.

    * The worker's traceback (``__cause__``) becomes the stdlib's own class for it:
      ``multiprocessing.pool.RemoteTraceback`` for a Pool, the one of
      ``concurrent.futures.process`` for an Executor, with ``.tb`` and
      ``.traceback_text`` holding the text.
    * A :class:`SerializationError` whose cause is the pickler's own exception (what
      ``__reduce__`` raised, ``PicklingError``) is also an instance of that exception's
      class, which is what the stdlib lets through.
    * For an Executor, a task's ``sys.exit()`` (a :class:`TaskError`, also when it
      happened while pickling the result) is also a ``SystemExit``, as
      ``ProcessPoolExecutor`` re-raises it. A Pool has no such case
      (``multiprocessing.Pool`` waits forever), so there it stays a plain TaskError and
      never ends your program.

    Examples:
        >>> import pickle
        >>> error = SerializationError("the input of task 0 cannot be pickled")
        >>> error.__cause__ = pickle.PicklingError("no")
        >>> isinstance(stdlib_compatible(error, "executor"), pickle.PicklingError)
        True
    """
    cause = error.__cause__
    if isinstance(cause, RemoteTraceback) and face is not None:
        error.__cause__ = _stdlib_traceback(cause.traceback_text, face)
    if face == "executor" and (_exited(error) or _exited(cause)):
        return also(error, SystemExit)
    if (
        isinstance(error, SerializationError)
        and isinstance(cause, BaseException)
        and not isinstance(cause, (TaskError, RemoteTraceback))
        and not isinstance(error, BrokenProcessPool)  # unreadable: the stdlib breaks
    ):
        error = also(error, type(cause))
    return error


def _stdlib_traceback_classes() -> tuple[type[BaseException], ...]:
    import multiprocessing.pool
    from concurrent.futures.process import _RemoteTraceback

    pool_class: type[BaseException] = multiprocessing.pool.RemoteTraceback  # type: ignore[attr-defined]
    return (pool_class, _RemoteTraceback)


def _stdlib_traceback(text: str, face: str) -> BaseException:
    # Printed as its ``.tb``: with the same header as corepool's own class.
    shown = "\n\nTraceback in the worker process:\n" + text.rstrip()
    if face == "executor":
        from concurrent.futures.process import _RemoteTraceback

        remote: BaseException = _RemoteTraceback(shown)  # type: ignore[arg-type]
    else:
        import multiprocessing.pool

        remote = multiprocessing.pool.RemoteTraceback(shown)  # type: ignore[attr-defined]
    remote.traceback_text = text  # type: ignore[attr-defined]
    return remote
