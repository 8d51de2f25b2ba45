"""JSON Lines for ``corepool run``: reading inputs, hashing them, writing result rows.

Input is read as bytes, one line at a time (never the whole file). Lines holding only
whitespace are skipped and not numbered as tasks: a task's ``index`` is its 0-based
position among the non-blank lines, its ``line`` the 1-based line number in the file.

Output rows are built as text, so a result stored in the journal as JSON is copied
into the output without being parsed again::

    {"index": 0, "ok": true, "result": ...}
    {"index": 1, "ok": false, "error": {"kind": ..., "type": ..., "message": ..., ...}}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

__all__ = [
    "MODES",
    "Parsed",
    "call_with_kwargs",
    "canonical_digest",
    "count_lines",
    "error_row",
    "ok_row",
    "parse_line",
    "read_lines",
    "result_json",
]

MODES = ("single", "star", "kwargs")
_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class Parsed:
    """One input line: its argument ``value``, or ``error`` (an ``input`` error object)."""

    value: Any = None
    error: dict[str, Any] | None = None


def read_lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """``(line_number, raw_line)`` for each non-blank line, lazily, numbered from 1."""
    for number, raw in enumerate(stream, start=1):
        if raw.strip():
            yield number, raw


def count_lines(path: str) -> int:
    """How many non-blank lines a file holds (for the progress bar's total)."""
    count = 0
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                count += 1
    return count


def _input_error(line: int, type_name: str, message: str) -> dict[str, Any]:
    return {
        "kind": "input",
        "type": type_name,
        "message": f"line {line}: {message}",
        "traceback": None,
        "line": line,
    }


def parse_line(raw: bytes, line: int, mode: str) -> Parsed:
    """Decode one line as the task's argument(s) for ``mode`` (single, star or kwargs)."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Parsed(error=_input_error(line, "UnicodeDecodeError", f"not UTF-8 ({exc})"))
    except json.JSONDecodeError as exc:
        return Parsed(error=_input_error(line, "JSONDecodeError", f"not valid JSON ({exc})"))
    if mode == "star" and not isinstance(value, list):
        return Parsed(error=_input_error(
            line, "TypeError",
            f"--star needs a JSON array of positional arguments, got {type(value).__name__}",
        ))
    if mode == "kwargs" and not isinstance(value, dict):
        return Parsed(error=_input_error(
            line, "TypeError",
            f"--kwargs needs a JSON object of keyword arguments, got {type(value).__name__}",
        ))
    return Parsed(value=value)


def canonical_digest(value: Any) -> bytes:
    """SHA-256 of the value's canonical JSON (sorted keys, no spaces): the journal key."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).digest()


def result_json(value: Any) -> str:
    """A task's result as JSON text; TypeError (saying results must be JSON) otherwise."""
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(
            f"the result (of type {type(value).__name__}) cannot be written as JSON: {exc}. "
            "corepool run writes results as JSON: return dicts, lists, strings, numbers "
            "(finite), booleans or None"
        ) from None


def ok_row(index: int, result_text: str) -> str:
    """The output line of a task that succeeded, from its result's JSON text."""
    return f'{{"index": {index}, "ok": true, "result": {result_text}}}'


def error_row(index: int, error_text: str) -> str:
    """The output line of a task that failed, from its error object's JSON text."""
    return f'{{"index": {index}, "ok": false, "error": {error_text}}}'


def call_with_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """``fn(**kwargs)``: how ``--kwargs`` calls the function in the worker."""
    return fn(**kwargs)
