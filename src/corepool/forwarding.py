"""Log records and printed output of tasks, brought back to the calling process.

What a task logs is handled by the caller's handlers for that logger's name, and what
it prints is written to the caller's *current* ``sys.stdout`` / ``sys.stderr``, whole
lines at a time. This module holds what every backend shares:

- :class:`Levels`, the caller's logging configuration reduced to one number per
  logger: the lowest level the caller would handle. It is taken when a pool starts and
  given to its workers, which set their loggers to it, so a record the caller would
  drop is never even created in a worker, let alone sent.
- :func:`record_fields` / :func:`handle_record`: a record as plain picklable fields
  (message formatted, exception as text) and rebuilt with ``logging.makeLogRecord``.
- :class:`LineWriter`: the stream a worker's ``sys.stdout`` / ``sys.stderr`` become;
  it sends whole lines only, and what is left of a line when a task ends (ended with a
  newline, so that no other worker's text lands on that line).
- :class:`Place`: which task of the chunk runs now, asked only when something is sent.
- ``backends/_inline.py`` uses it for thread and serial tasks (same process, same
  handlers: only the task attributes, and whole lines from threads).

Every forwarded record carries ``corepool_task`` (the task's index in its call) and
``corepool_input`` (a short repr of its input); ``record.process`` is the worker's pid.
``COREPOOL_FORWARD_LOGS=0`` and ``COREPOOL_FORWARD_OUTPUT=0`` turn either off (read
when a pool starts): workers then log and print as plain processes do.
"""

from __future__ import annotations

import contextlib
import io
import logging
import operator
import os
import pickle
import sys
import threading
from collections.abc import Callable, Iterator, Sized
from typing import Any, NamedTuple

from .serialize import describe_input

__all__ = [
    "NEVER",
    "Forward",
    "Levels",
    "LineWriter",
    "Place",
    "RecordSender",
    "env_on",
    "forward_settings",
    "handle_record",
    "record_fields",
    "write_output",
]

#: A level above every real one: the caller handles nothing at or past it.
NEVER = logging.CRITICAL + 50
#: The attributes every forwarded record gets.
TASK_ATTRIBUTE = "corepool_task"
INPUT_ATTRIBUTE = "corepool_input"
STDOUT, STDERR = 1, 2


def _handler_floor(logger: logging.Logger) -> int:
    """The lowest level a handler on ``logger``'s propagation chain accepts."""
    found: list[int] = []
    current: logging.Logger | None = logger
    while current is not None:
        found.extend(handler.level for handler in current.handlers)
        current = current.parent if current.propagate else None
    if not found:  # no handler at all: logging's last resort (stderr, WARNING) takes it
        last = logging.lastResort
        return NEVER if last is None else last.level
    return min(found)


def _threshold(logger: logging.Logger) -> int:
    if logger.disabled:
        return NEVER
    level = max(logger.getEffectiveLevel(), _handler_floor(logger))
    disabled_up_to = logging.root.manager.disable
    if disabled_up_to:
        level = max(level, disabled_up_to + 1)
    return level


class Levels:
    """Per logger name, the lowest level the caller would handle (``root`` for the rest).

    Immutable by convention. A plain class: ``dataclasses`` would be imported by every
    worker as it starts, for this one class."""

    __slots__ = ("_table", "loggers", "root")

    def __init__(self, root: int, loggers: tuple[tuple[str, int], ...]) -> None:
        self.root = root
        self.loggers = loggers
        self._table: dict[str, int] | None = None  # name -> threshold, once asked

    def __eq__(self, other: object) -> bool:  # the cached table is not part of it
        if not isinstance(other, Levels):
            return NotImplemented
        return (self.root, self.loggers) == (other.root, other.loggers)

    def __hash__(self) -> int:
        return hash((self.root, self.loggers))

    def __repr__(self) -> str:
        return f"Levels(root={self.root!r}, loggers={self.loggers!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return Levels, (self.root, self.loggers)

    @classmethod
    def of_caller(cls) -> Levels:
        """This process's logging configuration, now."""
        known = []
        for name, logger in list(logging.root.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger):
                known.append((name, _threshold(logger)))
        return cls(_threshold(logging.root), tuple(sorted(known)))

    def threshold(self, name: str) -> int:
        """The level from which a record of logger ``name`` is handled by the caller."""
        table = self._table
        if table is None:
            table = self._table = dict(self.loggers)
        while name:
            if name in table:
                return table[name]
            name = name.rpartition(".")[0]
        return self.root

    def lowest(self) -> int:
        """The lowest threshold of any logger (a worker's root is set to it to capture)."""
        return min([self.root, *(level for _, level in self.loggers)])

    def apply(self) -> None:
        """Make this process's loggers drop what the caller would drop, and nothing
        else reach a handler but the root's (the caller's handlers do the rest).

        Handlers a forked worker inherited from the caller go: they would write to the
        caller's files behind its back.
        """
        manager = logging.root.manager
        logging.disable(logging.NOTSET)
        for existing in list(manager.loggerDict.values()):
            if isinstance(existing, logging.Logger):
                existing.handlers.clear()
                existing.setLevel(logging.NOTSET)
        for name, level in self.loggers:
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = True
            logger.disabled = False
        logging.root.handlers.clear()
        logging.root.setLevel(self.root)

    def set_levels(self) -> None:
        """Only the levels of :meth:`apply` (the caller's changed; handlers stay)."""
        for name, level in self.loggers:
            logging.getLogger(name).setLevel(level)
        logging.root.setLevel(self.root)


class Forward(NamedTuple):
    """What a pool's workers forward: the caller's levels (None: no logging) and
    whether printed output goes to the caller's streams."""

    levels: Levels | None
    output: bool

    @property
    def anything(self) -> bool:
        """True if there is something to forward at all."""
        return self.levels is not None or self.output


def env_on(name: str) -> bool:
    """False if the environment variable ``name`` says 0 / false / no / off."""
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")


def forward_settings() -> Forward:
    """The forwarding a pool starting now gives its workers (environment and levels)."""
    levels = Levels.of_caller() if env_on("COREPOOL_FORWARD_LOGS") else None
    return Forward(levels, env_on("COREPOOL_FORWARD_OUTPUT"))


# Records as plain fields -------------------------------------------------------------
_formatter = logging.Formatter()


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's attributes, ready to pickle: the message formatted with its
    arguments, an exception as its formatted text, anything unpicklable as its repr."""
    fields = dict(record.__dict__)
    fields["msg"] = record.getMessage()
    fields["args"] = None
    if record.exc_info and not record.exc_text:
        fields["exc_text"] = _formatter.formatException(record.exc_info)
    fields["exc_info"] = None
    fields.pop("message", None)
    try:
        pickle.dumps(fields, protocol=5)
    except Exception:
        for key, value in list(fields.items()):
            try:
                pickle.dumps(value, protocol=5)
            except Exception:
                fields[key] = describe_input(value)
    return fields


def handle_record(
    fields: dict[str, Any], task: int | None = None, shown: str | None = None
) -> None:
    """Hand a forwarded record to this process's handlers for its logger's name.

    ``task`` and ``shown``: the task's index and input summary, when known. A handler
    that fails is the logging module's business (``handleError``), never the caller's.
    """
    if task is not None:
        fields[TASK_ATTRIBUTE] = task
        fields[INPUT_ATTRIBUTE] = shown
    try:
        record = logging.makeLogRecord(fields)
        logging.getLogger(record.name).handle(record)
    except Exception:
        pass


def write_output(stream: int, text: str) -> None:
    """Write a task's output to this process's *current* stdout or stderr (looked up
    now: a notebook replaces them)."""
    target = sys.stdout if stream == STDOUT else sys.stderr
    if target is None:
        return
    try:
        target.write(text)
        target.flush()
    except Exception:
        pass


# Which task runs now ---------------------------------------------------------------
class Place:
    """The position in the current chunk of the task running now.

    A loop that runs the chunk with ``map`` over a list iterator has no per-task hook;
    the iterator itself tells how far it got (``follow``), read only when a task logs
    or prints. A loop that goes task by task sets ``pos`` instead.
    """

    __slots__ = ("_count", "_inputs", "pos")

    def __init__(self) -> None:
        self._inputs: Any = None
        self._count = 0
        self.pos = -1

    def follow(self, inputs: Iterator[Any], items: Sized) -> None:
        """The chunk runs by consuming ``inputs`` (an iterator over ``items``)."""
        self._inputs = inputs
        self._count = len(items)

    def reset(self) -> None:
        """No chunk runs."""
        self._inputs = None
        self.pos = -1

    def now(self) -> int:
        """The position of the running task, -1 if none."""
        if self._inputs is not None:
            return self._count - operator.length_hint(self._inputs) - 1
        return self.pos


# The sending side (a worker) ---------------------------------------------------------
class RecordSender(logging.Handler):
    """The root handler of a worker: every record that reaches it goes to ``send``.

    The worker's loggers were set to the caller's levels, so what reaches it is what the
    caller handles.
    """

    def __init__(self, send: Callable[[dict[str, Any]], None]) -> None:
        super().__init__(logging.NOTSET)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._send(record_fields(record))
        except Exception:
            self.handleError(record)


class LineWriter(io.TextIOBase):
    """A text stream that hands ``send`` whole lines; the rest of a line waits for its
    end, or for :meth:`end_task` (which ends it). Thread-safe: a task's threads may print too."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, send: Callable[[str], None], original: Any, name: str) -> None:
        super().__init__()
        self._send = send
        self._original = original
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        """The worker's own descriptor (what a child process started by a task gets)."""
        if self._original is None:
            raise io.UnsupportedOperation("fileno")
        return int(self._original.fileno())

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        cut = text.rfind("\n")
        with self._lock:
            if cut < 0:
                self._pending.append(text)
                return len(text)
            self._pending.append(text[: cut + 1])
            whole = "".join(self._pending)
            self._pending = [text[cut + 1 :]] if cut + 1 < len(text) else []
        self._deliver(whole)
        return len(text)

    @property
    def pending(self) -> bool:
        """True while part of a line waits for its end."""
        return bool(self._pending)

    def end_task(self) -> None:
        """Send what is left of an unfinished line, ended (the task that printed it
        ended): the next text the caller's stream gets may be another worker's line."""
        with self._lock:
            rest = "".join(self._pending)
            self._pending = []
        if rest:
            self._deliver(rest + "\n")

    def _deliver(self, text: str) -> None:
        try:
            self._send(text)
        except Exception:
            if self._original is not None:  # the caller is gone: the worker's own stream
                with contextlib.suppress(Exception):
                    self._original.write(text)
