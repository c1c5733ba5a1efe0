"""Pickled estimators hold NumPy arrays only, so a model trained on any backend (a GPU included)
unpickles and predicts where that backend is missing; and an unpickled estimator continues
training exactly where the original would."""
from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
import nnx  # noqa: E402
from nnx.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

from tolerances import scaled_error  # noqa: E402

# Modules a pickled estimator may name: its own classes, NumPy's array and dtype constructors, and
# the builtins pickle itself uses. Never a backend's array type (numba, cupy).
ALLOWED_MODULES = ("nnx", "numpy", "builtins", "copyreg", "_codecs")


def fitted(backend: str, **kw) -> MLPClassifier:
    X, y = nnx.datasets.moons(150, noise=0.2, seed=0)
    settings = dict(hidden_layer_sizes=(6,), activation="tanh", optimizer="adam", learning_rate=0.02,
                    batch_size=50, max_epochs=8, tol=None, random_state=0, backend=backend)
    settings.update(kw)
    return MLPClassifier(**settings).fit(X, np.array(["a", "b"])[y])


def globals_named(blob: bytes) -> set[str]:
    """The module of every class or function unpickling ``blob`` looks up."""
    modules: set[str] = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            modules.add(module)
            return super().find_class(module, name)

    Recorder(io.BytesIO(blob)).load()
    return modules


def arrays_in(obj, seen=None):
    """Every array reachable from ``obj``'s attributes, lists, tuples and dicts."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, np.ndarray) or type(obj).__module__.split(".")[0] in ("cupy", "numba"):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from arrays_in(value, seen)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from arrays_in(value, seen)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("nnx"):
        yield from arrays_in(vars(obj), seen)


def test_pickle_holds_numpy_arrays_only(backend_name):
    clf = fitted(backend_name)
    blob = pickle.dumps(clf)
    modules = globals_named(blob)
    assert all(m.split(".")[0] in ALLOWED_MODULES for m in modules), modules
    restored = pickle.loads(blob)
    arrays = list(arrays_in(restored))
    assert arrays and all(type(a) is np.ndarray for a in arrays)
    # the parameters and Adam's moments are among them
    assert restored.model_.training.slots["exp_avg"][0][0].shape == (2, 6)


def test_round_trip_keeps_parameters_attributes_and_predictions():
    clf = fitted("numpy")
    X = nnx.datasets.moons(40, seed=3)[0]
    restored = pickle.loads(pickle.dumps(clf))
    assert restored.get_params() == clf.get_params()
    assert np.array_equal(restored.classes_, clf.classes_) and restored.n_features_in_ == 2
    assert restored.loss_curve_ == clf.loss_curve_ and restored.n_iter_ == clf.n_iter_
    assert all(np.array_equal(a, b) for a, b in zip(restored.coefs_, clf.coefs_))
    assert np.array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert np.array_equal(restored.predict(X), clf.predict(X))


def test_unpickled_estimator_continues_training_exactly():
    X, y = nnx.datasets.moons(150, noise=0.2, seed=0)
    labels = np.array(["a", "b"])[y]
    clf = fitted("numpy")
    restored = pickle.loads(pickle.dumps(clf))
    for model in (clf, restored):  # Adam's moments, its step count and the batch order carry over
        model.partial_fit(X, labels).partial_fit(X, labels)
    assert restored.loss_curve_ == clf.loss_curve_
    assert all(np.array_equal(a, b) for a, b in zip(restored.coefs_, clf.coefs_))


def test_regressor_round_trip():
    X = nnx.datasets.moons(60, seed=0)[0]
    reg = MLPRegressor((5,), max_epochs=5, tol=None, backend="numpy", random_state=0).fit(X, X[:, 0])
    assert np.array_equal(pickle.loads(pickle.dumps(reg)).predict(X), reg.predict(X))


UNPICKLE_WITHOUT_ACCELERATORS = """
import json, pickle, sys, warnings
sys.modules["numba"] = None   # `import numba` now fails, as on a machine without it
sys.modules["cupy"] = None
import nnx
with open(sys.argv[1], "rb") as f:
    estimators = pickle.load(f)
X = nnx.datasets.moons(40, seed=3)[0]
results = []
for clf in estimators:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proba = clf.predict_proba(X)
        labels = clf.predict(X)
    results.append({"proba": proba.tolist(), "labels": labels.tolist(), "warnings": [str(w.message) for w in caught]})
print(json.dumps({"backend": nnx.get_backend().name, "numba": sys.modules["numba"] is not None,
                  "results": results}))
"""


def test_model_trained_on_any_backend_predicts_where_only_numpy_exists(backend_name, tmp_path):
    with nnx.use_backend(backend_name):
        estimators = [fitted("auto"), fitted(backend_name)]  # nnx's choice, and the backend by name
    assert all(clf.model_.backend_name == backend_name for clf in estimators)
    path = tmp_path / "estimators.pkl"
    path.write_bytes(pickle.dumps(estimators))
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    done = subprocess.run([sys.executable, "-c", UNPICKLE_WITHOUT_ACCELERATORS, str(path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout)
    assert there["backend"] == "numpy" and not there["numba"]
    X = nnx.datasets.moons(40, seed=3)[0]
    for clf, result, explicit in zip(estimators, there["results"], (False, True)):
        with nnx.use_backend("numpy"):
            here = clf.set_params(backend="numpy").predict_proba(X)
        assert scaled_error(result["proba"], here) < 1e-12
        assert result["labels"] == clf.predict(X).tolist()
        if explicit and backend_name != "numpy":  # the named backend is missing there: said once, then NumPy
            assert len(result["warnings"]) == 1
            assert f"backend '{backend_name}' is unavailable here" in result["warnings"][0]
        else:
            assert result["warnings"] == []
