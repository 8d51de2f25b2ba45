"""What happens when a task misbehaves: corepool against five other process pools.

    python benchmarks/reliability.py                    # everything; writes docs/reliability.md
    python benchmarks/reliability.py --only 2,8         # some scenarios; prints the matrix
    python benchmarks/reliability.py --libraries corepool,pebble --out /tmp/rel.md

Libraries: corepool (``corepool.map``), ``multiprocessing.Pool``,
``concurrent.futures.ProcessPoolExecutor``, joblib (``Parallel(n_jobs=2)``, loky),
pebble (``pebble.ProcessPool``) and mpire (``mpire.WorkerPool(n_jobs=2)``), each with two
workers, its default start method and its documented way of mapping a function, used
the way a ``with`` block uses it (see ``reliability_child.py`` for the exact calls).

Method. Every scenario runs for every library in a FRESH process,
``reliability_child.py SCENARIO LIBRARY``, started in a new session (so it and all
its workers form one process group and one session that nothing else shares). The
child maps a task over 20 inputs of which input 5 misbehaves, and prints what it sees
as it sees it: the exception (its type, whether it is the task's own ``BadInput``,
whether the worker's traceback is attached), the time the map took, whether the
misbehaving worker is still alive (the task writes its pid to a file first), whether
the SAME pool then runs a new task (scenario 10), and how long closing the pool took.
A phase that does not return within 8 s (4 s for the follow-up task, 5 s for closing)
is reported as a hang by a timer in the child, which then probes the pool from that
timer thread and exits. Independently, the driver gives each child a hard wall-clock
limit (20 s by default); past it, it kills the child's whole process group and records
the run as hanging. Scenarios 1-4 and 6 also run a second time (variant "salvage")
with the library's way of keeping the other 19 results: ``on_error="return"``,
``imap``, futures, a result generator.

Signals. For scenarios 8 and 9 the child maps 20 tasks that sleep 30 s. Once it
reports that the map has run for 1 s, the driver sends SIGINT to the child's process
group (8: what Ctrl-C in a terminal does) or to the child's pid alone (8p), or SIGKILL
to the child's pid alone (9). It then measures the time until the child exits, counts
the tracebacks on its stderr other than the parent's own, and checks which of the
processes the child had started are still alive (8: 1 s after the child exited; 9:
polled for 5 s).

Cleanup. After every run the driver looks for leftover processes both by pid (every
process the child reported) and by session id, records them, SIGKILLs them (workers
first; a resource tracker gets 3 s to clean up by itself once they are gone, as it
would when orphaned workers finish) and checks with psutil that none remains. It
lists ``/dev/shm`` before and after each run: a new entry that no live process maps any
more (per ``/proc/*/maps``) is recorded as leaked by that library and removed. At the
end it checks that the driver has no child left.

Runs happen one after another (two cores, shared machine); timings are single runs,
meant as "0.2 s" versus "hangs", not as benchmarks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CHILD = HERE / "reliability_child.py"
MARKER = "@@rel "
SHM = Path("/dev/shm")

sys.path.insert(0, str(HERE))
from reliability_child import (  # noqa: E402  (a sibling module, not a package)
    BAD,
    LONG_TASK_SECONDS,
    MAP_LIMIT,
    N_TASKS,
    TIMEOUT,
    USER_TIMEOUT,
)

LIBRARIES = [
    "corepool",
    "multiprocessing.Pool",
    "ProcessPoolExecutor",
    "joblib",
    "pebble",
    "mpire",
]
COLUMN = {  # the matrix's column headings
    "corepool": "corepool",
    "multiprocessing.Pool": "multiprocessing.Pool",
    "ProcessPoolExecutor": "ProcessPoolExecutor",
    "joblib": "joblib (loky)",
    "pebble": "pebble",
    "mpire": "mpire",
}
SALVAGE_HOW = {
    "corepool": '`on_error="return"`',
    "multiprocessing.Pool": "`imap`",
    "ProcessPoolExecutor": "`submit` + `result()`",
    "joblib": '`return_as="generator"`',
    "pebble": "the `map` iterator",
    "mpire": "`imap`",
}
TIMEOUT_HOW = {
    "corepool": f"`corepool.map(..., timeout={TIMEOUT})`",
    "multiprocessing.Pool": f"`map_async(...).get(timeout={USER_TIMEOUT})`",
    "ProcessPoolExecutor": f"`map(..., timeout={USER_TIMEOUT})`",
    "joblib": f"`Parallel(n_jobs=2, timeout={TIMEOUT})`",
    "pebble": f"`pool.map(..., timeout={TIMEOUT})`",
    "mpire": f"`pool.map(..., task_timeout={TIMEOUT})`",
}
SCENARIOS = {  # id: (row heading, scenario argument of the child)
    "1": ("1. a task raises `BadInput(ValueError)`", "1"),
    "2": ("2. a task calls `os._exit(1)`", "2"),
    "3": ("3. a task segfaults (`ctypes.string_at(0)`)", "3"),
    "4": ("4. a task is SIGKILLed (as by the OOM killer)", "4"),
    "5": ("5. a task hangs (`time.sleep(3600)`), 0.5 s per-task timeout", "5"),
    "6": ("6. an input cannot be pickled (`threading.Lock()`)", "6"),
    "7": ("7. the function is a lambda", "7"),
    "8": ("8. Ctrl-C: SIGINT to the process group, as a terminal sends it", "8"),
    "8p": ("8p. SIGINT to the parent process only (`kill -INT`)", "8"),
    "9": ("9. the parent is SIGKILLed during a map", "9"),
    "10": ("10. the same pool runs a new task after scenarios 1-7", ""),
}
SALVAGED = ("1", "2", "3", "4", "6")  # these also run the "salvage" variant


# --- processes and /dev/shm ----------------------------------------------------------


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def session_members(sid: int) -> set[int]:
    found = set()
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and alive(proc.pid):
                found.add(proc.pid)
        except OSError:
            pass
    return found


def describe_process(pid: int) -> str:
    try:
        cmd = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        cmd = "?"
    return f"{pid} {cmd[:120]}"


def kill_all(pids: Iterable[int]) -> None:
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def shm_entries() -> set[str]:
    try:
        return set(os.listdir(SHM))
    except OSError:
        return set()


def shm_mapped() -> set[str]:
    """The /dev/shm names that some live process still maps."""
    names = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps") as f:
                for line in f:
                    if "/dev/shm/" in line:
                        path = line.split("/dev/shm/", 1)[1].strip()
                        names.add(path.removesuffix(" (deleted)"))
        except OSError:
            pass
    return names


def remove_shm(name: str) -> None:
    path = SHM / name
    try:
        if path.is_dir():
            for sub in sorted(path.rglob("*"), reverse=True):
                sub.rmdir() if sub.is_dir() else sub.unlink()
            path.rmdir()
        else:
            path.unlink()
    except OSError:
        pass


# --- one run -------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    variant: str
    library: str
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""
    returncode: int | None = None
    seconds: float = 0.0  # start to exit (or to the kill)
    killed_at_limit: bool = False
    exit_after_done: float | None = None  # from the child's last report to its exit
    signal_to_exit: float | None = None  # scenarios 8 and 9
    alive_after: list[str] = field(default_factory=list)  # processes left by the child
    workers_after: int = 0  # how many of those are workers (not helpers)
    orphans_gone_after: float | None = None  # scenario 9
    shm_leaked: list[str] = field(default_factory=list)

    def first(self, event: str) -> dict[str, Any] | None:
        return next((e for e in self.events if e["event"] == event), None)

    def known_pids(self, role: str | None = None) -> set[int]:
        """The processes the child reported (``[pid, role]``; the mark is a bare pid)."""
        pids = set()
        for e in self.events:
            for child in e.get("children", []):
                pid, kind = child if isinstance(child, list) else (child, "worker")
                if role in (None, kind):
                    pids.add(pid)
        return pids


def _read_lines(stream: Any, sink: queue.Queue[tuple[float, str] | None]) -> None:
    for raw in iter(stream.readline, b""):
        sink.put((time.time(), raw.decode(errors="replace")))
    sink.put(None)


def run_one(scenario: str, variant: str, library: str, limit: float, tmp: Path) -> Run:
    run = Run(scenario, variant, library)
    mark = tmp / f"mark-{scenario}-{variant}-{library}"
    env = dict(os.environ)
    env.update(
        REL_MARK=str(mark),
        PYTHONPATH=os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    env.pop("COREPOOL_BACKEND", None)
    shm_before = shm_entries()
    args = [sys.executable, str(CHILD), SCENARIOS[scenario][1], library, variant]
    t0 = time.time()
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=tmp,
        env=env,
    )
    lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
    errors: list[str] = []
    readers = [
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True),
        threading.Thread(
            target=lambda: errors.extend(
                b.decode(errors="replace") for b in iter(proc.stderr.readline, b"")
            ),
            daemon=True,
        ),
    ]
    for reader in readers:
        reader.start()

    def collect(until: float, want: str | None = None) -> bool:
        """Read events until ``want`` arrives (True), or the deadline or EOF (False)."""
        while True:
            try:
                item = lines.get(timeout=max(0.0, min(0.05, until - time.time())))
            except queue.Empty:
                if time.time() >= until:
                    return False
                continue
            if item is None:
                lines.put(None)  # stay at EOF for the next call
                return False
            arrived, text = item
            if text.startswith(MARKER):
                event = json.loads(text[len(MARKER) :])
                event["arrived"] = arrived
                run.events.append(event)
                if event["event"] == want:
                    return True

    deadline = t0 + limit
    if scenario in ("8", "8p", "9") and collect(deadline, want="running"):
        children = run.known_pids("worker")
        t_sig = time.time()
        if scenario == "8":
            os.killpg(proc.pid, signal.SIGINT)
        elif scenario == "8p":
            os.kill(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        deadline = t_sig + limit
        try:
            proc.wait(timeout=limit)
            run.signal_to_exit = time.time() - t_sig
        except subprocess.TimeoutExpired:
            pass
        if scenario == "9":  # how long do the workers outlive their parent?
            while time.time() < t_sig + 5 and any(alive(p) for p in children):
                time.sleep(0.02)
            if not any(alive(p) for p in children):
                run.orphans_gone_after = time.time() - t_sig
    try:
        proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        run.killed_at_limit = True
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    run.seconds = time.time() - t0
    run.returncode = proc.returncode
    # Surviving workers may hold the pipes open: read what is there, without waiting for EOF.
    collect(time.time() + 0.3)
    if run.events and not run.killed_at_limit:
        last = max(e["arrived"] for e in run.events)
        run.exit_after_done = t0 + run.seconds - last

    # Leftovers: whatever the child started that outlives it (a grace second to exit).
    if mark.exists():
        try:
            run.events.append({"event": "mark", "children": [int(mark.read_text())]})
        except ValueError:
            pass
    suspects = run.known_pids() | session_members(proc.pid)
    suspects.discard(proc.pid)
    grace = time.time() + (0.0 if scenario == "9" else 1.0)
    while time.time() < grace and any(alive(p) for p in suspects):
        time.sleep(0.05)
    survivors = sorted(p for p in suspects if alive(p))
    run.alive_after = [describe_process(p) for p in survivors]
    run.workers_after = len(set(survivors) & run.known_pids("worker"))
    # Workers first; a resource tracker then sees its pipe close and unlinks what it
    # tracks, as it would once orphaned workers finish their task. Kill it only if not.
    trackers = [p for p in survivors if "resource_tracker" in describe_process(p)]
    kill_all(p for p in survivors if p not in trackers)
    grace = time.time() + 3.0
    while time.time() < grace and any(alive(p) for p in trackers):
        time.sleep(0.05)
    kill_all(trackers)
    left = [p for p in run.known_pids() | session_members(proc.pid) if alive(p)]
    if left:
        kill_all(left)
        print(f"    warning: had to kill {left} twice", file=sys.stderr)

    collect(time.time() + 2)  # now every writer is gone: read up to EOF
    for reader in readers:
        reader.join(timeout=2)
    run.stderr = "".join(errors)

    time.sleep(0.2)  # resource trackers unlink what they track when their owner is gone
    new = shm_entries() - shm_before
    if new:
        in_use = shm_mapped()
        for name in sorted(new - in_use):
            run.shm_leaked.append(name)
            remove_shm(name)
    return run


# --- turning runs into cells ---------------------------------------------------------


def short_type(error: dict[str, Any]) -> str:
    return error["type"].rsplit(".", 1)[-1]


def seconds(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:.2f} s" if value < 1 else f"{value:.1f} s"


def map_outcome(run: Run, scenario: str) -> str:
    hang = run.first("hang")
    result = run.first("map")
    took = (run.first("map_seconds") or {}).get("seconds")
    if hang and hang["phase"] in ("open", "map"):
        return f"**hangs** (no result after {MAP_LIMIT:.0f} s)"
    if result is None:
        if run.killed_at_limit:
            return "**hangs** (killed at the limit)"
        return f"child died (exit code {run.returncode})"
    if result["ok"]:
        if scenario == "7":
            return "works" if result.get("correct") else "wrong results"
        return "returns" + ("" if result.get("correct") else " WRONG results")
    error = result["error"]
    text = f"{short_type(error)} after {seconds(took)}"
    if scenario == "1":
        text = (
            f"{short_type(error)} ({'type kept' if error['is_bad_input'] else 'type lost'}, "
            f"{'worker traceback' if error['worker_traceback'] else 'no worker traceback'}) "
            f"after {seconds(took)}"
        )
    return text


def again_outcome(run: Run) -> tuple[str, str]:
    """(short text, class) for 'does the same pool run a new task?'"""
    again = run.first("again")
    if again is None:
        return "", "unknown"
    if again.get("hang"):
        return "pool does not answer", "no"
    if again.get("ok"):
        if again.get("from_watchdog"):
            return "the pool still runs new tasks", "yes-but"
        return "pool usable", "yes"
    if again.get("from_watchdog"):
        return f"**the pool refuses new tasks** ({short_type(again['error'])})", "no"
    return f"**pool broken** ({short_type(again['error'])})", "no"


def exit_notes(run: Run) -> list[str]:
    notes = []
    hang = run.first("hang")
    watchdog_exit = hang is not None
    if hang and hang["phase"] == "close":
        notes.append("**leaving `with` hangs** (waits for the hung task)")
    elif run.killed_at_limit:
        notes.append("**hangs at exit** (killed at the limit)")
    elif not watchdog_exit and run.exit_after_done is not None and run.exit_after_done > 2:
        notes.append(f"exit takes {seconds(run.exit_after_done)}")
    if run.alive_after and not watchdog_exit and not run.killed_at_limit:
        notes.append(f"{len(run.alive_after)} process(es) outlive the program")
    if run.shm_leaked:
        notes.append(f"leaks {len(run.shm_leaked)} /dev/shm entr(ies)")
    return notes


def salvage_outcome(run: Run) -> str:
    how = SALVAGE_HOW[run.library]
    hang = run.first("hang")
    if hang and hang["phase"] == "map":
        return f"others via {how}: {hang['results_so_far']}/{N_TASKS - 1}, then **hangs**"
    result = run.first("map")
    if result is None:
        return f"others via {how}: none (child died)"
    if not result["ok"]:
        return f"others via {how}: none ({short_type(result['error'])})"
    return f"others via {how}: {result['salvaged']}/{N_TASKS - 1}"


def cell(runs: dict[tuple[str, str, str], Run], scenario: str, library: str) -> str:
    if scenario == "10":
        return pool_after_cell(runs, library)
    if scenario in ("8", "8p"):
        return interrupt_cell(runs[(scenario, "plain", library)])
    if scenario == "9":
        return orphan_cell(runs[(scenario, "plain", library)])
    run = runs[(scenario, "plain", library)]
    parts = [map_outcome(run, scenario)]
    if scenario == "5":
        worker = next((e for e in run.events if e["event"] == "misbehaving_worker"), None)
        if worker is not None and run.first("map") is not None:
            parts.append("hung worker keeps running" if worker["alive"] else "worker stopped")
    salvage = runs.get((scenario, "salvage", library))
    if salvage is not None:
        parts.append(salvage_outcome(salvage))
    again, _ = again_outcome(run)
    if again:
        parts.append(again)
    parts += exit_notes(run)
    return "; ".join(p for p in parts if p)


CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def worker_tracebacks(stderr: str) -> int:
    """Tracebacks on stderr that are not the parent's own (chained) one.

    The parent's traceback is the one with a frame ``in <module>``, together with the
    blocks chained before it; the rest were printed by other processes (workers)."""
    blocks = re.split(r"^Traceback \(most recent call last\):$", stderr, flags=re.M)[1:]
    parent = 0
    for i in range(len(blocks) - 1, -1, -1):
        if " in <module>" in blocks[i]:
            parent = 1
            while i > 0 and any(phrase in blocks[i - 1] for phrase in CHAINED):
                parent += 1
                i -= 1
            break
    return len(blocks) - parent


def interrupt_cell(run: Run) -> str:
    if run.first("running") is None:
        return f"did not start (exit code {run.returncode})"
    if run.signal_to_exit is None:
        text = "**hangs** (killed 20 s after the signal)"
        if run.first("closing") is not None:
            text += "; `KeyboardInterrupt` raised, then leaving `with` waits for the tasks"
    else:
        last = run.stderr.strip().splitlines()[-1:] or ["(nothing)"]
        what = last[0].split(":")[0][:40]
        lines = len(run.stderr.splitlines())
        text = (
            f"{what} after {seconds(run.signal_to_exit)}; "
            f"{worker_tracebacks(run.stderr)} worker traceback(s), {lines} lines on stderr"
        )
    if run.signal_to_exit is not None:
        if run.alive_after:
            text += (
                f"; **{len(run.alive_after)} process(es) left alive** ({run.workers_after} workers)"
            )
        else:
            text += "; no process left"
    if run.shm_leaked:
        text += f"; leaks {len(run.shm_leaked)} /dev/shm entr(ies)"
    return text


def orphan_cell(run: Run) -> str:
    if run.first("running") is None:
        return f"did not start (exit code {run.returncode})"
    workers = len(run.known_pids("worker"))
    helpers = len(run.alive_after) - run.workers_after
    if run.orphans_gone_after is not None:
        text = f"workers gone after {seconds(run.orphans_gone_after)}"
    else:
        text = f"**{run.workers_after} of {workers} busy workers orphaned** (alive 5 s later)"
    if helpers:
        text += f"; {helpers} helper process(es) stay with them"
    if run.shm_leaked:
        text += f"; leaks {len(run.shm_leaked)} /dev/shm entr(ies)"
    return text


def pool_after_cell(runs: dict[tuple[str, str, str], Run], library: str) -> str:
    verdicts: dict[str, list[str]] = {}
    for scenario in ("1", "2", "3", "4", "5", "6", "7"):
        run = runs.get((scenario, "plain", library))
        if run is None:
            continue
        _, verdict = again_outcome(run)
        verdicts.setdefault(verdict, []).append(scenario)
    words = {
        "yes": "yes after {}",
        "yes-but": "new tasks run after {} while the failed map hangs",
        "no": "**no** after {}",
        "unknown": "not reached after {}",
    }
    return "; ".join(
        words[v].format(", ".join(verdicts[v]))
        for v in ("yes", "yes-but", "no", "unknown")
        if v in verdicts
    )


# --- the page ------------------------------------------------------------------------

COMMENTARY = {
    "1": """**Exception.** All six libraries re-raise the task's own exception type with the
worker's traceback attached, so corepool is only *equal* here; its extra is a note
naming the task index and its input. The difference is in the other 19 results. A
plain `map` loses them everywhere. corepool keeps them in the same call with
`on_error="return"` (or `"skip"`). pebble's `map` iterator, `multiprocessing`'s
`imap` and one `ProcessPoolExecutor` future per task do as well (equal). joblib's
result generator and mpire's `imap` stop at the first error. `multiprocessing.Pool.map`
raises only once the whole map has finished; the others raise when the failed task
is reached (corepool: the first failure in input order).""",
    "2": """**`os._exit`.** corepool sees the worker die, fails only that task with
`WorkerCrashed` (the message gives the task, the pid and the exit code), replaces the
worker and goes on: `on_error="return"` delivers the other 19 results, and the pool
runs the next task. pebble is equal in effect (`ProcessExpired`, "Abnormal
termination", and its iterator continues past it), but its message says less. joblib
(`TerminatedWorkerError`) and mpire (`RuntimeError`, after a second or more) lose the
rest of the map but recover for the next call. `ProcessPoolExecutor` fails every
pending future with `BrokenProcessPool` and stays broken. `multiprocessing.Pool`
replaces the worker but never learns the task is lost: `map` waits for ever, and `imap`
stops at the lost task.""",
    "3": """**Segfault.** The same picture as `os._exit`: to a pool a native crash is just
another dead worker. corepool's `WorkerCrashed` names the signal (SIGSEGV, "usually in
C code"). pebble is equal in effect. joblib and mpire lose the map but recover.
`ProcessPoolExecutor` breaks, and `multiprocessing.Pool` hangs.""",
    "4": """**SIGKILL (the OOM killer).** The same again. corepool's message adds that
SIGKILL usually means another process or the kernel's OOM killer, and its
`worker_memory_limit=` option can turn runaway memory into a `MemoryError` first (not
measured here). joblib's message mentions excessive memory use as a possible cause,
too.""",
    "5": """**Hung task.** corepool, pebble, mpire and joblib have a per-task timeout. Each
fails the map 0.6-0.85 s after it started (the hung task starts at about 0.15 s),
kills the hung worker, and runs the next task: corepool is equal to them, not better
(its message names the task and the worker's pid). With corepool you can also keep the other results
(`on_error="return"`) or retry (`retries=`). `multiprocessing.Pool` and
`ProcessPoolExecutor` can only stop *waiting* (`get(timeout)` / `map(timeout=)`): the
hung worker keeps sleeping and holds one of the two workers for the rest of the hour.
Leaving a `ProcessPoolExecutor`'s `with` block then waits for the hung task (the
program's exit would too). `multiprocessing.Pool`'s `with` block terminates its
workers, so it does not hang there.""",
    "6": """**Unpicklable input.** corepool raises `SerializationError` (also a `TypeError`)
naming the task and the input's type. Only that task fails: `on_error="return"` keeps
the other 19. `multiprocessing`, `ProcessPoolExecutor` and pebble raise a bare
`TypeError: cannot pickle '_thread.lock' object` that does not say which input, and
joblib raises a `PicklingError`. All of them keep a usable pool, so they are equal to
corepool apart from the message and the salvage column. mpire's map hangs: the queue's feeder thread
only prints the pickling error on stderr and drops the task, the map waits for it for
ever, and the pool refuses new maps meanwhile.""",
    "7": """**Lambda.** corepool ships functions with cloudpickle, so lambdas, closures and
functions defined in `__main__` work. joblib (cloudpickle too) and mpire (under its
default `fork`, workers inherit the function) are equal. `multiprocessing`,
`ProcessPoolExecutor` and pebble pickle functions by name and refuse at once with an
`AttributeError`; their pools stay usable.""",
    "8": """**Ctrl-C.** A terminal sends SIGINT to the whole foreground process group,
workers included. corepool's workers ignore it. The parent raises `KeyboardInterrupt`
at once, stops the workers, and only its own traceback is printed. joblib is equal.
mpire is close (a little slower, with a chained parent traceback).
`multiprocessing.Pool` is just as fast, but its workers print their own
`KeyboardInterrupt` tracebacks (how many depends on timing). With
`ProcessPoolExecutor` and pebble the parent gets its `KeyboardInterrupt`, but leaving
the `with` block waits for every submitted task (20 tasks of 30 s here). Ctrl-C
effectively does not stop the program.""",
    "8p": """**SIGINT to the parent alone** (a `kill -INT`, or a supervisor that signals only
the main pid). Only the parent gets `KeyboardInterrupt`. corepool, joblib,
`multiprocessing.Pool` and mpire stop their workers and exit at once. Nobody prints
worker tracebacks now, so `multiprocessing.Pool` is equal to corepool here.
`ProcessPoolExecutor` and pebble again wait for the tasks.""",
    "9": """**Parent SIGKILLed.** Nothing runs in a SIGKILLed process, so only workers that
watch for their parent's death can follow it. With *busy* workers, corepool is the only
one of the six whose workers go. Its workers arm `PR_SET_PDEATHSIG`. A worker forked
straight from your program (see
[how workers start](guide/processes.md#how-workers-start-and-what-each-one-sees))
has your program as its parent; one started from the fork server has the server as
its parent, which exits when your program does, once each worker has closed its own
copy of the server's "client alive" pipe (a first version of corepool did not, and its
busy workers lived on just like everyone else's: this table caught it). Idle workers
also see their channel close. The five others leave busy workers running until their
task ends. (corepool's cell was re-measured after that fix with `--only 9 --libraries
corepool`; the other cells are from the full run.) The full run predates forking a
program's first workers from it: in it, every corepool worker came from the fork
server.""",
    "10": """**Same pool afterwards.** corepool's pool runs the next task after every
failure above, and so does pebble's. joblib and mpire recover for the next call:
joblib restarts its workers after a crash, and mpire starts new workers for every map
by default. The exception is mpire after an unpicklable input, where the hung map
blocks the pool. `multiprocessing.Pool` replaces dead workers and runs new tasks, but
the map that lost a task never returns. `ProcessPoolExecutor` is broken for good by
any worker death.""",
}


def versions() -> list[tuple[str, str]]:
    out = [("python", platform.python_version())]
    for dist in ("corepool", "joblib", "pebble", "mpire", "cloudpickle", "psutil"):
        try:
            out.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            out.append((dist, "not installed"))
    try:
        from joblib.externals import loky

        out.append(("loky (in joblib)", loky.__version__))
    except ImportError:
        pass
    return out


def start_methods() -> str:
    import multiprocessing

    return multiprocessing.get_start_method()


def describe_setup(command: str, scenarios: list[str], libraries: list[str]) -> dict[str, Any]:
    return {
        "command": command,
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "scenarios": scenarios,
        "libraries": libraries,
        "machine": f"{platform.system()} {platform.release()}, {os.cpu_count()} cores "
        f"(shared, noisy); multiprocessing's default start method `{start_methods()}` "
        "(corepool's: `forkserver`)",
        "versions": ", ".join(f"{name} {ver}" for name, ver in versions()),
    }


def render(runs: dict[tuple[str, str, str], Run], meta: dict[str, Any]) -> str:
    libraries = meta["libraries"]
    rows = [s for s in SCENARIOS if s in meta["scenarios"]]
    out = [
        "# Reliability: what happens when a task misbehaves",
        "",
        "Generated by `benchmarks/reliability.py`; do not edit the matrix by hand.",
        "",
        f"Command: `{meta['command']}` (from the repository root)  ",
        f"Date: {meta['started']}, {meta['wall']:.0f} s in all  ",
        f"Machine: {meta['machine']}  ",
        f"Versions: {meta['versions']}",
        "",
        f"Each cell is one run in a fresh process: a map of {N_TASKS} tasks over 2 workers "
        f"where input {BAD} misbehaves (scenarios 1-7), or a map of {N_TASKS} tasks that "
        f'sleep {LONG_TASK_SECONDS} s (8, 9). "pool usable" means the same pool then '
        'ran a new task; "others via X" is a second run that tries to keep the other '
        f"{N_TASKS - 1} results the library's way. **Bold** marks a hang, a broken pool "
        "or a leftover process. How it is measured: the docstring of "
        "`benchmarks/reliability.py`. The peers were installed with "
        "`pip install -e '.[bench]' pebble`.",
        "",
        "| scenario | " + " | ".join(COLUMN[lib] for lib in libraries) + " |",
        "|---|" + "---|" * len(libraries),
    ]
    for scenario in rows:
        cells = [cell(runs, scenario, lib).replace("|", "\\|") for lib in libraries]
        out.append(f"| {SCENARIOS[scenario][0]} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Scenario 5 uses each library's own per-task timeout where it has one, and "
        "otherwise a timeout on the wait, as a user would: "
        + "; ".join(f"{COLUMN[lib]}: {TIMEOUT_HOW[lib]}" for lib in libraries)
        + '. "Leaving `with`" is what the library\'s `with` block does on exit '
        "(`terminate()` for `multiprocessing.Pool` and mpire, `shutdown(wait=True)` "
        "for `ProcessPoolExecutor`, `close()` + `join()` for pebble); corepool's "
        "default pool and joblib's executor need no closing.",
        "",
        "## What corepool does, and where a peer is as good or better",
        "",
        "The commentary was written from the run recorded above; the matrix is "
        "regenerated by each run.",
        "",
    ]
    for scenario in rows:
        out += [COMMENTARY[scenario].replace("\n", " "), ""]
    leaks = [
        (run.library, run.scenario, run.variant, name)
        for run in runs.values()
        for name in run.shm_leaked
    ]
    out += ["## Leftovers", ""]
    if leaks:
        out.append(
            "New `/dev/shm` entries that no process mapped any more after a run "
            "(removed by the script):"
        )
        out.append("")
        for lib, scenario, variant, name in leaks:
            out.append(f"- {lib}, scenario {scenario} ({variant}): `{name}`")
    else:
        out.append("No run left an entry in `/dev/shm`.")
    out.append("")
    outlived = [
        run
        for run in runs.values()
        if run.alive_after
        and run.scenario != "9"  # its cells say it
        and run.first("hang") is None
        and not run.killed_at_limit
    ]
    if outlived:
        out.append(
            "Processes that outlived their program, scenario 9 aside (killed by the script):"
        )
        out.append("")
        for run in outlived:
            out.append(
                f"- {run.library}, scenario {run.scenario} ({run.variant}): "
                + ", ".join(f"`{p}`" for p in run.alive_after)
            )
    else:
        out.append(
            "Apart from scenario 9, no process outlived a program that ended by itself or "
            "on SIGINT. (Runs that hung were ended by the script; it killed what they left.)"
        )
    out.append("")
    if "driver_children_left" in meta:
        left = meta["driver_children_left"]
        out.append(
            f"After the last run the driver had {left or 'no'} child process(es) of its own left."
        )
        out.append("")
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------


def plan(scenarios: list[str], libraries: list[str]) -> list[tuple[str, str, str]]:
    jobs = []
    for scenario in scenarios:
        if scenario == "10":
            continue
        for library in libraries:
            jobs.append((scenario, "plain", library))
            if scenario in SALVAGED:
                jobs.append((scenario, "salvage", library))
    return jobs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        help="comma-separated scenarios: 1-10 and 8p ('8' also runs 8p; '10' runs 1-7)",
    )
    parser.add_argument("--libraries", help="comma-separated, of: " + ", ".join(LIBRARIES))
    parser.add_argument("--limit", type=float, default=20.0, help="hard limit per run (s)")
    parser.add_argument(
        "--out",
        help="the page to write (default: docs/reliability.md "
        "for a full run; a partial run only prints)",
    )
    parser.add_argument("--json", help="also write the raw observations here")
    parser.add_argument(
        "--from-json",
        help="run nothing: render the page again from observations saved with --json",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = list(SCENARIOS)
    if args.only:
        wanted = set(args.only.split(","))
        if "8" in wanted:
            wanted.add("8p")
        if "10" in wanted:
            wanted.update("1234567")
        unknown = wanted - set(SCENARIOS)
        if unknown:
            raise SystemExit(f"unknown scenario(s): {sorted(unknown)}")
        scenarios = [s for s in SCENARIOS if s in wanted]
    libraries = LIBRARIES
    if args.libraries:
        libraries = args.libraries.split(",")
        unknown = set(libraries) - set(LIBRARIES)
        if unknown:
            raise SystemExit(f"unknown librar(ies): {sorted(unknown)}; known: {LIBRARIES}")
    out = args.out
    if out is None and not args.only and not args.libraries:
        out = str(REPO / "docs" / "reliability.md")

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        runs = {(r["scenario"], r["variant"], r["library"]): Run(**r) for r in saved["runs"]}
        page = render(runs, saved["meta"])
        if args.out:
            Path(args.out).write_text(page)
        else:
            print(page)
        return 0

    command = shlex.join(["python", "benchmarks/reliability.py", *(argv or sys.argv[1:])])
    meta = describe_setup(command, scenarios, libraries)
    t0 = time.time()
    runs: dict[tuple[str, str, str], Run] = {}
    jobs = plan(scenarios, libraries)
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        for n, (scenario, variant, library) in enumerate(jobs, 1):
            run = run_one(scenario, variant, library, args.limit, Path(tmp))
            runs[(scenario, variant, library)] = run
            summary = cell(runs, scenario, library) if variant == "plain" else salvage_outcome(run)
            print(
                f"[{n:3}/{len(jobs)} {time.time() - t0:5.0f} s] {scenario:>2} {variant:7} "
                f"{library:20} {run.seconds:5.1f} s  {summary}",
                flush=True,
            )
    meta["wall"] = time.time() - t0

    leftover = psutil.Process().children(recursive=True)
    meta["driver_children_left"] = len(leftover)
    if leftover:
        print(f"warning: killing leftover children {[p.pid for p in leftover]}", file=sys.stderr)
        kill_all(p.pid for p in leftover)

    page = render(runs, meta)
    if args.json:
        saved = {"meta": meta, "runs": [run.__dict__ for run in runs.values()]}
        Path(args.json).write_text(json.dumps(saved, indent=1, default=repr))
    if out:
        Path(out).write_text(page)
        print(f"wrote {out} ({meta['wall']:.0f} s)")
    else:
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
