"""The joblib backend "corepool": joblib and scikit-learn on corepool's workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError

import corepool
import corepool.joblib
import sklearn_scores
import tasks

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    corepool.joblib.register()
    yield
    corepool.joblib.shutdown()


@pytest.mark.timeout(120)
def test_scikit_learn_scores_match_loky() -> None:
    # loky in a process of its own: its executor and resource tracker outlive a call.
    code = "import json, sklearn_scores; print(json.dumps(sklearn_scores.scores('loky')))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=100,
        env={**os.environ, "PYTHONPATH": SRC},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(json.dumps(sklearn_scores.scores("corepool"))) == json.loads(done.stdout)


def pid_score(_estimator: object, _X: object, _y: object) -> float:
    return float(os.getpid())


@pytest.mark.timeout(120)
def test_scikit_learn_fits_run_on_the_pools_workers() -> None:
    """The same scores would come from fits run in this process: the scorer tells where."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = make_classification(n_samples=100, random_state=0)
    with joblib.parallel_config(backend="corepool", n_jobs=2):
        pids = cross_val_score(LogisticRegression(), X, y, cv=4, scoring=pid_score, n_jobs=2)
        warm = corepool.joblib._warm
        assert warm is not None
        workers = set(warm[1].pids())
    assert {int(pid) for pid in pids} <= workers and os.getpid() not in workers


@pytest.mark.timeout(60)
def test_task_timeout_reaches_the_pool_and_the_pool_goes_on() -> None:
    with joblib.parallel_config(backend="corepool", n_jobs=2, task_timeout=1):
        started = time.monotonic()
        with pytest.raises(corepool.TaskTimeout):
            Parallel()(delayed(tasks.sleep_for)(s) for s in [0.1, 30])
        assert time.monotonic() - started < 10
        assert Parallel()(delayed(abs)(x) for x in [-1, -2, -3]) == [1, 2, 3]


@pytest.mark.timeout(60)
def test_retries_reach_the_pool(tmp_path: Path) -> None:
    with joblib.parallel_config(backend="corepool", n_jobs=2, retries=2):
        results = Parallel()(delayed(tasks.flaky)(str(tmp_path / "f"), 2) for _ in [0])
    assert results == ["ok after 3"]
    only_oserror = joblib.parallel_config(
        backend="corepool", n_jobs=2, retries=2, retry_on=(OSError,)
    )
    with only_oserror, pytest.raises(RuntimeError):  # not an OSError: not retried
        Parallel()(delayed(tasks.flaky)(str(tmp_path / "g"), 1) for _ in [0])


@pytest.mark.timeout(60)
def test_generator_streams(tmp_path: Path) -> None:
    marker = str(tmp_path / "first-result-seen")
    with joblib.parallel_config(backend="corepool", n_jobs=2):
        results = Parallel(return_as="generator", batch_size=1)(
            [delayed(abs)(-1), delayed(tasks.wait_for_path)(marker)]
        )
        assert next(results) == 1  # before the second task can finish
        Path(marker).touch()
        assert list(results) == ["saw it"]


@pytest.mark.timeout(60)
def test_a_failed_call_keeps_its_type_and_its_note_names_the_joblib_call() -> None:
    with (joblib.parallel_config(backend="corepool", n_jobs=2),
          pytest.raises(ValueError, match="bad input 3") as info):
        Parallel(batch_size=1)(delayed(tasks.fail_on)(x) for x in range(5))
    assert getattr(info.value, "__notes__", []) == [
        "corepool: single call, input (joblib batch: fail_on(3))"]


@pytest.mark.timeout(60)
def test_crashed_worker_is_worker_crashed_and_terminated_worker_error() -> None:
    with joblib.parallel_config(backend="corepool", n_jobs=2):
        with pytest.raises(corepool.WorkerCrashed) as info:
            Parallel()(delayed(os._exit)(3) for _ in [0])
        assert isinstance(info.value, TerminatedWorkerError)
        assert info.value.exitcode == 3
        assert Parallel()(delayed(abs)(x) for x in [-1, -2]) == [1, 2]


@pytest.mark.timeout(60)
def test_large_arrays_come_through_shared_memory_and_blas_is_limited() -> None:
    with joblib.parallel_config(backend="corepool", n_jobs=2):
        kinds = Parallel()(delayed(tasks.buffer_kind)(np.ones(10**6)) for _ in range(2))
        threads = Parallel()(delayed(tasks.blas_threads)() for _ in range(2))
    assert kinds == ["mmap", "mmap"]
    assert threads == [max(1, corepool.cpu_count() // 2)] * 2


@pytest.mark.timeout(60)
def test_n_jobs_one_runs_in_this_process_as_joblib_does() -> None:
    with joblib.parallel_config(backend="corepool", n_jobs=1, task_timeout=30):
        assert Parallel()(delayed(os.getpid)() for _ in [0]) == [os.getpid()]


def nested_backend(_: int) -> tuple[str, list[int]]:
    from joblib.parallel import get_active_backend

    backend, _n_jobs = get_active_backend()
    return type(backend).__name__, Parallel(n_jobs=2)(delayed(abs)(-i) for i in range(3))


@pytest.mark.timeout(60)
def test_tiny_tasks_are_batched_and_nested_joblib_runs_on_threads() -> None:
    with joblib.parallel_config(backend="corepool", n_jobs=2):
        assert Parallel()(delayed(abs)(-x) for x in range(20_000)) == list(range(20_000))
        warm = corepool.joblib._warm
        assert warm is not None
        assert warm[1].stats().tasks < 1_000  # joblib's batches, not one call per task
        inner = Parallel()(delayed(nested_backend)(x) for x in range(2))
    assert inner == [("ThreadingBackend", [0, 1, 2])] * 2


SCRIPT = """
import joblib
import corepool.joblib

def square(x):
    return x * x

def make_adder(n):
    return lambda x: x + n

if __name__ == "__main__":
    corepool.joblib.register()
    add_ten = make_adder(10)
    with joblib.parallel_config(backend="corepool", n_jobs=2):
        print(joblib.Parallel()(joblib.delayed(square)(x) for x in range(4)))
        print(joblib.Parallel()(joblib.delayed(add_ten)(x) for x in range(3)))
        print(joblib.Parallel()(joblib.delayed(lambda x: -x)(x) for x in range(3)))
"""


def _run_script(folder: Path, text: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``python script.py`` with ``text`` as the script, run from ``folder``."""
    (folder / "script.py").write_text(textwrap.dedent(text))
    return subprocess.run([sys.executable, "script.py"], cwd=folder, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONPATH": SRC})


@pytest.mark.timeout(60)
def test_a_script_with_its_own_function_and_lambdas(tmp_path: Path) -> None:
    done = _run_script(tmp_path, SCRIPT, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[0, 1, 4, 9]", "[10, 11, 12]", "[0, -1, -2]"]


CRASH_THEN_ABORT = """
import logging, os
import joblib
import corepool.joblib

class Count(logging.Handler):
    def __init__(self):
        super().__init__()
        self.critical = []

    def emit(self, record):
        self.critical.append(record.getMessage())

def crash_on_two(x):
    if x == 2:
        os._exit(9)
    return x

if __name__ == "__main__":
    counted = Count()
    logging.getLogger("concurrent.futures").addHandler(counted)
    corepool.joblib.register()
    crashed = 0
    for round in range(10):
        with joblib.parallel_config(backend="corepool", n_jobs=2):
            try:
                joblib.Parallel(batch_size=1)(joblib.delayed(crash_on_two)(x) for x in range(6))
            except corepool.WorkerCrashed:
                crashed += 1
            print(joblib.Parallel()(joblib.delayed(abs)(-x) for x in range(3)))
    corepool.joblib.shutdown()
    print("crashed", crashed, "critical", counted.critical)
"""


@pytest.mark.timeout(120)
def test_a_crash_aborting_parallel_logs_no_critical_future_state(tmp_path: Path) -> None:
    # joblib aborts the call: the pool still running the other batch is terminated while
    # a batch may be on its way to a worker; its Future, failed by the terminate, was
    # claimed anyway (concurrent.futures logged "Future ... in unexpected state:
    # FINISHED" at CRITICAL and the supervisor thread died of the RuntimeError).
    done = _run_script(tmp_path, CRASH_THEN_ABORT, timeout=100)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[0, 1, 2]"] * 10 + ["crashed 10 critical []"], done.stderr
