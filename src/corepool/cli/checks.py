"""What ``corepool run`` checks before it runs anything: the files it will write, the
function's arity against the call mode, and the fingerprint of the function's code.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import marshal
import os
import sys
from collections.abc import Callable
from typing import Any

from .target import UsageError

__all__ = ["check_arity", "check_paths", "code_fingerprint"]


def check_paths(input_path: str | None, output: str | None, journal: str) -> None:
    """Refuse, before anything runs, files that cannot be written or would destroy the
    input: ``-o`` or the journal naming the input, a directory, or a missing folder."""
    reading = None if input_path in (None, "-") else input_path
    for option, path in (("-o", output if output not in (None, "-") else None),
                         ("--journal", journal)):
        if path is None:
            continue
        if reading is not None and _same(reading, path):
            raise UsageError(f"{option} {path} is the input file: writing it would destroy the "
                             "input; give another file name")
        if os.path.isdir(path):
            raise UsageError(f"{option} {path} is a directory; give a file name (e.g. "
                             f"{os.path.join(path, 'out.jsonl')})")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise UsageError(f"{option} {path}: the folder {folder} does not exist; "
                             "create it first")
    if output not in (None, "-") and _same(output, journal):
        raise UsageError(f"-o {output} and --journal {journal} are the same file; give "
                         "two different files")


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_arity(fn: Callable[..., Any], mode: str, name: str) -> None:
    """With one value per line, refuse a function that cannot take exactly one argument
    (a user who meant ``--star`` or ``--kwargs`` would otherwise see every row fail)."""
    if mode != "single":
        return
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: let the rows tell
    try:
        signature.bind(None)
    except TypeError:
        required = [p.name for p in signature.parameters.values()
                    if p.default is p.empty
                    and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        needs = f"needs {len(required)} arguments ({', '.join(required)})" if required \
            else f"takes no argument ({signature})"
        example = json.dumps({required[0] if required else "x": 1})
        raise UsageError(
            f"{name} {needs}, but each input line is passed as its one argument. Use "
            "--star for lines that are JSON arrays of positional arguments (e.g. [1, 2]), "
            f"or --kwargs for JSON objects of keyword arguments (e.g. {example})"
        ) from None


def code_fingerprint(fn: Callable[..., Any]) -> str | None:
    """A digest of the code that computes the results: the source file of the function's
    module (any edit to it counts), else the function's bytecode; None when neither can
    be read. Code in other modules the function calls is not covered."""
    digest = hashlib.sha256()
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    filename = getattr(module, "__file__", None)
    if filename:
        try:
            with open(filename, "rb") as f:
                digest.update(f.read())
            return "source:" + digest.hexdigest()[:32]
        except OSError:
            pass
    code = getattr(inspect.unwrap(fn), "__code__", None)
    if code is None:
        return None
    digest.update(marshal.dumps(code))
    return "code:" + digest.hexdigest()[:32]
