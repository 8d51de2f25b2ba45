"""scikit-learn and joblib on corepool's workers: the joblib backend "corepool".

``corepool.joblib.register()`` adds a joblib backend; inside
``joblib.parallel_config(backend="corepool", ...)`` every ``n_jobs`` of scikit-learn
and every ``joblib.Parallel`` runs on a corepool pool, with corepool's options
(``task_timeout``, ``retries``) and its crash handling.
"""

from __future__ import annotations

import os
import time

import joblib
from joblib import Parallel, delayed
from joblib.externals.loky.process_executor import TerminatedWorkerError
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import corepool
import corepool.joblib


def grid_search(backend: str) -> GridSearchCV:
    X, y = make_classification(n_samples=400, n_features=20, random_state=0)
    search = GridSearchCV(SVC(), {"C": [0.1, 1, 10], "gamma": ["scale", 0.01]}, cv=4)
    with joblib.parallel_config(backend=backend, n_jobs=2):
        search.fit(X, y)
    return search


def main() -> None:
    # --8<-- [start:register]
    corepool.joblib.register()  # once, before the first parallel_config
    search = grid_search("corepool")
    print(f"GridSearchCV on corepool: best {search.best_params_}, score {search.best_score_:.3f}")
    # --8<-- [end:register]
    same = (
        grid_search("loky").cv_results_["mean_test_score"] == search.cv_results_["mean_test_score"]
    ).all()
    print(f"the same scores as on loky: {same}")

    # --8<-- [start:options]
    with joblib.parallel_config(backend="corepool", n_jobs=2, task_timeout=1.0):
        start = time.monotonic()
        try:
            Parallel()(delayed(time.sleep)(s) for s in [0.1, 60])
        except corepool.TaskTimeout:
            print(f"task_timeout=1.0: TaskTimeout after {time.monotonic() - start:.1f} s")

    with joblib.parallel_config(backend="corepool", n_jobs=2):
        try:
            Parallel()(delayed(os._exit)(3) for _ in range(1))
        except TerminatedWorkerError as crash:  # what code written for loky catches
            print(
                f"os._exit(3) in a task: {type(crash).__name__}, "
                f"a corepool.WorkerCrashed: {isinstance(crash, corepool.WorkerCrashed)}"
            )
        print(f"the pool goes on: {Parallel()(delayed(abs)(x) for x in [-4, -5])}")
    # --8<-- [end:options]


if __name__ == "__main__":
    main()
