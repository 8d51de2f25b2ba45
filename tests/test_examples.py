"""Every script in examples/ runs, exits 0, and prints the lines its lesson page shows.

The lesson pages (docs/lessons/) include the scripts' code and a recorded run of each
(docs/lessons/output/); the recorded runs are checked for the same lines, so a script
changed without recording it again fails here too. Timings are never checked.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
RECORDED = ROOT / "docs" / "lessons" / "output"

# For each script, regular expressions that must each match a line of its output.
EXPECTED: dict[str, list[str]] = {
    "gil.py": [
        r"^how +wall +speed +cores$",
        r"^serial \(a for loop\) +[\d.]+ s +- +[\d.]+$",
        r"^threads \(ThreadPoolExecutor, 4\) +[\d.]+ s +[\d.]+x +[\d.]+$",
        r"^processes \(multiprocessing.Pool, 2\) +[\d.]+ s +[\d.]+x +[\d.]+$",
        r"^corepool Pool\(4, backend='thread'\) +[\d.]+ s +[\d.]+x +[\d.]+$",
        r"^corepool Pool\(2\), processes +[\d.]+ s +[\d.]+x +[\d.]+$",
    ],
    "process_queue.py": [
        r"^deadlock: join\(\) waited 1 s and the child is still alive,$",
        r"^get\(\) then join\(\): 200,000 items, child exit code 0$",
        r"^fixed order: 200,000 items, child exit code 0$",
        r"^Pipe request/response: \[4, 9, 16\], server exit code 0$",
        r"^Pipe deadlock: after 1 s both ends are still blocked in send\(\)$",
        r"^recv\(\) on one end: 200,000 items; peer exit code 0$",
        r"^corepool.map: 200,000 items returned in [\d.]+ s; no queue, no join$",
        r"^corepool.map squares: \[4, 9, 16\]$",
    ],
    "pools.py": [
        r"^Pool.map: \[0, 1, 4, 9, 16, 25\]$",
        r"^apply_async after the with block: no result \(TimeoutError after 1 s\)$",
        r"^ProcessPoolExecutor.map: first result 0; inputs read so far: 10,000 of 10,000$",
        r"^corepool.Pool.imap: first result 0; read so far: (?!10,000 )[\d,]+ of 10,000$",
        r"^apply_async, get\(\) inside the block: 49$",
        r"^apply_async, get\(\) after the block: CorepoolError: the pool was terminated",
        r"^corepool.Executor.map: first result 0; inputs read so far: (?!10,000 )[\d,]+ of 10,000$",
        r"^Executor's with block waits for submitted work: 64$",
    ],
    "pickling.py": [
        r"^multiprocessing, lambda: (AttributeError|PicklingError): .*local object",
        r"^multiprocessing, closure: (AttributeError|PicklingError): .*make_scaler",
        r"^multiprocessing, a Lock as input: TypeError: cannot pickle '_thread.lock' object$",
        r"^corepool, lambda: \[2, 3, 4\]$",
        r"^corepool, closure: \[10, 20, 30\]$",
        r"^    SerializationError: the input of task 1 \(type lock\) cannot be pickled",
    ],
    "main_guard.py": [
        r"^multiprocessing \(spawn\), no guard: still running after 3 s \(killed\)$",
        r"^    RuntimeError: An attempt has been made to start a new process",
        r"^corepool, no guard: exit code 1$",
        r"^    corepool.errors.BrokenPool: .*if __name__ == \"__main__\":",
        r"^corepool, with the guard: exit code 0$",
        r"^    \[1, 2, 3\]$",
    ],
    "shared_state.py": [
        r"^multiprocessing: Value through initargs: 5050 \(expected 5050\)$",
        r"^multiprocessing: Value as a task argument: RuntimeError: Synchronized objects",
        r"^multiprocessing: Array through initargs: \[0, 1, 4, 9, 16, 25, 36, 49\]$",
        r"^corepool: Manager list through initargs: \[0, 1, 4, 9, 16, 25, 36, 49\]$",
        r"^corepool.get_context\(\): \w+$",
        r"^corepool: Manager Value \+ Lock through initargs: 5050 \(expected 5050\)$",
        r"^corepool: Manager dict filled by tasks: \{0: 0, 1: 1, 2: 4, 3: 9, 4: 16\}$",
        r"^corepool: ctx.Value through initargs: 5050 \(expected 5050\)$",
        r"^corepool: ctx.Array through initargs: \[0, 1, 4, 9, 16, 25, 36, 49\]$",
        r"^return and combine in the parent: \{'a': 6000, 'b': 4000, 'c': 8000\} in",
    ],
    "race.py": [
        r"^two processes, no lock: +[\d,]+ of 100,000 \([\d,]+ lost\)$",
        r"^two processes, get_lock\(\): 100,000 of 100,000$",
        r"^corepool \+ Manager Value, no lock: [\d,]+ of 2,000$",
        r"^corepool \+ Manager Value, Manager Lock: 2,000 of 2,000$",
        r"^corepool, return counts and sum them: 100,000 of 100,000$",
    ],
    "workers.py": [
        r"^why, on this machine: machine CPUs: \d+;.* usable: \d+$",
        r"^pinned to CPU \d+:$",
        r"^    os.cpu_count\(\) = \d+, corepool.cpu_count\(\) = 1$",
        r"^    multiprocessing.Pool\(\) started \d+ workers, corepool.Pool\(\) 1$",
    ],
    "startup_cost.py": [
        r"^a for loop, 5 x 100 squares +[\d.]+ ms$",
        r"^multiprocessing, a new 'spawn' Pool\(2\) for each of 5 maps +[\d.]+ ms$",
        r"^multiprocessing, 20,000 tiny tasks, chunksize=1 +[\d.]+ ms$",
        r"^corepool.map, first call \(starts the default pool\) +[\d.]+ ms$",
        r"^corepool.map, next 5 calls \(reuse it\) +[\d.]+ ms$",
        r"^corepool.map, 20,000 tiny tasks \(measured chunks\) +[\d.]+ ms$",
    ],
    "timeouts_crashes.py": [
        r"^multiprocessing.Pool, a worker dies: no result after [\d.]+ s \(the map would wait",
        r"^ProcessPoolExecutor, a worker dies: .*BrokenProcessPool",
        r"^  and then a new task: BrokenProcessPool$",
        r"^  0.5 s later the task still runs in its worker: True$",
        r"^    input 3: WorkerCrashed: the worker process \(pid \d+\) running task 3 died",
        r"^    input 5: TaskTimeout: task 5 ran longer than its 0.5 s timeout",
        r"^    input 7: 70$",
        r"^the same pool, next call: \[1, 2\]$",
        r"^retries=1, a task that crashes once: \['ok on the second try'\]$",
    ],
    "exceptions.py": [
        r"^multiprocessing: ValueError: bad input 3$",
        r"^  \(thread .*_handle_results.* died: TypeError: OutOfRange.__init__\(\) missing",
        r"^multiprocessing: OutOfRange\(value, limit\): no result after 2 s \(forever\)$",
        r"^Traceback in the worker process:$",
        r"^    raise ValueError\(f\"bad input \{x\}\"\)$",
        r"^the note, as data: \['corepool: task 3, input 3'\]$",
        r"^corepool, OutOfRange\(value, limit\): TaskError: .*OutOfRange: 3 is above 2$",
        r"^corepool, backend='serial': a plain local traceback, \d+ frames, the last in parse",
    ],
    "io_threads.py": [
        r"^20 requests, each answered after 50 ms$",
        r"^one after another +[\d.]+ s$",
        r"^ThreadPoolExecutor\(20\) +[\d.]+ s$",
        r"^corepool.Pool\(2\): processes, one per core +[\d.]+ s$",
        r"^corepool.Pool\(20, backend='thread'\) +[\d.]+ s$",
    ],
    "asyncio_cpu.py": [
        r"^burn\(\) called in a coroutine +[\d.]+ s; the loop's longest stall: +\d+ ms$",
        r"^loop.run_in_executor\(corepool.Executor\(\)\) +[\d.]+ s; the loop's longest stall",
        r"^asyncio.wrap_future\(pool.submit\(...\)\) +[\d.]+ s; the loop's longest stall",
    ],
    "sklearn_joblib.py": [
        r"^GridSearchCV on corepool: best \{'C': [\d.]+, 'gamma': .*\}, score 0\.\d+$",
        r"^the same scores as on loky: True$",
        r"^task_timeout=1.0: TaskTimeout after 1\.\d s$",
        r"^os._exit\(3\) in a task: JoblibWorkerCrashed, a corepool.WorkerCrashed: True$",
        r"^the pool goes on: \[4, 5\]$",
    ],
    "asyncio_api.py": [
        r"^amap: \[0, 1, 4, 9, 16, 25, 36, 49\]; the loop ticked [1-9]\d+ times meanwhile$",
        r"^aimap: first result \d+ \(of 8\), the rest still running$",
        r"^amap cancelled: the hung tasks are stopped, the other two never start$",
        r"^on the replaced workers: \[1, 2\], 0\.\d+ s after cancel\(\)$",
    ],
    "logging_print.py": [
        r"^(apple|pear|fig): done$",
        r"^prices: \[5\.0, 4\.0, nan, 3\.0\]$",
        r"^log: INFO shop.prices pid=N task=0 input='apple': pricing apple$",
        r"^log: WARNING shop.prices pid=N task=2 input='unicorn': no price for unicorn$",
        r"^log: INFO shop.prices pid=N task=3 input='fig': pricing fig$",
        r"^records from the workers' pids, none from this one: True$",
        r"^the replaced sys.stdout caught: \['kiwi: done', 'lime: done', 'plum: done'\]$",
    ],
    "slow_loop.py": [
        r"^ +ncalls +tottime +percall +cumtime +percall filename:lineno\(function\)$",
        r"^ +1 +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ slow_loop.py:\d+\(slow_program\)$",
        r"^the loop: [\d.]+ s wall, [\d.]+ s CPU \(\d+%\): CPU-bound$",
        r"^numpy, the walks vectorised: [\d.]+ s \([\d.]+x faster than the loop\)$",
        r"^corepool.map, second call: [\d.]+ s: [\d.]+x the loop's speed on \d+ usable CPUs$",
        r"^same results as the loop: True$",
        r"^progress=True: 40 results \(the bar went to stderr\)$",
        r"^on_error='return': 4 results, failed: -4: ValueError\('a seed must be >= 0, not -4'\)$",
        r"^backend='serial': ValueError\(.*\), raised in walk\(\) at line \d+, in this process$",
    ],
    "pitfalls.py": [
        r"^multiprocessing \(fork\), numpy's global generator: 2 workers, "
        r"first draws identical: True$",
        r"^SeedSequence\(42\).spawn\(6\), one per task: 6 distinct of 6; "
        r"the same on backend='serial': True$",
        r"^while not queue.empty\(\): items missed in [1-5] of 5 runs$",
        r"^sentinels: 2,000 of 2,000 items, exit codes \[0, 0\]$",
        r"^join\(timeout=0.5\), still alive, terminate\(\), join\(\): exit code -15$",
        r"^corepool.map\(..., timeout=0.5\): TaskTimeout$",
        r"^as_completed: \[0.1, 0.3, 0.8\]$",
        r"^wait\(FIRST_COMPLETED\): 1 done \(0.1 s\), 1 still running$",
        r"^exception\(\): ValueError\(\"invalid literal for int\(\) with base 10: 'seven'\"\)$",
        r"^cancel\(\): queued -> True, running -> False",
        r"^multiprocessing.Pool inside a Pool task: AssertionError: daemonic processes are not",
        r"^corepool.map inside a corepool task: \[45\]$",
        r"^a Manager Lock held by a task killed by its timeout: acquire\(timeout=1\) -> False$",
        r"^cloudpickle.dumps\(lookup\), a __main__ function using TABLE: [4-9]\.\d MB$",
        r"^forked child, gc.collect\(\): [1-9]\d+\.\d MB of shared pages copied$",
        r"^the same after gc.freeze\(\) in the parent: [0-4]\.\d MB$",
    ],
    "worker_state.py": [
        r"^first workers \(forked from this program\): [1-9]\d* tasks$",
        r"^    SETTING = 'set under the guard'$",
        r"^    numpy's first draw is the parent's next one \(seed 0\): True$",
        r"^replacements \(from the fork server\): [1-9]\d* tasks$",
        r"^    SETTING = \"the top level's value\"$",
        r"^    numpy's first draw is the parent's next one \(seed 0\): False$",
    ],
    "other_tools.py": [
        r"^sha256 of 4 x 25 MB, serial +[\d.]+ s$",
        r"^  corepool backend='thread' \(shares the buffers\) +[\d.]+ s$",
        r"^  corepool processes \(each buffer is copied over\) +[\d.]+ s$",
        r"^10 tasks given one 32 MB array, corepool \(a shared-memory copy each\) +[\d.]+ s$",
        r"^  corepool.shared \(placed once\) +[\d.]+ s$",
        r"^  joblib.Parallel \(memory-mapped once\) +[\d.]+ s$",
    ],
}


def missing_lines(output: str, patterns: list[str]) -> list[str]:
    return [p for p in patterns if not re.search(p, output, re.MULTILINE)]


def test_every_example_has_expectations() -> None:
    scripts = {path.name for path in EXAMPLES.glob("*.py")}
    assert scripts == set(EXPECTED), "add the new script's expected lines to EXPECTED"


# Examples whose output shows how the Linux transport starts workers (forked first
# workers, then the fork server): spawn (the portable transport) prints otherwise.
LINUX_START = {"worker_state.py"}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.linux_transport) if n in LINUX_START else n
        for n in sorted(EXPECTED)
    ],
)
def test_example_runs(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    missing = missing_lines(done.stdout, EXPECTED[name])
    assert not missing, f"{name}: no line matches {missing}\n--- output:\n{done.stdout}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_output_is_current(name: str) -> None:
    recorded = RECORDED / name.replace(".py", ".txt")
    assert recorded.exists(), f"record it: python examples/{name} > {recorded}"
    missing = missing_lines(recorded.read_text(), EXPECTED[name])
    assert not missing, f"{recorded} is stale (no line matches {missing}); record it again"
