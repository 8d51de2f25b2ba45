"""A scikit-learn grid search on joblib's backend "corepool" against "loky".

    python benchmarks/sklearn_grid.py               # 5 rounds
    python benchmarks/sklearn_grid.py --rounds 1    # smoke check

The same ``GridSearchCV`` (an SVC on a synthetic 1,500 x 30 classification problem,
8 parameter settings x 5 folds = 40 fits, ``n_jobs=2``) runs inside
``joblib.parallel_config(backend=...)`` for each backend. Both start warm: one
untimed fit each first, so worker start-up is not counted (loky keeps its executor
between calls, corepool's backend its pool). Each round runs both once, in a shuffled
order (the machine is shared and its speed drifts), and checks that both found the same
scores. The report gives each backend's median seconds per fit, the min-max range, and
the ratio to corepool's median.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import joblib
from sklearn.datasets import make_classification
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import corepool.joblib

BACKENDS = ("corepool", "loky")
GRID = {"C": [0.1, 1, 10, 100], "gamma": ["scale", 0.01]}


def fit(backend: str, X: object, y: object) -> tuple[float, list[float]]:
    """Seconds for one grid search on ``backend``, and its mean test scores."""
    search = GridSearchCV(SVC(), GRID, cv=5, n_jobs=2)
    with joblib.parallel_config(backend=backend, n_jobs=2):
        start = time.perf_counter()
        search.fit(X, y)
        elapsed = time.perf_counter() - start
    return elapsed, search.cv_results_["mean_test_score"].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    shuffle = random.Random(seed)

    corepool.joblib.register()
    X, y = make_classification(n_samples=1500, n_features=30, random_state=0)
    for backend in BACKENDS:
        fit(backend, X, y)  # warm: workers started, modules imported

    seconds: dict[str, list[float]] = {backend: [] for backend in BACKENDS}
    for _ in range(args.rounds):
        order = list(BACKENDS)
        shuffle.shuffle(order)
        scores = {}
        for backend in order:
            elapsed, scores[backend] = fit(backend, X, y)
            seconds[backend].append(elapsed)
        assert scores["corepool"] == scores["loky"], "the backends found different scores"

    base = statistics.median(seconds["corepool"])
    print(f"GridSearchCV, {len(GRID['C']) * len(GRID['gamma'])} settings x 5 folds, n_jobs=2; "
          f"{args.rounds} rounds, shuffle seed {seed}; same scores on both: yes")
    print()
    print("| backend | median (s) | min-max (s) | ratio vs corepool |")
    print("|---|---:|---:|---:|")
    for backend in BACKENDS:
        times = seconds[backend]
        median = statistics.median(times)
        name = f"**{backend}**" if backend == "corepool" else backend
        print(f"| {name} | {median:.2f} | {min(times):.2f}-{max(times):.2f} | "
              f"{median / base:.2f} |")


if __name__ == "__main__":
    main()
