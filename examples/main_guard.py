"""The ``if __name__ == "__main__":`` guard, and what happens without it.

With the ``spawn`` start method (the default on macOS and Windows), each worker
imports your main script to find your functions: code at the top level of the script
runs again in every worker, including the line that starts the pool. corepool's fork
server imports the script too (once), so an unguarded pool is started there as well.
Each version below is written to a temporary file and run in a subprocess with a
timeout, so this script itself cannot loop or hang.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

# --8<-- [start:scripts]
NO_GUARD_MULTIPROCESSING = """
import multiprocessing
pool = multiprocessing.get_context("spawn").Pool(2)   # runs again in every worker
print(pool.map(abs, [-1, -2, -3]))
pool.close()
"""

NO_GUARD_COREPOOL = """
import corepool
print(corepool.map(abs, [-1, -2, -3]))                # runs again where it is imported
"""

WITH_GUARD = """
import corepool

def main():
    print(corepool.map(abs, [-1, -2, -3]))

if __name__ == "__main__":   # true only in the script you ran, false in workers
    main()
"""
# --8<-- [end:scripts]


def run(label: str, code: str, interesting: tuple[str, ...], timeout: float) -> None:
    """Run ``code`` as a script; past ``timeout`` seconds (and once something
    ``interesting`` was printed, or at the latest after 60 s) kill it and its workers."""
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "script.py"
        script.write_text(textwrap.dedent(code))
        child = subprocess.Popen(
            [sys.executable, str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            start_new_session=True,  # its own process group: its workers can be killed too
        )
        assert child.stdout is not None
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(child.stdout))  # type: ignore[arg-type]
        reader.start()
        started = time.monotonic()
        while child.poll() is None:
            elapsed = time.monotonic() - started
            seen = any(line.strip().startswith(interesting) for line in list(output))
            if elapsed >= 60 or (elapsed >= timeout and seen):
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                print(f"{label}: still running after {timeout:g} s (killed)")
                break
            time.sleep(0.05)
        else:
            print(f"{label}: exit code {child.returncode}")
        reader.join()
    lines = [raw.strip() for raw in output if raw.strip()]
    hits = [i for i, line in enumerate(lines) if line.startswith(interesting)]
    if hits:
        first = lines[hits[0]]
        if first.endswith(":") and hits[0] + 1 < len(lines):  # the message is on the next line
            first += " " + lines[hits[0] + 1]
        print("    " + first)
        if len(hits) > 1:
            print(f"    ({len(hits)} times in its output)")


def main() -> None:
    run("multiprocessing (spawn), no guard", NO_GUARD_MULTIPROCESSING, ("RuntimeError",), 3)
    run("corepool, no guard", NO_GUARD_COREPOOL, ("corepool.errors.BrokenPool",), 60)
    run("corepool, with the guard", WITH_GUARD, ("[",), 60)


if __name__ == "__main__":
    main()
