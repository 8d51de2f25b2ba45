"""A script watched by the browser tests: ``python watch_script.py`` prints its page's
URL, runs a map with a slow task and failures of every kind (an exception, a timeout,
a crash) on a watched Pool, says ``done`` and keeps serving until its stdin closes;
with ``everywhere`` it watches corepool.map (exceptions only: it has no timeout)."""

import os
import sys
import time

import corepool

HOSTILE = "<script>alert(1)</script>"


def work(x):
    if x == 5:
        time.sleep(4)  # the slow task the worker table shows running
    if x in (13, 77):
        raise ValueError(f"unlucky {x}")
    if x == 99:
        raise KeyError(HOSTILE)
    if x == 1000:
        time.sleep(60)  # past the pool's task_timeout
    if x == 1001:
        os._exit(3)
    time.sleep(0.02)
    return x


if __name__ == "__main__":
    inputs = [*range(150)]
    if sys.argv[1:] == ["everywhere"]:
        page = corepool.watch()
        print(page.url, flush=True)
        results = corepool.map(work, inputs, workers=2, on_error="return")
    else:
        with corepool.Pool(2, task_timeout=8) as pool:
            page = corepool.watch(pool)
            print(page.url, flush=True)
            results = list(pool.imap_unordered(work, [*inputs, 1000, 1001], on_error="return"))
    print("done", sum(isinstance(r, Exception) for r in results), flush=True)
    sys.stdin.read()
    page.close()
