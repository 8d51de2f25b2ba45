"""What a worker sees: the first workers are forked from the program, replacements not.

A guarded, single-threaded program gets its first workers forked from itself, so they
inherit everything set under the guard. A worker started later (here after each task,
with ``maxtasksperchild=1``; after a crash or a timeout it is the same) comes from the
fork server, which never ran the guarded code. The task reports which kind of worker
ran it (its parent is this program, or not), the global set under the guard, and its
first number from numpy's global random generator.

numpy's OpenBLAS starts its own threads when numpy is imported, and a program with
more than one thread gets no forked workers at all (all come from the fork server).
One BLAS thread keeps this program single-threaded, so both kinds show.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy starts its threads

import numpy as np

import corepool

SETTING = "the top level's value"
PARENT = 0


def report(_: int) -> tuple[bool, str, float]:
    forked_from_program = os.getppid() == PARENT
    return forked_from_program, SETTING, float(np.random.random())


def main() -> None:
    global SETTING, PARENT
    SETTING = "set under the guard"
    PARENT = os.getpid()
    np.random.seed(0)
    parents_next = float(np.random.RandomState(0).random())  # what seed(0) gives next

    with corepool.Pool(2, maxtasksperchild=1) as pool:
        rows = pool.map(report, range(6), chunksize=1)

    for first, label in ((True, "first workers (forked from this program)"),
                         (False, "replacements (from the fork server)")):
        mine = [row for row in rows if row[0] is first]
        settings = sorted({row[1] for row in mine})
        same = all(row[2] == parents_next for row in mine)
        print(f"{label}: {len(mine)} tasks")
        print(f"    SETTING = {', '.join(repr(s) for s in settings)}")
        print(f"    numpy's first draw is the parent's next one (seed 0): {same}")


if __name__ == "__main__":
    main()
