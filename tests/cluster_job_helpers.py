"""Copied next to the cluster tests' user program as ``job_helpers.py``: a module of
the user's own, imported by the script, that the cluster's workers cannot import."""

from __future__ import annotations


class HelperError(ValueError):
    """An exception type from a module next to the script."""


class Table:
    """A script-side class whose instances go to the workers as shared objects."""

    def __init__(self, rows: dict[str, int]) -> None:
        self.rows = rows

    def lookup(self, key: str) -> int:
        return self.rows[key]


def cube(x: int) -> int:
    if x < 0:
        raise HelperError(f"negative: {x}")
    return x**3
