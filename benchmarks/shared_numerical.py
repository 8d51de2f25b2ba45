"""One image, many filters: ``corepool.shared(image)`` against the image inside
``functools.partial`` (the numerical workload of MPIRE's benchmark suite, for 2 cores).

    python benchmarks/shared_numerical.py                      # 5 rounds
    python benchmarks/shared_numerical.py --rounds 3 --size 2000 --filters 8 --images 4

Each round, for each form in a shuffled order: ``--images`` times, a new random
``--size`` x ``--size`` float64 image, then ``corepool.map`` of
``scipy.signal.convolve2d(image, filter)[::5, ::5]`` over ``--filters`` random 4 x 4
filters, on the default pool of 2 workers (warm). The forms:

shared    ``h = corepool.shared(image)``; ``map(convolve_shared, [(h, f) for f in
          filters])``; the handle released after the map (as a loop dropping it would)
partial   ``map(functools.partial(convolve, image), filters)``

The report gives the median seconds of a round per form and the ratio shared/partial
(at most 1.0 means the documented idiom is at least as fast).
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import statistics
import sys
import time
from typing import Any

import corepool


def convolve(image: Any, kernel: Any) -> Any:
    """The task: a filter over the image, subsampled."""
    from scipy import signal

    return signal.convolve2d(image, kernel)[::5, ::5]


def convolve_shared(args: tuple[Any, Any]) -> Any:
    """The same, given ``(image, kernel)`` (the image arrives through its handle)."""
    image, kernel = args
    return convolve(image, kernel)


def run_shared(images: list[Any], filters: list[Any]) -> list[Any]:
    out = []
    for image in images:
        handle = corepool.shared(image)
        out.append(corepool.map(convolve_shared, [(handle, f) for f in filters], workers=2))
        handle.release()
    return out


def run_partial(images: list[Any], filters: list[Any]) -> list[Any]:
    return [corepool.map(functools.partial(convolve, image), filters, workers=2)
            for image in images]


def main() -> None:
    import numpy

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args()
    rng = numpy.random.default_rng(0)
    filters = [rng.normal(size=(4, 4)) for _ in range(args.filters)]
    warm = [(numpy.zeros((8, 8)), numpy.ones((2, 2)))] * 2
    corepool.map(convolve_shared, warm, workers=2)  # warm: scipy imported
    sides = {"shared": run_shared, "partial": run_partial}
    times: dict[str, list[float]] = {name: [] for name in sides}
    expected = None
    for _ in range(args.rounds):
        images = [rng.random((args.size, args.size)) for _ in range(args.images)]
        order = list(sides)
        random.shuffle(order)
        for name in order:
            started = time.perf_counter()
            out = sides[name](images, filters)
            times[name].append(time.perf_counter() - started)
            first = out[0][0]
            if expected is None or expected.shape != first.shape:
                expected = convolve(images[0], filters[0])
            assert numpy.allclose(first, expected)
            del out, first
        expected = None
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.images} images of {args.size}x{args.size} float64, {args.filters} filters, "
          f"{args.rounds} rounds, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print("| form | median s | every round (s) |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.2f} | " + ", ".join(f"{v:.2f}" for v in values)
              + " |")
    print(f"ratio shared / partial: {medians['shared'] / medians['partial']:.2f}")


if __name__ == "__main__":
    main()
