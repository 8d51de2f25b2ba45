"""The documentation site builds with ``mkdocs build --strict``: no warning at all.

A broken link, a missing page in the navigation, an included example file or section
that does not exist (``pymdownx.snippets``), or a docstring that mkdocstrings cannot
render fails this test with mkdocs' own output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(120)
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{output}"
    assert "WARNING" not in output, output
    for page in ("index.html", "lessons/index.html", "api/index.html", "comparison/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_every_lesson_script_is_on_a_page() -> None:
    """Each example is included by some lesson or guide page, so none is left out."""
    folders = [ROOT / "docs" / "lessons", ROOT / "docs" / "guide"]
    pages = "".join(p.read_text() for folder in folders for p in folder.glob("*.md"))
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f'"examples/{script.name}' in pages, f"no lesson includes {script.name}"


def _nav_pages(node: object) -> set[str]:
    if isinstance(node, str):
        return {node}
    if isinstance(node, dict):
        return set().union(*(_nav_pages(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_nav_pages(item) for item in node))
    return set()


def test_every_docs_page_is_in_the_nav() -> None:
    """A page missing from the nav cannot be found from the site's navigation."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    in_nav = _nav_pages(config["nav"])
    for page in sorted((ROOT / "docs").rglob("*.md")):
        relative = page.relative_to(ROOT / "docs").as_posix()
        assert relative in in_nav, f"docs/{relative} is not in mkdocs.yml's nav"
