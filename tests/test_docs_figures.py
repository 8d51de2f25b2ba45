"""Figures quoted in docs/comparison.md agree with the recorded runs they come from.

comparison.md quotes benchmark results in prose ("tiny tasks are about 17 times
slower"). Each quote is listed here with the table cells it comes from (in
benchmarks.md, or the reliability matrix): when either is regenerated and a figure
moves, this test names the sentence to update. A quote that is reworded so that its
pattern no longer matches fails too, so no figure silently stops being checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"

Tables = dict[str, dict[str, dict[str, str]]]


def parse_tables(markdown: str) -> Tables:
    """Each ``## section``'s first table: {section: {first cell (no **): {column: cell}}}."""
    tables: Tables = {}
    section = ""
    header: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not line.startswith("|"):
            header = None  # a table ends at its first other line
            continue
        if header is None and section in tables:
            continue  # only a section's first table
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if header is None:
            header = cells
            tables[section] = {}
        elif not set(cells[0]) <= set("-: "):
            tables[section][cells[0].strip("*")] = dict(zip(header, cells, strict=True))
    return tables


def number(cell: str) -> float:
    return float(re.sub(r"[^\d.e+-]", "", cell.split("(")[0]))


def about(x: float) -> str:
    """How the prose rounds a factor: units below 20, fives below 100, else hundreds."""
    if x < 20:
        return str(round(x))
    if x < 100:
        return str(round(x / 5) * 5)
    return str(round(x / 100) * 100)


BENCH = parse_tables((DOCS / "benchmarks.md").read_text())
# The reliability matrix is the page's first table, before any "##" heading.
MATRIX = parse_tables((DOCS / "reliability.md").read_text())[""]


def matrix_seconds(scenario: str, library: str) -> str:
    """The "after N s" of a reliability matrix cell (scenario: its number, "2.")."""
    [row] = [row for name, row in MATRIX.items() if name.startswith(scenario + " ")]
    found = re.search(r"after ([\d.]+) s", row[library])
    assert found, row[library]
    return found.group(1)


def cell(section: str, library: str, column: str) -> float:
    return number(BENCH[section][library][column])


def cell_text(section: str, library: str, column: str) -> str:
    return BENCH[section][library][column]


def slower(section: str, library: str) -> str:
    """How many times corepool's throughput the library's is below (higher-is-better)."""
    column = "median (tasks/s)"
    return about(cell(section, "corepool", column) / cell(section, library, column))


TINY, CPU, FIRST, MEMORY, COLD = (
    "Tiny tasks", "CPU-bound tasks", "Time to first result", "Generator memory", "Cold start")
RATIO = "ratio vs corepool"

# (pattern with one group in comparison.md, the figure that group must read)
FIGURES: list[tuple[str, Callable[[], str]]] = [
    (r"CPU-bound work the two are equal \(ratio ([\d.]+)",
     lambda: BENCH[CPU]["multiprocessing.Pool"][RATIO]),
    (r"on tiny tasks `multiprocessing.Pool` reached ([\d.]+) of",
     lambda: BENCH[TINY]["multiprocessing.Pool"][RATIO]),
    (r"\(([\d.]+) ms to the first result of 10,000 1-ms tasks",
     lambda: f"{cell(FIRST, 'ProcessPoolExecutor', 'median (ms)'):.0f}"),
    (r"10,000 1-ms tasks against corepool's ([\d.]+) ms",
     lambda: f"{cell(FIRST, 'corepool', 'median (ms)'):.1f}"),
    (r"([\d.]+) GB of memory for a generator of",
     lambda: f"{cell(MEMORY, 'ProcessPoolExecutor', 'median (MB)') / 1000:.1f}"),
    (r"GB of memory for a generator of\s+([\d,]+) items",
     lambda: cell_text(MEMORY, "ProcessPoolExecutor", "N").split()[0]),
    (r"`chunksize=1` by default makes tiny tasks about (\d+) times slower",
     lambda: slower(TINY, "ProcessPoolExecutor")),
    (r"with default settings, tiny tasks are about (\d+) times slower",
     lambda: slower(TINY, "joblib")),
    (r"a cold start takes ([\d.]+) s against",
     lambda: f"{cell(COLD, 'joblib', 'median (s)'):.2f}"),
    (r"a cold start takes [\d.]+ s against ([\d.]+) s",
     lambda: f"{cell(COLD, 'corepool', 'median (s)'):.2f}"),
    (r"long generator \((\d+) MB against",
     lambda: f"{cell(MEMORY, 'joblib', 'median (MB)'):.0f}"),
    (r"long generator \(\d+ MB against (\d+) MB",
     lambda: f"{cell(MEMORY, 'corepool', 'median (MB)'):.0f}"),
    (r"which makes tiny tasks about (\d+) times slower",
     lambda: slower(TINY, "mpire")),
    (r"the first result of an `imap` about (\d+) ms late",
     lambda: f"{cell(FIRST, 'mpire', 'median (ms)'):.0f}"),
    (r"corepool is a pip install of four small packages and starts in ([\d.]+) s",
     lambda: f"{cell(COLD, 'corepool', 'median (s)'):.2f}"),
    (r"a crashed worker fails the whole map \(after about ([\d.]+) s\)",
     lambda: matrix_seconds("2.", "mpire")),
]

# Libraries comparison.md calls equal to corepool on CPU-bound work: within the ~15%
# that benchmarks.md itself calls noise.
EQUAL_ON_CPU = ["multiprocessing.Pool", "ProcessPoolExecutor", "joblib"]


@pytest.mark.parametrize(("pattern", "expected"), FIGURES, ids=[p for p, _ in FIGURES])
def test_quoted_figure_matches_benchmarks(pattern: str, expected: Callable[[], str]) -> None:
    text = (DOCS / "comparison.md").read_text()
    found = re.findall(pattern.replace(" ", r"\s+"), text)  # a space matches a line break
    assert len(found) == 1, f"comparison.md: {pattern!r} matches {len(found)} times, not once"
    assert found[0] == expected(), (
        f"comparison.md quotes {found[0]} where benchmarks.md now gives {expected()} "
        f"({pattern!r}): update the sentence"
    )


@pytest.mark.parametrize("library", EQUAL_ON_CPU)
def test_equal_on_cpu_bound_is_still_true(library: str) -> None:
    ratio = number(BENCH[CPU][library][RATIO])
    assert 0.85 <= ratio <= 1.15, f"comparison.md calls {library} equal on CPU-bound; ratio {ratio}"


def test_tables_are_parsed() -> None:
    """The parser found the tables the figures come from (guards the parser itself)."""
    assert cell(TINY, "corepool", RATIO) == 1.0
    assert set(BENCH[CPU]) >= {"corepool", *EQUAL_ON_CPU, "serial (no pool)"}
