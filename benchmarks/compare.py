"""corepool against multiprocessing.Pool, ProcessPoolExecutor, joblib and mpire.

    python benchmarks/compare.py                 # full run, writes docs/benchmarks.md
    python benchmarks/compare.py --quick         # smoke check, 1 round, small sizes
    python benchmarks/compare.py --rounds 9 --out /tmp/bench.md

Every library runs with 2 workers and its DEFAULT settings (no chunksize or batch size
is tuned), through the adapters in ``libraries.py``. The workloads:

tiny            200,000 calls of ``x*x`` mapped over ``range`` on a warm pool: the
                per-task overhead, in tasks per second.
cpu             16 pure-Python tasks of ~0.15 s each (calibrated at start) on a warm
                pool: time, and speedup over running them one by one in this process.
first result    ``imap`` over 10,000 tasks that sleep 1 ms, on a fresh, warmed pool:
                milliseconds from the call to the first result; then the rest is
                cancelled and the pool stopped, so nothing runs into the next measurement.
gen. memory     ``imap`` over a 3,000,000-item generator, every result consumed, in a
                fresh process per library: that process's peak RSS (ru_maxrss).
cold start      wall time of a fresh ``python -c`` that imports the library and maps 2
                tiny tasks, timed from outside.

The data-plane workloads (large arrays in and out, a shared array, a second map) are
described in ``data_plane.py``.

Why interleaved rounds: this machine is shared and noisy, and its speed drifts over
minutes. Timing library A for a minute and then library B would fold that drift into
the A/B comparison. Instead each round runs every library once, in a freshly shuffled
order, and the report gives per-library medians over the rounds: a slow spell then
hits all libraries alike, and the ratios between medians stay meaningful even when
absolute times do not. Warm-pool workloads create their pools (and warm them with one
tiny map) outside the timed region, as a long-running program would; ``time.perf_counter``
times everything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from common import (
    HERE,
    PYTHON_ONLY,
    REPO,
    SERIAL,
    Settings,
    Table,
    child_env,
    close_all,
    log,
    open_all,
    shuffled,
    timed,
)
from data_plane import DATA_WORKLOADS
from libraries import ALL, BY_NAME, WORKERS
from workloads import calibrate_spin, nap, spin, square

CPU_TASK_SECONDS = 0.15


# Workloads ----------------------------------------------------------------------------

def bench_tiny(settings: Settings, rng: random.Random) -> Table:
    table = Table(
        "Tiny tasks", f"`map(square, range(N))` on a warm pool, N = {settings.tiny_n:,} "
        "unless the N column says otherwise; throughput in tasks per second.",
        "tasks/s", higher_is_better=True,
    )
    libraries = open_all()
    try:
        sizes: dict[str, int] = {}
        small = settings.tiny_small_n
        for name, library in libraries.items():
            # A pilot at the small size (also a second warm-up): libraries that would
            # need more than the budget for the full size run the small one.
            seconds, _ = timed(lambda lib=library: lib.map(square, range(small)))
            projected = seconds * settings.tiny_n / small
            use_small = name in settings.tiny_always_small or projected > settings.tiny_budget
            sizes[name] = small if use_small else settings.tiny_n
            log(f"  tiny pilot {name}: {small / seconds:,.0f} tasks/s -> N={sizes[name]:,}")
        expected = {n: [square(x) for x in range(n)] for n in set(sizes.values())}
        for round_no in range(settings.rounds):
            for name in shuffled(rng, list(libraries)):
                n = sizes[name]
                seconds, out = timed(lambda lib=libraries[name], n=n: lib.map(square, range(n)))
                if out != expected[n]:
                    raise RuntimeError(f"{name} returned wrong results")
                table.samples.setdefault(name, []).append(n / seconds)
                log(f"  tiny round {round_no + 1} {name}: {n / seconds:,.0f} tasks/s")
    finally:
        close_all(libraries)
    for name, n in sizes.items():
        table.sizes[name] = f"{n:,}" + (" (smaller)" if n != settings.tiny_n else "")
    table.notes.append(
        "mpire's default `keep_alive=False` stops its workers after every `map` and starts "
        "new ones for the next, so its figures include that start-up on every call."
    )
    if any(n != settings.tiny_n for n in sizes.values()):
        table.notes.append(
            f"Libraries marked *(smaller)* ran N = {small:,} per round instead of "
            f"{settings.tiny_n:,}, because their default (for ProcessPoolExecutor: "
            "chunksize=1, one future per task) makes the full size take too long; "
            "throughput is still comparable, as per-task overhead dominates at any N."
        )
    return table


def bench_cpu(settings: Settings, rng: random.Random) -> Table:
    loops = calibrate_spin(CPU_TASK_SECONDS)
    expected = spin(loops)
    items = [loops] * settings.cpu_tasks
    log(f"  cpu: {loops:,} loops per task (~{CPU_TASK_SECONDS} s each, serially)")
    table = Table(
        "CPU-bound tasks", f"`map(spin, ...)`: {settings.cpu_tasks} pure-Python tasks of "
        f"~{CPU_TASK_SECONDS} s each ({loops:,} loop iterations, calibrated at start) on "
        "a warm pool; wall time of the whole map.",
        "s", higher_is_better=False, speedup_over=SERIAL,
    )
    libraries = open_all()
    runners: dict[str, Callable[[], list[int]]] = {
        name: (lambda lib=library: lib.map(spin, items)) for name, library in libraries.items()
    }
    runners[SERIAL] = lambda: [spin(x) for x in items]
    try:
        for round_no in range(settings.rounds):
            for name in shuffled(rng, list(runners)):
                seconds, out = timed(runners[name])
                if out != [expected] * len(items):
                    raise RuntimeError(f"{name} returned wrong results")
                table.samples.setdefault(name, []).append(seconds)
                log(f"  cpu round {round_no + 1} {name}: {seconds:.3f} s")
    finally:
        close_all(libraries)
    table.notes.append(
        f"Speedup = the serial median (the same tasks run one by one in the parent, "
        f"measured in the same rounds) / the library's median; {WORKERS} workers can "
        f"give at most {WORKERS}x."
    )
    return table


def bench_first(settings: Settings, rng: random.Random) -> Table:
    n = settings.first_n
    table = Table(
        "Time to first result", f"`imap(nap, range({n:,}))` where each task sleeps 1 ms: "
        "milliseconds from the call to the first result. Each measurement uses a fresh pool, "
        "created and warmed before the timer starts and stopped (remaining work dropped) "
        "after it.",
        "ms", higher_is_better=False,
    )
    table.notes.append(
        "ProcessPoolExecutor uses `ex.map`, which submits all futures before returning; "
        "joblib uses `Parallel(n_jobs=2, return_as=\"generator\")`; mpire `imap` and "
        "multiprocessing `imap` use their default chunksize."
    )
    for round_no in range(settings.rounds):
        for name in shuffled(rng, list(BY_NAME)):
            library = BY_NAME[name]()
            library.open()
            results = None
            try:
                start = time.perf_counter()
                results = library.imap(nap, range(n))
                first = next(results)
                seconds = time.perf_counter() - start
            finally:
                if results is None:
                    library.close()
                else:
                    library.abandon(results)
            if first != 0:
                raise RuntimeError(f"{name} returned {first!r} first")
            table.samples.setdefault(name, []).append(seconds * 1000)
            log(f"  first result round {round_no + 1} {name}: {seconds * 1000:.1f} ms")
    return table


# Linux carries the peak RSS of the process that starts a program over into that
# program's ru_maxrss (the copy made by fork counts, and exec keeps the maximum). This
# process is hundreds of MB after the tiny workload, so a child started directly would
# report that. A fresh relay interpreter in between has a far smaller peak than any
# measured run, and the child it starts reports its own peak only.
RELAY = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))"


def run_memory_child(name: str, n: int, timeout: float) -> dict[str, float]:
    child_name = "serial" if name == SERIAL else name
    command = [sys.executable, "-c", RELAY, str(HERE / "memory_child.py"), child_name, str(n)]
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory run of {name} failed:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_memory(settings: Settings, rng: random.Random) -> Table:
    table = Table(
        "Generator memory", f"`imap(identity, (i for i in range({settings.memory_n:,})))`, "
        "all results consumed, in a fresh process per library: peak RSS of that (parent) "
        "process, from `ru_maxrss`. Workers' memory is not included.",
        "MB", higher_is_better=False,
    )
    names = [cls.name for cls in ALL] + [SERIAL]
    timeout = max(300.0, 3 * settings.memory_budget)
    sizes: dict[str, int] = {}
    for name in names:
        # A pilot run gives the library's rate; the largest size of the ladder that fits
        # the time budget is used, so that no single run takes minutes.
        if settings.memory_n <= settings.memory_pilot_n or name == SERIAL:
            sizes[name] = settings.memory_n
            continue
        pilot = run_memory_child(name, settings.memory_pilot_n, timeout)
        rate = pilot["n"] / pilot["seconds"]
        fitting = [n for n in settings.memory_ladder if n / rate <= settings.memory_budget]
        sizes[name] = max(fitting) if fitting else min(settings.memory_ladder)
        log(f"  memory pilot {name}: {rate:,.0f} items/s -> N={sizes[name]:,}")
    for round_no in range(settings.memory_rounds):
        for name in shuffled(rng, names):
            result = run_memory_child(name, sizes[name], timeout)
            table.samples.setdefault(name, []).append(result["peak_mb"])
            log(f"  memory round {round_no + 1} {name}: N={sizes[name]:,} "
                f"{result['peak_mb']:.1f} MB (VmHWM {result['hwm_mb'] or 0:.1f} MB) "
                f"in {result['seconds']:.1f} s")
    for name, n in sizes.items():
        table.sizes[name] = f"{n:,}" + (" (capped)" if n != settings.memory_n else "")
    if any(n != settings.memory_n for n in sizes.values()):
        table.notes.append(
            "*(capped)*: a pilot run of "
            f"{settings.memory_pilot_n:,} items showed that {settings.memory_n:,} would take "
            f"more than {settings.memory_budget:.0f} s, so the largest of "
            f"{', '.join(f'{n:,}' for n in settings.memory_ladder)} that fits was used. "
            "A library that reads the whole generator up front would need more memory "
            "at the full size than shown."
        )
    table.notes.append(
        "mpire cannot take `len()` of a generator and then falls back to chunks of 4 "
        "items (it says so in a RuntimeWarning); ProcessPoolExecutor's `map` submits one "
        "future per item before it returns anything."
    )
    table.notes.append(
        f"`{SERIAL}` is the same loop with the builtin `map` in a fresh interpreter: "
        "the floor any library starts from."
    )
    if settings.memory_rounds == 1:
        table.notes.append("One run per library (each takes up to a minute or two); "
                           "the min-max column then equals the median.")
    return table


def bench_cold(settings: Settings, rng: random.Random) -> Table:
    table = Table(
        "Cold start", "Wall time of `python -c '<import the library; map 2 tiny tasks "
        "with 2 workers>'`, timed from outside (includes interpreter start and shutdown); "
        "multiprocessing with the `fork` start method.",
        "s", higher_is_better=False,
    )
    programs = {cls.name: cls.cold_start_code for cls in ALL}
    programs[PYTHON_ONLY] = "import workloads\n"
    with tempfile.TemporaryDirectory(prefix="corepool-bench-pycache-") as pycache:
        # Imports read cached bytecode, as they do from an installed package: with
        # PYTHONDONTWRITEBYTECODE set (as on some CI machines) an editable corepool would
        # be compiled from source on every start while site-packages come with .pyc files.
        env = child_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache

        def run(code: str) -> None:
            subprocess.run([sys.executable, "-c", code], env=env, check=True,
                           capture_output=True, timeout=120)

        for code in programs.values():
            run(code)  # untimed: fills the bytecode cache and the OS file cache
        for round_no in range(settings.rounds):
            for name in shuffled(rng, list(programs)):
                seconds, _ = timed(lambda code=programs[name]: run(code))
                table.samples.setdefault(name, []).append(seconds)
                log(f"  cold start round {round_no + 1} {name}: {seconds:.3f} s")
    table.notes.append(
        f"`{PYTHON_ONLY}` starts the interpreter and imports the workload module only."
    )
    table.notes.append(
        "Every program ran once untimed first, and all of them read their modules' "
        "bytecode from one cache (`PYTHONPYCACHEPREFIX`), as an installed package does."
    )
    return table


WORKLOADS: dict[str, Callable[[Settings, random.Random], Table | list[Table]]] = {
    "tiny": bench_tiny,
    "cpu": bench_cpu,
    "first": bench_first,
    "memory": bench_memory,
    "cold": bench_cold,
    **DATA_WORKLOADS,
}


# Report -------------------------------------------------------------------------------

def fmt(value: float, unit: str) -> str:
    if unit == "tasks/s":
        return f"{value:,.0f}"
    if unit == "ms":
        return f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    if unit == "MB":
        return f"{value:,.1f}"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}"


def fmt_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:,.0f}"
    if ratio >= 10:
        return f"{ratio:.1f}"
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:.2g}"


def render_table(table: Table) -> str:
    better = "higher is better" if table.higher_is_better else "lower is better"
    headers = ["library"]
    if table.sizes:
        headers.append("N")
    headers += [f"median ({table.unit})", "min-max"]
    if table.speedup_over:
        headers.append("speedup vs serial")
    headers.append("ratio vs corepool")
    reference = table.median(table.reference)
    rows = []
    for name, values in sorted(table.samples.items(), key=lambda kv: order_key(kv[0])):
        median = statistics.median(values)
        row = [f"**{name}**" if name == table.reference else name]
        if table.sizes:
            row.append(table.sizes.get(name, ""))
        row += [fmt(median, table.unit),
                f"{fmt(min(values), table.unit)}-{fmt(max(values), table.unit)}"]
        if table.speedup_over:
            row.append(f"{table.median(table.speedup_over) / median:.2f}x")
        row.append(fmt_ratio(median / reference))
        rows.append(row)
    lines = [f"## {table.title}", "", table.what, "",
             "| " + " | ".join(headers) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    direction = (
        "below 1: the library is slower than corepool" if table.higher_is_better
        else "above 1: the library needs more than corepool"
    )
    lines += ["", f"Better: **{better}**; the ratio is the library's median / corepool's "
              f"median ({direction}).", ""]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def order_key(name: str) -> tuple[int, str]:
    names = [cls.name for cls in ALL] + [SERIAL, PYTHON_ONLY]
    return (names.index(name), "") if name in names else (len(names), name)


def corepool_revision() -> str:
    """The commit of the corepool under test, and whether ``src/`` differs from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown commit"
    dirty = git("status", "--porcelain", "--", "src")
    return f"commit `{commit}`" + (" with uncommitted changes in src/" if dirty else "")


def versions() -> str:
    parts = []
    for package in ("corepool", "joblib", "mpire"):
        try:
            parts.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{package} (not installed)")
    return ", ".join(parts)


def render_page(tables: list[Table], settings: Settings, command: str, seed: int,
                elapsed: float) -> str:
    import corepool

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = f"""# Benchmarks

corepool side by side with `multiprocessing.Pool`, `concurrent.futures.ProcessPoolExecutor`,
joblib and mpire, every one with **2 workers and its default settings** (no chunksize or
batch size tuned). The code is in [`benchmarks/`](../benchmarks/); what each workload
measures, and why, is in the docstring of `benchmarks/compare.py`.

- Command: `{command}`
- Date: {now}; the whole run took {elapsed / 60:.1f} minutes
- Python {platform.python_version()} ({platform.python_implementation()}), \
{platform.system()} {platform.machine()}
- CPUs: {os.cpu_count()} (`os.cpu_count()`), {corepool.cpu_count()} usable \
(`corepool.cpu_count()`); a shared machine
- Versions: {versions()} (corepool at {corepool_revision()})
- Rounds: {settings.rounds} (generator memory: {settings.memory_rounds}); shuffle seed {seed}

## How to read these tables

Each round runs every library once, in a freshly shuffled order, and each table shows
the **median over the rounds** with the min-max range beside it. Interleaving means a
slow spell of this shared machine hits all libraries of a round alike, so the **ratio
vs corepool** (library median / corepool median) is the figure to look at; absolute
times drift from run to run and from machine to machine and mean little on their own.
Each table says which direction is better. Small differences (a ratio within ~10-15%
of 1, or overlapping min-max ranges) are noise here, not a result.

"""
    return header + "\n".join(render_table(table) for table in tables)


# Main ---------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark corepool against multiprocessing, ProcessPoolExecutor, "
        "joblib and mpire (2 workers, default settings, interleaved rounds).",
    )
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per workload (default 5; 1 with --quick)")
    parser.add_argument("--memory-rounds", type=int, default=1,
                        help="rounds of the slow generator-memory workload (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="1 round, small sizes: a smoke check in under a minute; "
                        "writes no page unless --out is given")
    parser.add_argument("--out", default=None,
                        help="Markdown page to write (default docs/benchmarks.md; "
                        "'-' for stdout only)")
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated workloads to run (default: {','.join(WORKLOADS)})")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for the shuffled order (default: random, printed)")
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    if args.rounds is None:
        args.rounds = 1 if args.quick else 5
    if args.rounds < 1 or args.memory_rounds < 1:
        parser.error("--rounds and --memory-rounds must be at least 1")
    if args.out is None:
        args.out = "-" if args.quick else str(REPO / "docs" / "benchmarks.md")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", *sys.argv])
    os.environ.update(child_env())  # pools started from here can import ``workloads``
    if args.quick:
        settings = Settings.quick(args.rounds, args.memory_rounds)
    else:
        settings = Settings(rounds=args.rounds, memory_rounds=args.memory_rounds)
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    log(f"seed {seed}; {settings.rounds} rounds")
    started = time.perf_counter()
    tables = []
    for name in args.only.split(","):
        log(f"{name}:")
        workload_start = time.perf_counter()
        made = WORKLOADS[name](settings, rng)
        tables.extend(made if isinstance(made, list) else [made])
        log(f"  ({time.perf_counter() - workload_start:.0f} s)")
    page = render_page(tables, settings, command, seed, time.perf_counter() - started)
    print(page)
    if args.out != "-":
        Path(args.out).write_text(page + kept_sections(Path(args.out)))
        log(f"wrote {args.out}")


#: Where the sections written by hand begin in the page: rewriting it keeps them.
HAND_WRITTEN = "<!-- Sections below are written by hand; compare.py keeps them. -->"


def kept_sections(page: Path) -> str:
    """The hand-written part of ``page`` (from :data:`HAND_WRITTEN` on), if any."""
    try:
        text = page.read_text()
    except OSError:
        return ""
    cut = text.find(HAND_WRITTEN)
    return "" if cut < 0 else "\n" + text[cut:]


if __name__ == "__main__":
    main()
