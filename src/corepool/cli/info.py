"""``corepool info``: what corepool sees on this machine, and what it can use."""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from .. import __version__
from ..backends import resolve_backend_name
from ..backends.process import default_start_method, describe_transport
from ..cpus import cpu_report

__all__ = [
    "BackendStatus",
    "backend_statuses",
    "default_backend",
    "gather",
    "package_versions",
    "render",
    "run",
]

PACKAGES = ("cloudpickle", "psutil", "threadpoolctl", "tqdm", "numpy")
# backend name -> (module whose import must work, pip extra that installs it)
OPTIONAL_BACKENDS = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can be used here, and if not, how to get it."""

    name: str
    available: bool
    detail: str


def package_versions() -> dict[str, str | None]:
    """Installed version of each package corepool uses, ``None`` when not installed."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _optional_backend(name: str, module: str, extra: str) -> BackendStatus:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split(".")[0] == module:
            return BackendStatus(name, False, f"not installed: pip install 'corepool[{extra}]'")
        return BackendStatus(name, False, f"import {module} failed: {exc}")
    except Exception as exc:  # a broken install can raise anything at import
        return BackendStatus(name, False, f"import {module} failed: {type(exc).__name__}: {exc}")
    return BackendStatus(name, True, f"available ({module} imports)")


def backend_statuses() -> list[BackendStatus]:
    """Every backend: the local three always work; dask and ray need their extras."""
    statuses = [
        BackendStatus("process", True, "available"),
        BackendStatus("thread", True, "available"),
        BackendStatus("serial", True, "available"),
    ]
    for name, (module, extra) in OPTIONAL_BACKENDS.items():
        statuses.append(_optional_backend(name, module, extra))
    return statuses


def default_backend() -> str:
    """The backend ``corepool.map`` uses without ``backend=`` (``$COREPOOL_BACKEND`` applies)."""
    try:
        return resolve_backend_name(None)
    except ValueError as exc:
        return f"invalid: {exc}"


def _start_method() -> str:
    try:
        return default_start_method()
    except ValueError:  # an invalid $COREPOOL_TRANSPORT, reported beside
        return "unknown"


def gather() -> dict[str, Any]:
    """Everything ``corepool info`` reports, as JSON-ready data."""
    report = cpu_report()
    return {
        "corepool": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "cpus": {
            "usable": report.usable,
            "machine": report.machine,
            "affinity": report.affinity,
            "cgroup_quota": report.cgroup_quota,
            "reasons": report.reasons(),
        },
        "transport": describe_transport(),
        "start_method": _start_method(),
        "default_backend": default_backend(),
        "default_backend_env": os.environ.get("COREPOOL_BACKEND"),
        "packages": package_versions(),
        "backends": {s.name: {"available": s.available, "detail": s.detail}
                     for s in backend_statuses()},
    }


def render(data: dict[str, Any]) -> str:
    """The human-readable report."""
    python = data["python"]
    lines = [
        f"corepool {data['corepool']}",
        f"Python {python['version']} ({python['implementation']}) {python['executable']}",
        f"usable CPUs: {data['cpus']['usable']}",
        *(f"  {reason}" for reason in data["cpus"]["reasons"]),
        f"transport: {data['transport']['name']} ({data['transport']['reason']})",
        f"start method: {data['start_method']}",
    ]
    valid = not data["default_backend"].startswith("invalid")
    source = " (from COREPOOL_BACKEND)" if data["default_backend_env"] and valid else ""
    lines.append(f"default backend: {data['default_backend']}{source}")
    lines.append("packages:")
    width = max(len(name) for name in data["packages"])
    for name, version in data["packages"].items():
        lines.append(f"  {name:<{width}}  {version or 'not installed'}")
    lines.append("backends:")
    for name, status in data["backends"].items():
        lines.append(f"  {name:<8}  {status['detail']}")
    return "\n".join(lines)


def run(*, as_json: bool = False) -> int:
    """Print the report (as JSON with ``as_json``); returns the exit code."""
    data = gather()
    print(json.dumps(data, indent=2) if as_json else render(data))
    return 0
