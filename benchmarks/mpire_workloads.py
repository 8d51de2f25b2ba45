"""The three workloads of MPIRE's published benchmark suite, sized for 2 cores.

Written here from the suite's description (not its code): *numerical* (one image,
many filters: ``scipy.signal.convolve2d`` per filter), *stateful* (prefix counts
over documents of uneven length, accumulated in each worker, combined once at the
end) and *expensive initialisation* (a model that takes a while to build, then many
small evaluations with it, over several runs). Each runs serially, on
``multiprocessing.Pool``, joblib, MPIRE, corepool as a drop-in for
``multiprocessing.Pool`` (the same code) and corepool's own idiom. Every contender
creates its pool inside the timed region, as the suite does. The contenders take
turns within each round, starting one further along each round, so load from other
processes falls on all of them alike; the table gives medians and each one's ratio
to the best other library (serial aside) (and, for the stateful one, to MPIRE).

    python benchmarks/mpire_workloads.py [--rounds 3] [--only stateful]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import statistics
import time
from collections.abc import Callable
from functools import partial
from multiprocessing.managers import BaseManager
from typing import Any

import joblib
import numpy as np
import scipy.signal
from mpire import WorkerPool
from mpire.utils import make_single_arguments

import corepool

WORKERS = 2

# Numerical -------------------------------------------------------------------------
IMAGE_SIZE = (1200, 1200)
FILTERS = 20


def make_filters() -> list[np.ndarray]:
    rng = np.random.default_rng(42)
    return [rng.normal(size=(4, 4)) for _ in range(FILTERS)]


def process_image(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """One filter over the whole image, subsampled (the suite's task)."""
    return scipy.signal.convolve2d(image, kernel)[::5, ::5]


def _mpire_image(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return process_image(image, kernel)


def numerical(name: str, filters: list[np.ndarray]) -> float:
    image = np.zeros(IMAGE_SIZE)
    if name == "serial":
        out = [process_image(image, k) for k in filters]
    elif name == "multiprocessing.Pool":
        with multiprocessing.Pool(WORKERS) as pool:
            out = list(pool.imap(partial(process_image, image), filters))
    elif name == "joblib":
        out = joblib.Parallel(n_jobs=WORKERS)(
            joblib.delayed(process_image)(image, k) for k in filters
        )
    elif name == "mpire":
        with WorkerPool(WORKERS, shared_objects=image) as mpool:
            out = list(
                mpool.imap(_mpire_image, make_single_arguments(filters), iterable_len=FILTERS)
            )
    elif name == "corepool drop-in":
        with corepool.Pool(WORKERS) as cpool:
            out = list(cpool.imap(partial(process_image, image), filters))
    else:  # corepool's idiom: the image in shared memory once, the handle per task
        handle = corepool.shared(image)
        with corepool.Pool(WORKERS) as cpool:
            out = cpool.map(partial(process_image, handle), filters)
        handle.release()
    return float(sum(float(o.sum()) for o in out))


# Stateful --------------------------------------------------------------------------
DOCUMENTS = 240
WORDS = 3000  # per document, plus or minus DELTA: every other one is long
DELTA = 1500
WORD_LENGTH = 10
POPULAR = 3


def make_documents() -> list[list[bytes]]:
    rng = np.random.default_rng(42)
    letters = np.frombuffer(b"acgt", dtype=np.uint8)
    documents = []
    for index in range(DOCUMENTS):
        words = WORDS + (DELTA if index % 2 == 0 else -DELTA)
        text = letters[rng.integers(0, 4, size=words * WORD_LENGTH)].tobytes()
        documents.append(
            [text[i : i + WORD_LENGTH] for i in range(0, len(text), WORD_LENGTH)]
        )
    return documents


class PrefixCount:
    """The running state: how often each proper prefix of a word was seen."""

    def __init__(self) -> None:
        self.counts: collections.defaultdict[bytes, int] = collections.defaultdict(int)

    def add_document(self, document: list[bytes]) -> None:
        counts = self.counts
        for word in document:
            for i in range(1, len(word)):
                counts[word[:i]] += 1

    def snapshot(self) -> dict[bytes, int]:
        return dict(self.counts)


def popular(parts: Any) -> set[bytes]:
    """The prefixes seen more than POPULAR times, over the partial counts ``parts``."""
    total: collections.Counter[bytes] = collections.Counter()
    for part in parts:
        total.update(part)
    return {prefix for prefix, count in total.items() if count > POPULAR}


_state: PrefixCount | None = None  # a worker's own (corepool idiom)


def start_state() -> None:
    global _state
    _state = PrefixCount()


def add_to_state(document: list[bytes]) -> None:
    assert _state is not None
    _state.add_document(document)


def counts_of_state() -> dict[bytes, int]:
    assert _state is not None
    return _state.snapshot()


def _add_to_actor(actor: Any, document: list[bytes]) -> None:
    actor.add_document(document)


def _mpire_init(worker_state: dict[str, Any]) -> None:
    worker_state["count"] = PrefixCount()


def _mpire_add(worker_state: dict[str, Any], document: list[bytes]) -> None:
    worker_state["count"].add_document(document)


def _mpire_exit(worker_state: dict[str, Any]) -> dict[bytes, int]:
    counts: dict[bytes, int] = worker_state["count"].snapshot()
    return counts


def _count_slice(documents: list[list[bytes]]) -> dict[bytes, int]:
    count = PrefixCount()
    for document in documents:
        count.add_document(document)
    return dict(count.counts)


class _Manager(BaseManager):
    pass


_Manager.register("PrefixCount", PrefixCount)


def _with_manager(pool_type: Callable[[int], Any], documents: list[list[bytes]]) -> set[bytes]:
    """The stdlib way: one state per worker slot in a Manager, updated through proxies."""
    with _Manager() as manager:
        actors = [manager.PrefixCount() for _ in range(WORKERS)]  # type: ignore[attr-defined]
        with pool_type(WORKERS) as pool:
            pool.starmap(
                _add_to_actor, [(actors[i % WORKERS], d) for i, d in enumerate(documents)]
            )
        return popular(actor.snapshot() for actor in actors)


def stateful(name: str, documents: list[list[bytes]]) -> float:
    found: set[bytes]
    if name == "serial":
        found = popular([_count_slice(documents)])
    elif name == "multiprocessing.Pool":
        found = _with_manager(multiprocessing.Pool, documents)
    elif name == "joblib":  # no worker state: partial counts returned and summed here
        slices = [documents[i :: 4 * WORKERS] for i in range(4 * WORKERS)]
        found = popular(
            joblib.Parallel(n_jobs=WORKERS, return_as="generator_unordered")(
                joblib.delayed(_count_slice)(s) for s in slices
            )
        )
    elif name == "mpire":
        with WorkerPool(WORKERS, use_worker_state=True) as mpool:
            mpool.map_unordered(
                _mpire_add,
                make_single_arguments(documents),
                iterable_len=len(documents),
                worker_init=_mpire_init,
                worker_exit=_mpire_exit,
            )
            found = popular(mpool.get_exit_results())
    elif name == "corepool drop-in":
        found = _with_manager(corepool.Pool, documents)
    else:  # corepool's idiom: state in each worker, collected once per worker
        with corepool.Pool(WORKERS, initializer=start_state) as cpool:
            for _ in cpool.imap_unordered(add_to_state, documents):
                pass
            found = popular(cpool.run_on_workers(counts_of_state).values())
    return float(len(found))


# Expensive initialisation ----------------------------------------------------------
RUNS = 5
EVALS = 10  # per run
INPUTS = 1000  # rows evaluated per task


class Model:
    """Slow to build (a decomposition of a large matrix), quick to evaluate."""

    def __init__(self) -> None:
        rng = np.random.default_rng(7)
        basis = np.linalg.qr(rng.standard_normal((900, 900)))[0]
        self.hidden = basis[:784, :512].copy()
        self.out = rng.standard_normal((512, 10))
        self.inputs = rng.random((INPUTS, 784))

    def evaluate(self, index: int) -> float:
        hidden = np.maximum(self.inputs @ self.hidden, 0.0)
        return float((hidden @ self.out).sum()) + index


_model: Model | None = None


def load_model() -> None:
    global _model
    _model = Model()


def evaluate(index: int) -> float:
    assert _model is not None
    return _model.evaluate(index)


def evaluate_lazily(index: int) -> float:
    """The model built on first use in each worker, kept for the next tasks."""
    if _model is None:
        load_model()
    return evaluate(index)


def _mpire_load(worker_state: dict[str, Any]) -> None:
    worker_state["model"] = Model()


def _mpire_evaluate(worker_state: dict[str, Any], index: int) -> float:
    value: float = worker_state["model"].evaluate(index)
    return value


def expensive_init(name: str, _: Any) -> float:
    total = 0.0
    indices = range(EVALS)
    if name == "serial":
        model = Model()
        total = sum(model.evaluate(i) for _ in range(RUNS) for i in indices)
    elif name in ("multiprocessing.Pool", "corepool drop-in"):
        pool_type = multiprocessing.Pool if name.startswith("multi") else corepool.Pool
        with pool_type(WORKERS, initializer=load_model) as pool:
            for _ in range(RUNS):
                total += sum(pool.imap_unordered(evaluate, indices))
    elif name == "joblib":  # loky keeps its workers: the model is built on first use
        with joblib.parallel_config(n_jobs=WORKERS):
            for _ in range(RUNS):
                calls = (joblib.delayed(evaluate_lazily)(i) for i in indices)
                total += sum(joblib.Parallel()(calls))
        joblib.externals.loky.get_reusable_executor().shutdown(wait=True)
    elif name == "mpire":
        with WorkerPool(WORKERS, use_worker_state=True, keep_alive=True) as mpool:
            for _ in range(RUNS):
                total += sum(
                    mpool.imap_unordered(_mpire_evaluate, indices, worker_init=_mpire_load)
                )
    else:  # corepool's idiom: an Executor whose initializer builds the model
        with corepool.Executor(WORKERS, initializer=load_model) as ex:
            for _ in range(RUNS):
                total += sum(ex.map(evaluate, indices))
    return round(total, 3)


# The run ---------------------------------------------------------------------------
CONTENDERS = (
    "serial",
    "multiprocessing.Pool",
    "joblib",
    "mpire",
    "corepool drop-in",
    "corepool idiomatic",
)
WORKLOADS: dict[str, tuple[Callable[[str, Any], float], Callable[[], Any]]] = {
    "numerical": (numerical, make_filters),
    "stateful": (stateful, make_documents),
    "expensive-init": (expensive_init, lambda: None),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    args = parser.parse_args()
    for workload in args.only or list(WORKLOADS):
        run, make = WORKLOADS[workload]
        data = make()
        times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        answers: dict[str, float] = {}
        for round_index in range(args.rounds):
            shift = round_index % len(CONTENDERS)
            for name in CONTENDERS[shift:] + CONTENDERS[:shift]:
                start = time.perf_counter()
                answers[name] = run(name, data)
                times[name].append(time.perf_counter() - start)
        if len(set(answers.values())) != 1:
            raise SystemExit(f"{workload}: the contenders disagree: {answers}")
        print_table(workload, times, args.rounds)


def print_table(workload: str, times: dict[str, list[float]], rounds: int) -> None:
    medians = {name: statistics.median(samples) for name, samples in times.items()}
    others = [n for n in CONTENDERS if not n.startswith("corepool") and n != "serial"]
    best = min(others, key=medians.__getitem__)
    print(f"\n**{workload}**: {WORKERS} workers, {rounds} interleaved rounds, seconds\n")
    print(f"| contender | median | min | max | / best other library ({best}) | / mpire |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in CONTENDERS:
        samples = times[name]
        print(
            f"| {name} | {medians[name]:.2f} | {min(samples):.2f} | {max(samples):.2f} "
            f"| {medians[name] / medians[best]:.2f}x | {medians[name] / medians['mpire']:.2f}x |"
        )


if __name__ == "__main__":
    main()
