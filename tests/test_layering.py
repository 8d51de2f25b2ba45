"""The layout's rules, read from the source with ``ast`` (docs/architecture.md).

- ``_tasks/`` (what a task is) imports nothing from ``_engine/`` or ``backends/``;
- ``_engine/`` is the process backend: only ``backends/process.py`` imports it, not the
  other backends, not the faces, not the CLI;
- the task model and the backends carry no dead code: no private attribute that is
  written and never read, no parameter of a private function that is never used, no
  branch excused from coverage.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "corepool"
FACES = ("pool", "executor", "api", "aio", "core", "context")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at any place in it (lazy imports too), by its
    absolute name; ``from x import y`` counts as importing ``x.y`` as well."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _reaches(modules: set[str], target: str) -> list[str]:
    return sorted(m for m in modules if m == target or m.startswith(target + "."))


def test_imports_are_parsed_as_absolute_names() -> None:
    found = imported(PACKAGE / "backends" / "process.py")
    assert "corepool._engine.engine.ProcessEngine" in found
    assert "corepool.backends.base" in found


def test_the_task_model_imports_no_backend() -> None:
    for name, path in _modules().items():
        if name.startswith("corepool._tasks"):
            found = imported(path)
            assert not _reaches(found, "corepool._engine"), name
            assert not _reaches(found, "corepool.backends"), name


def test_only_the_process_backend_imports_the_engine() -> None:
    for name, path in _modules().items():
        is_face = name in {f"corepool.{face}" for face in FACES}
        is_backend = name.startswith("corepool.backends") and name != "corepool.backends.process"
        if is_face or is_backend or name.startswith("corepool.cli"):
            assert not _reaches(imported(path), "corepool._engine"), name


def _checked_files() -> Iterator[Path]:
    for folder in ("_tasks", "backends"):
        yield from sorted((PACKAGE / folder).glob("*.py"))


def _attribute_reads() -> set[str]:
    reads: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and not isinstance(node.ctx, ast.Store):
                reads.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                reads.add(node.value)  # getattr(obj, "_name"), __slots__
    return reads


def written_never_read(path: Path, reads: set[str]) -> list[str]:
    """Private attributes of ``self`` that ``path`` sets and nothing in corepool reads."""
    dead = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and node.attr not in reads
        ):
            dead.append(f"{path.name}:{node.lineno} self.{node.attr}")
    return dead


def unused_parameters(path: Path) -> list[str]:
    """Parameters of private functions in ``path`` that their body never uses."""
    dead = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if not node.name.startswith("_") or node.name.startswith("__"):
            continue
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        arguments = node.args
        for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]:
            name = arg.arg
            if name not in ("self", "cls") and not name.startswith("_") and name not in used:
                dead.append(f"{path.name}:{node.lineno} {node.name}({arg.arg})")
    return dead


def test_no_dead_code_in_the_task_model_and_the_backends() -> None:
    reads = _attribute_reads()
    dead: list[str] = []
    for path in _checked_files():
        dead += written_never_read(path, reads)
        dead += unused_parameters(path)
        if path.parent.name == "_tasks" and "pragma: no cover" in path.read_text():
            dead.append(f"{path.name}: a branch excused from coverage")
    assert not dead, dead


def test_the_dead_code_checks_find_what_they_look_for(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "class A:\n"
        "    def __init__(self):\n"
        "        self._kept = 1\n"
        "        self._forgotten = 2\n"
        "    def _use(self, wanted, unwanted):\n"
        "        return self._kept + wanted\n"
    )
    assert written_never_read(sample, {"_kept"}) == ["sample.py:4 self._forgotten"]
    assert unused_parameters(sample) == ["sample.py:5 _use(unwanted)"]
