"""One "generator memory" run, in a fresh interpreter that ``compare.py`` starts.

    python benchmarks/memory_child.py LIBRARY N

Runs ``imap(identity, (i for i in range(N)))`` with LIBRARY on two workers, consumes
every result, and prints one JSON line: N, the seconds the run took and this process's
peak resident set size in MB. The process is fresh so that ``ru_maxrss`` (which only
ever grows) is this library's peak and nobody else's; ``compare.py`` starts it through
a small relay interpreter, so that not even its starter's peak leaks in. LIBRARY
``serial`` runs the same loop with the builtin ``map`` and no pool: the interpreter's
own baseline.
"""

from __future__ import annotations

import json
import resource
import sys
import time

from libraries import BY_NAME
from workloads import identity


def main() -> None:
    name, n = sys.argv[1], int(sys.argv[2])
    items = (i for i in range(n))
    start = time.perf_counter()
    if name == "serial":
        total = sum(map(identity, items))
    else:
        library = BY_NAME[name]()
        library.open()
        try:
            total = sum(library.imap(identity, items))
        finally:
            library.close()
    seconds = time.perf_counter() - start
    if total != n * (n - 1) // 2:
        raise SystemExit(f"{name}: wrong results (sum {total})")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"n": n, "seconds": seconds, "peak_mb": peak_kib / 1024,
                      "hwm_mb": high_water_mark_mb()}))


def high_water_mark_mb() -> float | None:
    """``VmHWM`` of this process (Linux): a cross-check of ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


if __name__ == "__main__":
    main()
