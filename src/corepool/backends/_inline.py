"""Logging and print() of tasks that run in this process (thread and serial backends).

Their records go to this process's handlers as any record does; a record factory,
installed the first time such a task runs, adds the task's index and input summary
(``corepool_task``, ``corepool_input``) while a thread runs a task.

Their ``print`` writes to this process's ``sys.stdout``, and ``print`` is two writes
(the text, then the newline), so two threads' lines could mix. While tasks run in
threads other than the main one, ``sys.stdout`` / ``sys.stderr`` are wrapped: what a
task's thread writes is held until its line ends (the rest when its chunk ends) and
then written whole to the stream that was there; every other thread writes straight
through. The wrapper goes when the last such chunk ends, unless the program put
another stream in its place meanwhile (that one stays). ``COREPOOL_FORWARD_OUTPUT=0``
(read when a chunk starts) leaves the streams alone.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..forwarding import INPUT_ATTRIBUTE, TASK_ATTRIBUTE, LineWriter, Place, env_on

__all__ = ["adopt", "current", "inline_task"]


class _InlineTask:
    __slots__ = ("describe", "items", "place", "start", "writers")

    def __init__(self, start: int, items: list[Any], describe: Callable[[Any], str]) -> None:
        self.start = start
        self.items = items
        self.describe = describe
        self.place = Place()  # the run loop keeps it at the running task
        self.writers: dict[str, LineWriter] = {}


_inline = threading.local()
_lock = threading.Lock()
_factory_installed = False


def current() -> _InlineTask | None:
    """The tasks this thread runs, if any."""
    return getattr(_inline, "task", None)


def adopt(task: _InlineTask | None) -> None:
    """This (helper) thread runs a task of ``task``'s chunk."""
    _inline.task = task


def _install_record_factory() -> None:
    global _factory_installed
    with _lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            task: _InlineTask | None = getattr(_inline, "task", None)
            pos = -1 if task is None else task.place.now()
            if task is not None and 0 <= pos < len(task.items):
                setattr(record, TASK_ATTRIBUTE, task.start + pos)
                setattr(record, INPUT_ATTRIBUTE, task.describe(task.items[pos]))
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


class _Lines:
    """``sys.stdout`` / ``sys.stderr`` while tasks run in threads: whole lines only."""

    def __init__(self, target: Any, name: str) -> None:
        self._target = target
        self._name = name

    def write(self, text: str) -> int:
        task: _InlineTask | None = getattr(_inline, "task", None)
        if task is None:
            self._target.write(text)
            return len(text)
        writer = task.writers.get(self._name)
        if writer is None:
            writer = task.writers[self._name] = LineWriter(self._target.write, None, self._name)
        return writer.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if getattr(_inline, "task", None) is None:
            self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


_wrapped: dict[str, _Lines] = {}
_users = 0


def _wrap() -> None:
    global _users
    with _lock:
        _users += 1
        if _users > 1:
            return
        for name in ("stdout", "stderr"):
            target = getattr(sys, name)
            if target is not None and not isinstance(target, _Lines):
                _wrapped[name] = _Lines(target, name)
                setattr(sys, name, _wrapped[name])


def _unwrap() -> None:
    global _users
    with _lock:
        _users -= 1
        if _users:
            return
        for name, wrapper in _wrapped.items():
            if getattr(sys, name) is wrapper:  # else the program replaced it: keep theirs
                setattr(sys, name, wrapper._target)
        _wrapped.clear()


@contextlib.contextmanager
def inline_task(
    start: int, items: list[Any], describe: Callable[[Any], str]
) -> Iterator[_InlineTask]:
    """Mark this thread as running tasks ``start ..`` of ``items`` (the run loop keeps
    ``.place`` at the running task): records it makes get the task's index and input
    summary, and in a thread other than the main one, what it prints is written in
    whole lines."""
    if not _factory_installed:
        _install_record_factory()
    task = _InlineTask(start, items, describe)
    outer = getattr(_inline, "task", None)
    lines = threading.current_thread() is not threading.main_thread() and env_on(
        "COREPOOL_FORWARD_OUTPUT"
    )
    if lines:
        _wrap()
    _inline.task = task
    try:
        yield task
    finally:
        _inline.task = outer
        for writer in task.writers.values():
            writer.end_task()
        if lines:
            _unwrap()
