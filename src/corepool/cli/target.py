"""Loading ``MODULE:FUNC`` for ``corepool run``: a dotted module name or a ``.py`` path."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from ..backends._byvalue import add_script_directory

__all__ = ["UsageError", "load_function"]


class UsageError(Exception):
    """Nothing can run: the message says what to fix (exit status 2)."""


def load_function(spec: str) -> tuple[Callable[..., Any], str]:
    """Import ``MODULE:FUNC`` (MODULE a dotted name or a ``.py`` path); returns the
    function and the target's identity for the journal (paths made absolute).

    A file is imported under its own stem with its directory put first on
    ``sys.path``, so worker processes can import it too and its functions pickle by
    reference, as those of any module do. Cluster workers (``--backend dask`` or
    ``ray``) cannot: for them that directory's modules go by value (a module run from
    the working directory too, when only ``corepool run`` put it on ``sys.path``).
    """
    module_part, colon, func_part = spec.rpartition(":")
    if not colon or not module_part or not func_part:
        raise UsageError(
            f"expected MODULE:FUNC, e.g. mypackage.tasks:process or ./tasks.py:process; "
            f"got {spec!r}"
        )
    if module_part.endswith(".py") or os.sep in module_part:
        module, identity = _import_path(module_part), os.path.abspath(module_part)
    else:
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as ``python -m`` does
            add_script_directory(os.getcwd())
        module, identity = _import_name(module_part), module_part
    fn: Any = module
    for attribute in func_part.split("."):
        try:
            fn = getattr(fn, attribute)
        except AttributeError:
            names = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_"))
            raise UsageError(
                f"{module_part} has no function {func_part!r}"
                + (f"; it has: {', '.join(names[:20])}" if names else "")
            ) from None
    if not callable(fn):
        raise UsageError(f"{spec} is a {type(fn).__name__}, not a function")
    return fn, f"{identity}:{func_part}"


def _import_name(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            raise UsageError(
                f"cannot import module {name!r} ({exc}): run from the directory that holds "
                "it, add that directory to PYTHONPATH, or give the path to its .py file"
            ) from None
        raise UsageError(_import_failed(name)) from None
    except Exception:
        raise UsageError(_import_failed(name)) from None


def _import_failed(name: str) -> str:
    return f"importing {name} failed:\n{traceback.format_exc().rstrip()}"


def _import_path(path: str) -> Any:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"no such Python file: {path}")
    directory, filename = os.path.split(full)
    name = filename[:-3] if filename.endswith(".py") else filename
    if not name.isidentifier():
        raise UsageError(
            f"{path}: {name!r} is not a valid module name; rename the file "
            "(letters, digits and underscores) so worker processes can import it"
        )
    existing = sys.modules.get(name)
    if existing is not None and _same_file(getattr(existing, "__file__", None), full):
        return existing
    if existing is not None:
        raise UsageError(
            f"{path}: a module named {name!r} is already loaded from "
            f"{getattr(existing, '__file__', 'built-in')}; rename your file"
        )
    if directory not in sys.path:
        sys.path.insert(0, directory)
    add_script_directory(directory)
    module = _import_name(name)
    if not _same_file(getattr(module, "__file__", None), full):
        raise UsageError(
            f"{path}: importing {name!r} finds {getattr(module, '__file__', 'a built-in')} "
            "instead (the name is taken); rename your file"
        )
    return module


def _same_file(a: str | None, b: str) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False
