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
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MODES",
    "BadInput",
    "NotJSON",
    "Parsed",
    "call_kwargs",
    "call_line",
    "call_star",
    "call_to_json",
    "canonical_digest",
    "count_lines",
    "decode_value",
    "error_row",
    "ok_row",
    "parse_line",
    "result_json",
    "scan_value",
]

MODES = ("single", "star", "kwargs")
_READ_BLOCK = 1 << 20
_BLANK_LINE = re.compile(rb"^[ \t\r\f\v]*\n", re.MULTILINE)

DIGEST_BYTES = 16  # of SHA-256: a chance collision is out of reach (2**-64 at 4e9 lines)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encoder(separators: tuple[str, str], *, sort_keys: bool,
             allow_nan: bool) -> Callable[[Any], str]:
    """A JSON encoder built once (``json.dumps`` with options builds one per call)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (e.g. PyPy)
        return json.JSONEncoder(ensure_ascii=False, separators=separators,
                                sort_keys=sort_keys, allow_nan=allow_nan).encode
    chunks = make(None, _not_json, json.encoder.encode_basestring, None, separators[1],
                  separators[0], sort_keys, False, allow_nan)
    encode_str = json.encoder.encode_basestring

    def encode(value: Any) -> str:
        cls = value.__class__
        if cls is int:
            return int.__repr__(value)
        if cls is str:
            return str(encode_str(value))
        return "".join(chunks(value, 0))

    return encode


_canonical = _encoder((",", ":"), sort_keys=True, allow_nan=True)
_result = _encoder((", ", ": "), sort_keys=False, allow_nan=False)


@dataclass(frozen=True)
class Parsed:
    """One input line: its argument ``value``, or ``error`` (an ``input`` error object)."""

    value: Any = None
    error: dict[str, Any] | None = None


def count_lines(path: str) -> int:
    """How many non-blank lines a file holds (the total for progress and ETA): newlines
    counted block by block, minus the blank lines."""
    count = 0
    tail = b""
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            block = tail + block
            cut = block.rfind(b"\n") + 1
            block, tail = block[:cut], block[cut:]
            count += block.count(b"\n") - len(_BLANK_LINE.findall(block))
    return count + (1 if tail.strip() else 0)


#: The decoder's scanner (set by its constructor; not in the typeshed stubs):
#: ``scan_value(text, i)`` is ``(value, end)`` for the JSON value starting at ``i``, or
#: StopIteration. Only a value that ends the text is the whole line.
scan_value: Callable[[str, int], tuple[Any, int]] = (
    json.JSONDecoder().scan_once  # type: ignore[attr-defined]
)


def decode_value(raw: bytes) -> Any:
    """The JSON value of one line (as ``json.loads`` would give it), or ValueError.

    The common case skips ``json.loads``' own checks: the scanner reads the value at the
    start of the line, and only whitespace may follow it.
    """
    text = raw.decode("utf-8")
    try:
        value, end = scan_value(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: let json.loads decide
        return json.loads(text)
    if end < len(text) and text[end:].strip(" \t\n\r"):  # JSON's whitespace only
        return json.loads(text)  # raises, naming what follows the value
    return value


def _input_error(line: int, type_name: str, message: str) -> dict[str, Any]:
    return {
        "kind": "input",
        "type": type_name,
        "message": f"line {line}: {message}",
        "traceback": None,
        "line": line,
    }


def _read(raw: bytes, mode: str) -> tuple[Any, tuple[str, str] | None]:
    """``(value, None)``, or ``(None, (type name, message))`` for a line that is no task
    for ``mode``."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, ("UnicodeDecodeError", f"not UTF-8 ({exc})")
    except json.JSONDecodeError as exc:
        return None, ("JSONDecodeError", f"not valid JSON ({exc})")
    if mode == "star" and not isinstance(value, list):
        return None, ("TypeError", "--star needs a JSON array of positional arguments, "
                                   f"got {type(value).__name__}")
    if mode == "kwargs" and not isinstance(value, dict):
        return None, ("TypeError", "--kwargs needs a JSON object of keyword arguments, "
                                   f"got {type(value).__name__}")
    return value, None


def parse_line(raw: bytes, line: int, mode: str) -> Parsed:
    """Decode one line as the task's argument(s) for ``mode`` (single, star or kwargs)."""
    value, problem = _read(raw, mode)
    return Parsed(value=value) if problem is None else Parsed(error=_input_error(line, *problem))


def canonical_digest(value: Any) -> bytes:
    """SHA-256 (its first 16 bytes) of the value's canonical JSON (sorted keys, no
    spaces): with the occurrence number, the journal key."""
    return hashlib.sha256(_canonical(value).encode("utf-8")).digest()[:DIGEST_BYTES]


def result_json(value: Any) -> str:
    """A task's result as JSON text; TypeError (saying results must be JSON) otherwise."""
    try:
        return _result(value)
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


# How a worker calls the function with ``--star`` and ``--kwargs``.
def call_star(fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    """``fn(*args)`` (``--star``)."""
    return fn(*args)


def call_kwargs(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Any:
    """``fn(**kwargs)`` (``--kwargs``)."""
    return fn(**kwargs)


class BadInput:
    """A line that is no task (not UTF-8, not JSON, not the shape ``--star`` or
    ``--kwargs`` needs), as :func:`call_line` finds it where it runs: the error but its
    line number, which the runner adds (:meth:`error`)."""

    __slots__ = ("message", "type_name")

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name, self.message = type_name, message

    def __reduce__(self) -> tuple[type[BadInput], tuple[str, str]]:
        return BadInput, (self.type_name, self.message)

    def error(self, line: int) -> dict[str, Any]:
        """The ``input`` error object of line ``line``."""
        return _input_error(line, self.type_name, self.message)


class NotJSON:
    """A task's result that cannot be written as JSON: why (see :func:`result_json`)."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __reduce__(self) -> tuple[type[NotJSON], tuple[str]]:
        return NotJSON, (self.message,)


def call_to_json(fn: Callable[..., Any], value: Any,
                 clock: Callable[[], int] = time.perf_counter_ns) -> tuple[str | NotJSON, int]:
    """``(fn(value) as JSON text, microseconds the call took)``: every task of ``corepool
    run`` runs through this, where it runs. The journal holds each task's duration, and
    the result comes back as the text the journal and the output hold: the runner's
    process, which every result passes through, does not encode them one by one. A
    result JSON cannot hold comes back as :class:`NotJSON`, its row an error row."""
    start = clock()
    result = fn(value)
    micros = (clock() - start) // 1000
    try:
        return result_json(result), micros
    except TypeError as exc:
        return NotJSON(str(exc)), micros


_NEEDS: dict[str, type] = {"star": list, "kwargs": dict}


def call_line(fn: Callable[..., Any], mode: str, raw: bytes,
              clock: Callable[[], int] = time.perf_counter_ns,
              ) -> tuple[bytes | None, str | NotJSON | BadInput, int | None]:
    """One input line run where the task runs: decoded, keyed, called and its result
    written as JSON. The runner's first run on a journal (no line to skip, so no key
    needed before the run) sends raw lines, and its own process, which every line and
    result passes through, does no per-line JSON work.

    Returns ``(digest, payload, micros)`` (see :func:`canonical_digest` and
    :func:`call_to_json`), or ``(None, BadInput, None)`` for a line that is no task. An
    exception of the function propagates (it may be retried).
    """
    needs = _NEEDS.get(mode)
    try:
        value = decode_value(raw)
        usable = needs is None or value.__class__ is needs
    except ValueError:  # not UTF-8, not JSON
        usable = False
    if not usable:  # _read says why
        problem = _read(raw, mode)[1]
        assert problem is not None
        return None, BadInput(*problem), None
    digest = canonical_digest(value)
    payload, micros = call_to_json(fn, value, clock)
    return digest, payload, micros
