"""Turning code, data and errors into bytes and back, with errors that say what failed.

Code (the task function, the initializer) goes through cloudpickle, so lambdas,
closures and functions defined in ``__main__`` travel by value. Data goes through the
standard pickler at protocol 5, which is fastest; only when it refuses (a lambda inside
an argument, say) does cloudpickle get a second try. When both fail, the batch is
pickled item by item to name exactly which task's argument is at fault.

Exceptions raised by a task are shipped as a :class:`FailureInfo`: the pickled
exception when it pickles, and always its type name, message and traceback text, so
the caller gets the original type back or, failing that, a :class:`TaskError`.
"""

from __future__ import annotations

import pickle
import reprlib
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .errors import RemoteTraceback, SerializationError, TaskError

__all__ = [
    "FailureInfo",
    "describe_input",
    "dumps_code",
    "dumps_data",
    "find_unpicklable",
    "loads",
]

PROTOCOL = 5
loads = pickle.loads

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = 5
_short.maxtuple = 5
_short.maxdict = 5


def describe_input(value: Any) -> str:
    """A short, never-failing repr of a task's input for error notes."""
    try:
        return _short.repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def dumps_code(obj: Any, what: str, dumps: Callable[[Any], bytes] | None = None) -> bytes:
    """Pickle a function (or initializer and its arguments) for the workers.

    A function the workers can import (a module's, or an importable ``__main__``'s)
    goes by reference, as ``multiprocessing`` sends it: a few bytes, and the workers
    use their own import of it. Anything else (a lambda, a closure, a function from
    ``python -c``) goes by value through cloudpickle. ``what`` names it in the error,
    e.g. ``"the function <lambda>"``; ``dumps`` replaces :func:`dumps_data` (the
    cluster backends send ``__main__`` by value).
    """
    try:
        return (dumps or dumps_data)(obj)
    except Exception as exc:
        raise SerializationError(
            f"{what} cannot be pickled ({_why(exc)}). Functions are sent to the worker "
            "processes with cloudpickle: one that holds a lock, an open file, a socket or "
            "a bound method of such an object cannot be sent; create that object inside "
            "the task or in the pool's initializer instead."
        ) from exc


def main_is_importable() -> bool:
    """Whether worker processes can import this program's ``__main__`` (it has a file)."""
    main = sys.modules.get("__main__")
    return bool(getattr(main, "__file__", None))


def dumps_data(obj: Any) -> bytes:
    """Pickle data at protocol 5, falling back to cloudpickle for code inside data.

    Objects whose class lives in a ``__main__`` that workers cannot import (``python -c``,
    a program on stdin, an interactive session) also go through cloudpickle, which
    sends such classes by value.
    """
    try:
        data = pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        return cloudpickle_dumps(obj)
    if b"__main__" in data and not main_is_importable():
        return cloudpickle_dumps(obj)
    return data


def cloudpickle_dumps(obj: Any, buffer_callback: Callable[[Any], Any] | None = None) -> bytes:
    """``obj`` pickled by cloudpickle (code by value), at protocol 5."""
    import cloudpickle

    return cloudpickle.dumps(  # type: ignore[no-any-return]
        obj, protocol=PROTOCOL, buffer_callback=buffer_callback
    )


def find_unpicklable(
    items: Sequence[Any], dumps: Callable[[Any], Any] | None = None
) -> dict[int, Exception]:
    """Pickle ``items`` one by one (with ``dumps``); map each position that fails to its error."""
    dumps = dumps or dumps_data
    bad: dict[int, Exception] = {}
    for pos, item in enumerate(items):
        try:
            dumps(item)
        except Exception as exc:
            bad[pos] = exc
    return bad


def argument_error(index: int, item: Any, exc: BaseException, star: bool) -> SerializationError:
    """The error for a task whose input cannot be pickled, naming the argument."""
    where = f"the input of task {index}"
    if star and isinstance(item, tuple):
        for arg_pos, arg in enumerate(item):
            try:
                dumps_data(arg)
            except Exception:
                where = f"argument {arg_pos} of task {index} (type {type(arg).__name__})"
                break
    else:
        where += f" (type {type(item).__name__})"
    error = SerializationError(f"{where} cannot be pickled: {_why(exc)}")
    error.__cause__ = exc
    return error


class FailureInfo(NamedTuple):
    """A task's exception, made safe to send: always the text, the object when it pickles."""

    type_name: str
    message: str
    traceback_text: str
    pickled: bytes | None

    @classmethod
    def capture(cls, exc: BaseException) -> FailureInfo:
        """Record ``exc`` (with its traceback) as raised in this process."""
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        pickled: bytes | None = None
        if isinstance(exc, Exception):
            try:
                # Drop the traceback and chained exceptions: the text above carries them.
                exc.__traceback__ = None
                pickled = dumps_data(exc)
            except Exception:
                pickled = None
        name = f"{type(exc).__module__}.{type(exc).__qualname__}"
        if type(exc).__module__ == "builtins":
            name = type(exc).__qualname__
        try:
            message = str(exc)
        except Exception:
            message = "<str() of the exception failed>"
        return cls(name, message, tb_text, pickled)

    def rebuild(self) -> BaseException:
        """The original exception with the remote traceback as ``__cause__``, or TaskError."""
        exc: BaseException | None = None
        if self.pickled is not None:
            try:
                candidate = pickle.loads(self.pickled)
                if isinstance(candidate, BaseException):
                    exc = candidate
            except Exception:
                exc = None
        if exc is None:
            exc = TaskError(self.message, self.type_name, self.traceback_text)
        exc.__cause__ = RemoteTraceback(self.traceback_text)
        return exc


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, also on Python 3.10 where notes are a plain attribute."""
    adder: Callable[[str], None] | None = getattr(exc, "add_note", None)
    if adder is not None:
        adder(note)
    else:  # Python 3.10
        notes = getattr(exc, "__notes__", None)
        if not isinstance(notes, list):
            notes = []
            try:
                exc.__notes__ = notes  # type: ignore[attr-defined]
            except Exception:
                return
        notes.append(note)
