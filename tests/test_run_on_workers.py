"""``run_on_workers``: state kept in each worker across tasks, collected once per
worker, run as a user's own script; across a real crash; on every backend."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import corepool
from user_scripts import run_program

pytestmark = pytest.mark.timeout(120)

STATEFUL = """
import collections, json, os, sys
import corepool

counts = None

def start():
    global counts
    counts = collections.Counter()

def add(word):
    if word == "boom":
        os._exit(7)
    counts[word] += 1
    return os.getpid()

def collect():
    return dict(counts)
"""


def test_the_state_of_every_worker_comes_back_once(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        STATEFUL
        + """
if __name__ == "__main__":
    words = ["a", "b", "a", "c"] * 250
    with corepool.Pool(2, initializer=start) as pool:
        ran_on = set(pool.map(add, words, chunksize=10))
        states = pool.run_on_workers(collect)
        again = pool.run_on_workers(collect)
    total = collections.Counter()
    for state in states.values():
        total.update(state)
    print(json.dumps({"pids": sorted(states), "ran_on": sorted(ran_on),
                      "total": total, "again": again == states}))
""",
    )
    assert out["pids"] == out["ran_on"] and len(out["pids"]) == 2
    assert out["total"] == {"a": 500, "b": 250, "c": 250}
    assert out["again"]  # collecting reads the state, it does not consume it


def test_a_replaced_worker_answers_with_the_state_it_built_since(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        STATEFUL
        + """
if __name__ == "__main__":
    with corepool.Pool(2, initializer=start) as pool:
        before = pool.run_on_workers(os.getpid)
        pool.map(add, ["a"] * 40, chunksize=1)
        crashed = pool.apply_async(add, ("boom",))
        try:
            crashed.get(60)
        except corepool.WorkerCrashed:
            pass
        after_crash = pool.run_on_workers(collect)
        pool.map(add, ["z"] * 40, chunksize=1)
        states = pool.run_on_workers(collect)
    lost = sorted(set(before) - set(states))
    fresh = sorted(set(states) - set(before))
    print(json.dumps({"lost": len(lost), "fresh": len(fresh),
                      "fresh_state": after_crash[fresh[0]] if fresh else None,
                      "total_a": sum(s.get("a", 0) for s in states.values()),
                      "total_z": sum(s.get("z", 0) for s in states.values())}))
""",
    )
    # One worker died: its pid is gone from the answers, its replacement's is new,
    # and the replacement's state started empty (its initializer ran again).
    assert out["lost"] == 1 and out["fresh"] == 1
    assert out["fresh_state"] == {}
    assert out["total_a"] < 40  # what the dead worker counted died with it
    assert out["total_z"] == 40


def test_an_error_in_a_worker_is_raised_with_its_pid(tmp_path: Path) -> None:
    out = run_program(
        tmp_path,
        """
import json, corepool

def fail():
    raise ValueError("no state here")

if __name__ == "__main__":
    with corepool.Pool(2) as pool:
        try:
            pool.run_on_workers(fail)
        except ValueError as error:
            notes = getattr(error, "__notes__", [])
            print(json.dumps({"error": str(error), "notes": notes}))
""",
    )
    assert out["error"] == "no state here"
    assert any("run_on_workers, in the worker with pid" in note for note in out["notes"])


@pytest.mark.parametrize("backend", ["thread", "serial"])
def test_in_process_backends_run_it_once_here(backend: str) -> None:
    calls: list[int] = []

    def mark(value: int) -> int:
        calls.append(value)
        return value * 2

    with corepool.Pool(2, backend=backend) as pool:
        assert pool.run_on_workers(mark, 21) == {os.getpid(): 42}
    with corepool.Executor(2, backend=backend) as ex:
        assert ex.run_on_workers(mark, value=1) == {os.getpid(): 2}
    assert calls == [21, 1]


def test_a_closed_pool_refuses() -> None:
    pool = corepool.Pool(1, backend="serial")
    pool.close()
    with pytest.raises(ValueError):
        pool.run_on_workers(abs, 1)
    pool.join()
