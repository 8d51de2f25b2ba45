"""Pickling for workers that do not have this program's own code (Dask and Ray).

A cluster worker has corepool and the installed packages, but not the caller's
``__main__`` (a Dask worker's ``__main__`` is the ``dask`` command) nor the modules
that sit next to the caller's script. :func:`dumps` pickles with cloudpickle and sends
the functions and classes of those *script modules* and of ``__main__`` by value,
everything else by reference, as Dask and Ray do for ``__main__`` alone.

cloudpickle gives every function it unpickles by value a dictionary of globals of its
own, so an initializer that sets a global would set it where the tasks never look.
Here the functions of one module share one namespace per worker and per caller
program (a module object kept on the worker), and a global already there is kept:
module state on a worker lives on from task to task, as in a worker process that
imported the module.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import sys
import threading
import types
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _internals

__all__ = ["add_script_directory", "dumps", "portable", "script_modules", "why_by_reference"]

PROTOCOL = 5
#: This program, as the workers' namespaces know it.
_CALLER = uuid.uuid4().hex
_MODULE_KEYS = ("__name__", "__doc__", "__package__", "__path__", "__file__")
# Never sent by value, even from a script directory: the workers run their own copy.
_NEVER = frozenset({"corepool", "cloudpickle"})

_extra_dirs: set[str] = set()


def add_script_directory(path: str) -> None:
    """Treat the modules imported from ``path`` as this program's own (sent by value)."""
    _extra_dirs.add(os.path.realpath(path))


def _script_directories() -> frozenset[str]:
    dirs = set(_extra_dirs)
    main = sys.modules.get("__main__")
    file = getattr(main, "__file__", None)
    if not file:  # python -c, stdin, a notebook: modules come from the working directory
        dirs.add(os.path.realpath(os.getcwd()))
    elif getattr(main, "__spec__", None) is None:  # python script.py (not python -m)
        dirs.add(os.path.dirname(os.path.realpath(file)))
    return frozenset(dirs)


_found: tuple[int, frozenset[str], frozenset[str]] = (-1, frozenset(), frozenset())
_realpaths: dict[str, str] = {}


def script_modules() -> frozenset[str]:
    """Names of the top-level modules imported from a script directory: the script's
    own, or the working directory without a script file, or one given to
    :func:`add_script_directory`."""
    global _found
    dirs = _script_directories()
    modules = list(sys.modules.items())
    count, seen_dirs, names = _found
    if count == len(modules) and seen_dirs == dirs:
        return names
    found = set()
    for name, module in modules:
        if "." in name or name in _NEVER or not isinstance(module, types.ModuleType):
            continue
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or name in ("__main__", "__mp_main__"):
            continue
        where = os.path.dirname(file)
        if os.path.basename(file).startswith("__init__."):
            where = os.path.dirname(where)
        real = _realpaths.get(where)
        if real is None:
            real = _realpaths[where] = os.path.realpath(where)
        if real in dirs:
            found.add(name)
    names = frozenset(found)
    _found = (len(modules), dirs, names)
    return names


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    """cloudpickle, with ``__main__`` and the script modules by value into shared
    namespaces on the worker."""

    def __init__(
        self, file: Any, local: frozenset[str], buffer_callback: Callable[[Any], Any] | None
    ) -> None:
        super().__init__(file, protocol=PROTOCOL, buffer_callback=buffer_callback)
        self.local = local
        self.by_value = False  # whether anything went by value
        self._modules_open: set[str] = set()

    def _is_local(self, module: object) -> bool:
        if not isinstance(module, str):
            return False
        return module == "__main__" or module.partition(".")[0] in self.local

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, types.ModuleType):
            if self._is_local(obj.__name__):
                return self._module_reduce(obj)
        elif isinstance(obj, types.FunctionType):
            if self._is_local(obj.__module__):
                return self._dynamic_function_reduce(obj)
        elif isinstance(obj, type) and self._is_local(obj.__module__):
            self.by_value = True
            return _internals._dynamic_class_reduce(obj)
        return super().reducer_override(obj)

    def _dynamic_function_reduce(self, func: types.FunctionType) -> Any:
        make, args, state, _, _, setter = super()._dynamic_function_reduce(func)
        module = func.__globals__.get("__name__")
        if not isinstance(module, str) or not self._is_local(module):
            return make, args, state, None, None, setter
        self.by_value = True
        code, _, defaults, kwdefaults, closure = args
        seed = {k: func.__globals__[k] for k in _MODULE_KEYS[2:] if k in func.__globals__}
        globals_ref = _Namespace(module, seed)
        return make, (code, globals_ref, defaults, kwdefaults, closure), state, None, None, (
            set_function_state
        )

    def _module_reduce(self, module: types.ModuleType) -> Any:
        self.by_value = True
        name = module.__name__
        # A second reference to a module is memoized by the pickler; one that reaches
        # here while its contents are being pickled is a cycle: those contents follow.
        if name in self._modules_open:
            return script_module, (_CALLER, name, {})
        self._modules_open.add(name)
        content = {
            k: v
            for k, v in vars(module).items()
            if not (k.startswith("__") and k.endswith("__")) or k in _MODULE_KEYS
        }
        return script_module, (_CALLER, name, content)


class _Namespace:
    """Pickles to the worker's namespace of a module (its globals dictionary)."""

    def __init__(self, name: str, seed: dict[str, Any]) -> None:
        self.name, self.seed = name, seed

    def __reduce__(self) -> tuple[Any, ...]:
        return script_namespace, (_CALLER, self.name, self.seed)


# On the worker ------------------------------------------------------------------------
_namespaces: OrderedDict[str, dict[str, types.ModuleType]] = OrderedDict()
_namespaces_lock = threading.Lock()
_CALLERS_KEPT = 8


def script_module(caller: str, name: str, content: dict[str, Any]) -> types.ModuleType:
    """The worker's copy of module ``name`` of program ``caller``; ``content`` fills in
    what it does not have yet (a value the worker already has is kept)."""
    with _namespaces_lock:
        modules = _namespaces.get(caller)
        if modules is None:
            modules = _namespaces[caller] = {}
            while len(_namespaces) > _CALLERS_KEPT:
                _namespaces.popitem(last=False)
        _namespaces.move_to_end(caller)
        module = modules.get(name)
        if module is None:
            module = modules[name] = types.ModuleType(name)
            module.__dict__["__builtins__"] = builtins.__dict__
        namespace = module.__dict__
        for key, value in content.items():
            if key in _MODULE_KEYS and namespace.get(key) is None:
                namespace[key] = value  # what relative imports inside functions need
            else:
                namespace.setdefault(key, value)
    return module


def script_namespace(caller: str, name: str, seed: dict[str, Any]) -> dict[str, Any]:
    """The globals of functions of module ``name`` of program ``caller`` on this worker."""
    return script_module(caller, name, seed).__dict__


def set_function_state(func: types.FunctionType, state: tuple[dict[str, Any], ...]) -> None:
    """cloudpickle's function state setter, except that a global the worker's namespace
    already holds is kept (set by an initializer, say), not replaced by the caller's."""
    attributes, slots = state
    func.__dict__.update(attributes)
    namespace = func.__globals__
    with _namespaces_lock:
        for key, value in slots.pop("__globals__").items():
            namespace.setdefault(key, value)
    closure = slots.pop("__closure__")
    slots.pop("_cloudpickle_submodules", None)
    if closure is not None and func.__closure__ is not None:
        for cell, source in zip(func.__closure__, closure, strict=True):
            try:
                cell.cell_contents = source.cell_contents
            except ValueError:  # an empty cell
                pass
    for key, value in slots.items():
        setattr(func, key, value)


# In the caller ------------------------------------------------------------------------
def _dump(obj: Any, local: frozenset[str], buffer_callback: Callable[[Any], Any] | None) -> (
    tuple[bytes, bool]
):
    out = io.BytesIO()
    pickler = _Pickler(out, local, buffer_callback)
    pickler.dump(obj)
    return out.getvalue(), pickler.by_value


def dumps(obj: Any) -> bytes:
    """``obj`` pickled for a worker that has corepool and the installed packages only.

    A script module that cannot go by value (it holds a lock, say) goes by reference:
    the workers must then be able to import it.
    """
    local = script_modules()
    try:
        return _dump(obj, local, None)[0]
    except Exception as exc:
        if not local:
            raise
        reason = f"{type(exc).__name__}: {exc}"
    blob = _dump(obj, frozenset(), None)[0]
    for name in local:
        fallbacks[name] = reason
    return blob


#: Why a script module last went by reference instead of by value, by module name.
fallbacks: dict[str, str] = {}


def why_by_reference(module: str) -> str:
    """Why the script module ``module`` (or its package) was sent by reference, if it was."""
    reason = fallbacks.get(module.partition(".")[0])
    if reason is None:
        return ""
    return f" (it could not go by value: {reason})"


class _Pickled:
    """A value pickled here, which the engine stores and unpickles as the value itself."""

    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (self.blob,)


def portable(value: Any) -> Any:
    """``value`` as given to an engine's own serializer (Dask's scatter, ``ray.put``):
    itself when it refers to none of this program's code, else pickled here first."""
    if isinstance(value, (bytes, bytearray, str, int, float, complex)):
        return value
    dtype = getattr(value, "dtype", None)
    if type(value).__module__ == "numpy" and not getattr(dtype, "hasobject", True):
        return value
    try:
        # Out-of-band buffers are dropped: only whether code goes by value matters.
        _, by_value = _dump(value, script_modules(), lambda buffer: None)
        plain = True
    except Exception:
        by_value, plain = True, False
    if plain and not by_value:
        return value
    return _Pickled(dumps(value))
