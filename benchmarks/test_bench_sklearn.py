"""``GridSearchCV`` over nnx's ``MLPClassifier`` against the same search over scikit-learn's own.

The search: 6 hidden sizes x 3-fold cross-validation on moons (N=2,000), ``n_jobs=2``,
full-batch gradient descent with no momentum and no regularisation, a fixed number of
epochs (scikit-learn: ``solver="sgd"``, ``batch_size`` = the whole fold, ``momentum=0``,
``alpha=0``, constant learning rate, no early stopping, its ``tol`` rule switched off with
``n_iter_no_change=max_iter``, no shuffling; nnx: ``optimizer="sgd"``, ``batch_size="full"``,
``tol=None``), the same learning rate and tanh. Both record the training loss every epoch;
nnx is also timed logging once per fit (``log_every=max_epochs``), which lets its compiled
loop run the whole fit in one call.

Each timed round is one whole ``GridSearchCV.fit``, workers and kernel cache warm (one
untimed search of each first). Before every nnx round, untimed by pytest-benchmark, the same
search runs on scikit-learn and is timed here, so load on a shared machine slows both alike;
``extra_info`` holds scikit-learn's times and ``speedup_over_scikit_learn`` (best round over
best round). With the tiny size set (the default, CI) the searches run small and untimed.
"""
from __future__ import annotations

import time
import warnings

import pytest

import nnx
from nnx.bench.machine import usable_cores

from conftest import size_set

pytest.importorskip("pytest_benchmark")
pytest.importorskip("sklearn")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.neural_network import MLPClassifier as ScikitMLPClassifier  # noqa: E402

from nnx.sklearn import MLPClassifier  # noqa: E402

HIDDEN = (4, 8, 16, 32, 64, 128)
SETTINGS = {"tiny": dict(samples=200, epochs=5, hidden=HIDDEN[:2]),
            "quick": dict(samples=2000, epochs=200, hidden=HIDDEN),
            "full": dict(samples=2000, epochs=1000, hidden=HIDDEN)}
LEARNING_RATE = 0.1
FOLDS = 3
N_JOBS = 2


def scikit_learn_model(samples: int, epochs: int) -> ScikitMLPClassifier:
    return ScikitMLPClassifier(activation="tanh", solver="sgd", learning_rate="constant",
                               learning_rate_init=LEARNING_RATE, batch_size=samples, momentum=0.0,
                               nesterovs_momentum=False, alpha=0.0, max_iter=epochs, tol=0.0,
                               n_iter_no_change=epochs, early_stopping=False, shuffle=False, random_state=0)


def nnx_model(backend: str, epochs: int, log_every: int) -> MLPClassifier:
    return MLPClassifier(activation="tanh", optimizer="sgd", learning_rate=LEARNING_RATE, batch_size="full",
                         max_epochs=epochs, log_every=log_every, tol=None, backend=backend, random_state=0)


def search(model, X, y, hidden) -> GridSearchCV:
    with warnings.catch_warnings():
        # scikit-learn warns that a whole-set batch_size exceeds each fold, and that max_iter was reached
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GridSearchCV(model, {"hidden_layer_sizes": [(h,) for h in hidden]}, cv=FOLDS,
                            n_jobs=N_JOBS).fit(X, y)


def _backends() -> list:
    return [pytest.param(name, id=name, marks=[pytest.mark.gpu] if name == "cupy" else [])
            for name in ("numba", "numpy", "cupy")]


@pytest.mark.parametrize("logging", ["loss-every-epoch", "loss-once"])
@pytest.mark.parametrize("backend", _backends())
def test_bench_grid_search_against_scikit_learn(benchmark, bench_config, backend, logging):
    reason = nnx.available_backends()[backend]
    if reason is not None:
        pytest.skip(f"backend {backend!r} unavailable here: {reason}")
    settings = SETTINGS[size_set()]
    X, y = nnx.datasets.moons(settings["samples"], noise=0.2, seed=0)
    epochs, hidden = settings["epochs"], settings["hidden"]
    ours = nnx_model(backend, epochs, 1 if logging == "loss-every-epoch" else epochs)
    theirs = scikit_learn_model(settings["samples"], epochs)
    scikit_seconds: list[float] = []

    def time_scikit_learn() -> None:
        start = time.perf_counter()
        search(theirs, X, y, hidden)
        scikit_seconds.append(time.perf_counter() - start)

    if not benchmark.disabled:  # warm: loky's workers started, kernels compiled or loaded from the cache
        search(ours, X, y, hidden)
        search(theirs, X, y, hidden)
    benchmark.group = f"GridSearchCV moons N={settings['samples']} {len(hidden)} sizes x {FOLDS}-fold"
    result = benchmark.pedantic(lambda: search(ours, X, y, hidden),
                                setup=time_scikit_learn if not benchmark.disabled else None,
                                rounds=min(bench_config.rounds, 3), iterations=1)  # each round is a whole search
    assert result.best_score_ > (0.8 if size_set() != "tiny" else 0.5)
    info = {"samples": settings["samples"], "epochs": epochs, "hidden_sizes": list(hidden), "folds": FOLDS,
            "n_jobs": N_JOBS, "learning_rate": LEARNING_RATE, "log_every": ours.log_every,
            "usable_cores": usable_cores(), "size_set": bench_config.size_set,
            "best_score": result.best_score_}
    if not benchmark.disabled:
        info["scikit_learn_seconds"] = scikit_seconds
        info["speedup_over_scikit_learn"] = min(scikit_seconds) / benchmark.stats.stats.min
        print(f"\n{backend} {logging}: nnx best {benchmark.stats.stats.min:.3f} s, scikit-learn best "
              f"{min(scikit_seconds):.3f} s: {info['speedup_over_scikit_learn']:.1f}x")
    benchmark.extra_info.update(info)
