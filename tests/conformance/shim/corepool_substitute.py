"""The substitution the conformance tier makes: corepool's classes in place of the stdlib's.

Nothing else of the stdlib is changed. ``Pool`` passes the start method that
``multiprocessing`` is set to (CPython's suites set it per module, and their scripts
call ``set_start_method``) as corepool's ``start_method``, unless a ``context`` is
given; ``ProcessPoolExecutor`` is ``corepool.Executor`` under the stdlib's name, so
that the scripts CPython's tests write (``from concurrent.futures import
ProcessPoolExecutor``) find it.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

import corepool


def Pool(*args: Any, **kwargs: Any) -> corepool.Pool:
    """``corepool.Pool`` on the start method ``multiprocessing`` is set to."""
    if len(args) < 5 and kwargs.get("context") is None:
        kwargs.setdefault("start_method", multiprocessing.get_start_method(allow_none=True))
    return corepool.Pool(*args, **kwargs)


class ProcessPoolExecutor(corepool.Executor):
    """``corepool.Executor``, unchanged, under the name the tests import."""


def add_test_files() -> None:
    """Let ``test.<name>`` find the copied CPython test files."""
    import test

    extra = os.environ.get("COREPOOL_CONFORMANCE_TESTS")
    if extra and extra not in test.__path__:
        test.__path__.append(extra)


def install() -> None:
    """Substitute the classes (and find the copied test files)."""
    import concurrent.futures

    multiprocessing.Pool = Pool  # type: ignore[assignment]
    concurrent.futures.ProcessPoolExecutor = ProcessPoolExecutor  # type: ignore[misc]
    add_test_files()
