"""Sharing state with workers: Value, Array, Manager and Lock, the initializer, and
why returning results beats sharing.

``multiprocessing.Value``/``Array``/``Lock``/``Queue`` live in shared memory or OS
semaphores: they can be handed to a process only when it starts (``Process(args=...)``,
a ``Pool``'s ``initargs``), never as a task argument. ``Manager`` objects are proxies
to a server process: they can go anywhere, at the price of a round trip per operation.
"""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import corepool

# --8<-- [start:setup]
shared: Any = None  # set in each worker by the initializer


def remember(value: Any) -> None:
    """A pool initializer: runs once in each worker when it starts."""
    global shared
    shared = value


def add_to_value(n: int) -> int:
    with shared.get_lock():  # Value's own lock: one process at a time
        shared.value += n
    return n


def fill_slot(i: int) -> None:
    shared[i] = i * i  # an Array: one shared slot per index, no lock needed


def add_to_proxy(n: int) -> int:
    counter, lock = shared
    with lock:  # a Manager Lock, usable from any process
        counter.value += n
    return n


def store(pair: tuple[Any, int]) -> None:
    table, key = pair
    table[key] = key * key


def count_words(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in text.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


# --8<-- [end:setup]


def first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0]}"


def main() -> None:
    # --8<-- [start:stdlib]
    value = multiprocessing.Value("i", 0)
    with multiprocessing.Pool(2, initializer=remember, initargs=(value,)) as pool:
        pool.map(add_to_value, range(1, 101))  # Value reaches the workers at start-up
    print(f"multiprocessing: Value through initargs: {value.value} (expected 5050)")
    squares = multiprocessing.Array("i", 8)  # 8 C ints in shared memory
    with multiprocessing.Pool(2, initializer=remember, initargs=(squares,)) as pool:
        pool.map(fill_slot, range(8))
    print(f"multiprocessing: Array through initargs: {list(squares)}")
    with multiprocessing.Pool(2) as pool:
        try:
            pool.map(add_to_value, [value])  # as a task argument: refused
        except RuntimeError as error:
            print(f"multiprocessing: Value as a task argument: {first_line(error)}")
    # --8<-- [end:stdlib]

    # --8<-- [start:corepool]
    ctx = corepool.get_context()  # the context corepool's workers are started with
    print("corepool.get_context():", ctx.get_start_method())
    with ctx.Manager() as manager:
        counter, lock = manager.Value("i", 0), manager.Lock()
        with corepool.Pool(2, initializer=remember, initargs=((counter, lock),)) as pool:
            pool.map(add_to_proxy, range(1, 101))
        print(f"corepool: Manager Value + Lock through initargs: {counter.value} (expected 5050)")
        table = manager.dict()
        corepool.map(store, [(table, k) for k in range(5)], workers=2)  # proxies as arguments
        print("corepool: Manager dict filled by tasks:", dict(sorted(table.items())))
        slots = manager.list([0] * 8)  # a Manager list in place of an Array
        with corepool.Pool(2, initializer=remember, initargs=(slots,)) as pool:
            pool.map(fill_slot, range(8))
        print(f"corepool: Manager list through initargs: {list(slots)}")

    value = ctx.Value("i", 0)  # straight from the context, as with multiprocessing
    with corepool.Pool(2, initializer=remember, initargs=(value,)) as pool:
        pool.map(add_to_value, range(1, 101))
    print(f"corepool: ctx.Value through initargs: {value.value} (expected 5050)")
    squares = ctx.Array("i", 8)
    with corepool.Pool(2, initializer=remember, initargs=(squares,)) as pool:
        pool.map(fill_slot, range(8))
    print(f"corepool: ctx.Array through initargs: {list(squares)}")
    # --8<-- [end:corepool]

    # --8<-- [start:return]
    texts = ["a b a", "b c", "a c c c"] * 2_000
    start = time.perf_counter()
    total: dict[str, int] = {}
    for counts in corepool.imap(count_words, texts, workers=2):  # no shared state at all
        for word, n in counts.items():
            total[word] = total.get(word, 0) + n
    elapsed = time.perf_counter() - start
    print(f"return and combine in the parent: {dict(sorted(total.items()))} in {elapsed:.2f} s")
    # --8<-- [end:return]


if __name__ == "__main__":
    main()
