"""Logging and print() from tasks: the records reach this program's handlers, the
lines its current sys.stdout, on every backend.

    python examples/logging_print.py
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile

import corepool

log = logging.getLogger("shop.prices")


# --8<-- [start:task]
def price(item: str) -> float:
    log.debug("looking up %s", item)  # below the program's level: never even sent
    log.info("pricing %s", item)
    if item == "unicorn":
        log.warning("no price for %s", item)
        return float("nan")
    print(f"{item}: done")
    return float(len(item))
# --8<-- [end:task]


def main() -> None:
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "prices.log")
    # --8<-- [start:config]
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(name)s pid=%(process)d task=%(corepool_task)s "
        "input=%(corepool_input)s: %(message)s",
        defaults={"corepool_task": "-", "corepool_input": "-"},  # this process's records
    ))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    prices = corepool.map(price, ["apple", "pear", "unicorn", "fig"], workers=2)
    # --8<-- [end:config]
    print(f"prices: {prices}")
    with open(path) as f:
        lines = sorted(f.read().splitlines(), key=lambda line: line.split("task=")[1][0])
    pids = {line.split("pid=")[1].split()[0] for line in lines}
    for line in lines:
        print("log: " + line.replace(line.split("pid=")[1].split()[0], "N"))
    print(f"records from the workers' pids, none from this one: {str(os.getpid()) not in pids}")

    # --8<-- [start:notebook]
    class Cell(io.StringIO):
        """What a notebook puts in place of sys.stdout."""

    real, sys.stdout = sys.stdout, Cell()
    try:
        corepool.map(price, ["kiwi", "plum", "lime"], workers=2)
        caught = sys.stdout.getvalue()
    finally:
        sys.stdout = real
    # --8<-- [end:notebook]
    print(f"the replaced sys.stdout caught: {sorted(caught.splitlines())}")


if __name__ == "__main__":
    main()
