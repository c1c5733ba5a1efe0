"""The estimators inside scikit-learn's tools: Pipeline, cross_val_score and GridSearchCV with two
workers in processes (loky) and in threads, which must give the scores of the same search run serially."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

pytest.importorskip("sklearn")
import joblib  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, cross_validate  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import nnx  # noqa: E402
from nnx.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

GRID = {"mlpclassifier__hidden_layer_sizes": [(2,), (6,), (12,)]}


def data():
    X, y = nnx.datasets.moons(150, noise=0.25, seed=1)
    return 3.0 * X + 5.0, np.array(["left", "right"])[y]  # off-centre and scaled: the pipeline's scaler matters


def small(backend: str = "numpy", **kw) -> MLPClassifier:
    return MLPClassifier(activation="tanh", optimizer="sgd", batch_size="full", learning_rate=0.5, max_epochs=60,
                         tol=None, backend=backend, random_state=0, **kw)


def test_pipeline_scales_then_classifies():
    X, y = data()
    pipe = make_pipeline(StandardScaler(), small(hidden_layer_sizes=(8,))).fit(X, y)
    scaled = (X - X.mean(axis=0)) / X.std(axis=0)
    alone = small(hidden_layer_sizes=(8,)).fit(scaled, y)
    assert np.array_equal(pipe.predict_proba(X), alone.predict_proba(scaled))
    assert pipe.score(X, y) == np.mean(alone.predict(scaled) == y) > 0.85
    assert list(pipe.classes_) == ["left", "right"]


def test_pipeline_regressor():
    X, _ = data()
    y = X[:, 0] - 0.5 * X[:, 1]
    pipe = make_pipeline(StandardScaler(), MLPRegressor((8,), activation="tanh", optimizer="adam", learning_rate=0.01,
                                                        max_epochs=300, backend="numpy", random_state=0))
    assert pipe.fit(X, y).score(X, y) > 0.95


def test_cross_val_score_is_the_accuracy_of_each_fold():
    X, y = data()
    model = make_pipeline(StandardScaler(), small(hidden_layer_sizes=(6,)))
    scores = cross_val_score(model, X, y, cv=3)
    manual = []
    for train, test in StratifiedKFold(3).split(X, y):
        fitted = make_pipeline(StandardScaler(), small(hidden_layer_sizes=(6,))).fit(X[train], y[train])
        manual.append(np.mean(fitted.predict(X[test]) == y[test]))
    assert np.array_equal(scores, manual)


def _search(backend: str, n_jobs: int) -> GridSearchCV:
    X, y = data()
    return GridSearchCV(make_pipeline(StandardScaler(), small(backend)), GRID, cv=3, n_jobs=n_jobs).fit(X, y)


def _same_search(a: GridSearchCV, b: GridSearchCV) -> None:
    assert np.array_equal(a.cv_results_["mean_test_score"], b.cv_results_["mean_test_score"])
    assert a.best_params_ == b.best_params_
    assert all(np.array_equal(p, q) for p, q in zip(a.best_estimator_[-1].coefs_, b.best_estimator_[-1].coefs_))


@pytest.fixture(scope="module")
def serial_searches():
    return {}


def _serial(cache: dict, backend: str) -> GridSearchCV:
    if backend not in cache:
        cache[backend] = _search(backend, 1)
    return cache[backend]


def test_grid_search_in_processes(backend_name, serial_searches):
    serial = _serial(serial_searches, backend_name)  # also fills the kernel cache the workers load from
    with joblib.parallel_config(backend="loky"):
        _same_search(_search(backend_name, 2), serial)
    assert serial.best_score_ > 0.85


@pytest.mark.parametrize("how", ["parallel_backend", "parallel_config"])
def test_grid_search_in_threads(backend_name, serial_searches, how):
    serial = _serial(serial_searches, backend_name)
    scope = (joblib.parallel_backend("threading") if how == "parallel_backend"
             else joblib.parallel_config(backend="threading"))
    with scope:
        _same_search(_search(backend_name, 2), serial)


class WhereFitted(MLPClassifier):
    """Records the process and thread each fit ran in."""

    def fit(self, X, y):
        self.fitted_in_ = (os.getpid(), threading.get_ident())
        return super().fit(X, y)


@pytest.mark.parametrize("joblib_backend", ["loky", "threading"])
def test_fits_run_in_two_workers_and_come_back_usable(joblib_backend):
    X, y = data()
    model = WhereFitted(activation="tanh", optimizer="sgd", batch_size="full", learning_rate=0.5, max_epochs=30,
                        tol=None, backend="numpy", random_state=0)
    with joblib.parallel_config(backend=joblib_backend):
        result = cross_validate(model, X, y, cv=4, n_jobs=2, return_estimator=True)
    places = {est.fitted_in_ for est in result["estimator"]}
    here = (os.getpid(), threading.get_ident())
    assert here not in places  # (how the fits spread over the two workers is joblib's business)
    pids = {pid for pid, _ in places}
    assert os.getpid() not in pids if joblib_backend == "loky" else pids == {os.getpid()}
    serial = cross_validate(model, X, y, cv=4, return_estimator=True)
    for parallel, alone in zip(result["estimator"], serial["estimator"]):
        assert np.array_equal(parallel.predict_proba(X), alone.predict_proba(X))
