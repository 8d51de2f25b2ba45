"""A script watched by the browser tests: ``python watch_script.py`` prints its page's
URL, runs a map with a slow task and failures on a watched Pool, says ``done`` and
keeps serving until its stdin closes; with ``everywhere`` it watches corepool.map."""

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
    time.sleep(0.02)
    return x


if __name__ == "__main__":
    inputs = [*range(150)]
    if sys.argv[1:] == ["everywhere"]:
        page = corepool.watch()
        print(page.url, flush=True)
        results = corepool.map(work, inputs, workers=2, on_error="return")
    else:
        with corepool.Pool(2, task_timeout=60) as pool:
            page = corepool.watch(pool)
            print(page.url, flush=True)
            results = list(pool.imap_unordered(work, inputs, on_error="return"))
    print("done", sum(isinstance(r, Exception) for r in results), flush=True)
    sys.stdin.read()
    page.close()
