"""Scores of a few scikit-learn fits under a joblib backend (compared across backends)."""

from __future__ import annotations

import joblib

import corepool.joblib


def scores(backend: str) -> dict[str, object]:
    """Cross-validation, grid-search and random-forest results with ``backend``."""
    corepool.joblib.register()
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.svm import SVC

    X, y = make_classification(n_samples=300, n_features=20, random_state=0)
    with joblib.parallel_config(backend=backend, n_jobs=2):
        cv = cross_val_score(SVC(), X, y, cv=5, n_jobs=2)
        grid = GridSearchCV(SVC(), {"C": [0.1, 1, 10], "gamma": ["scale", 0.01]}, cv=3, n_jobs=2)
        grid.fit(X, y)
        forest = RandomForestClassifier(n_estimators=20, random_state=0, n_jobs=2).fit(X, y)
    return {
        "cv": cv.tolist(),
        "grid": grid.cv_results_["mean_test_score"].tolist(),
        "best": grid.best_params_,
        "forest": forest.predict_proba(X[:50]).tolist(),
    }
