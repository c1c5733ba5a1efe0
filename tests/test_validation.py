"""Bad input: a clear error before any work starts, with the model and the data untouched."""
from __future__ import annotations

import numpy as np
import pytest

import nnx


@pytest.fixture
def moons():
    return nnx.datasets.moons(40, noise=0.2, seed=1)


@pytest.fixture
def model():
    return nnx.MLP([2, 3, 2], seed=0)


def assert_untouched(model, before_params, X=None, X_before=None):
    for (W, b), (W0, b0) in zip(model.params, before_params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
    assert model.updates == 0 and model.history == {}
    if X is not None:
        assert np.array_equal(X, X_before, equal_nan=True)


FIT_CASES = {
    "X not 2-D": (lambda X, y: (X[:, 0], y), {}, r"X must be 2-D"),
    "X 3-D": (lambda X, y: (X[None], y), {}, r"X must be 2-D"),
    "lengths differ": (lambda X, y: (X, y[:-1]), {}, r"different lengths: 40 samples in X, 39 in y"),
    "NaN in X": (lambda X, y: (np.where(np.arange(40)[:, None] == 3, np.nan, X), y), {}, r"X contains 2 non-finite.*NaN"),
    "inf in X": (lambda X, y: (np.where(np.arange(40)[:, None] == 3, np.inf, X), y), {}, r"X contains 2 non-finite.*infinity"),
    "NaN in y": (lambda X, y: (X, np.where(np.arange(40) == 0, np.nan, y)), {}, r"y contains 1 non-finite"),
    "label out of range": (lambda X, y: (X, np.where(np.arange(40) == 0, 2, y)), {}, r"class ids in \[0, 2\).*0 to 2"),
    "negative label": (lambda X, y: (X, np.where(np.arange(40) == 0, -1, y)), {}, r"class ids in \[0, 2\)"),
    "fractional label": (lambda X, y: (X, y + 0.5), {}, r"labels must be integer class ids"),
    "bad one-hot": (lambda X, y: (X, np.full((40, 2), 0.5)), {}, r"must be one-hot"),
    "width mismatch": (lambda X, y: (np.hstack([X, X]), y), {}, r"X has 4 features but the network's input layer has 2"),
    "empty data": (lambda X, y: (X[:0], y[:0]), {}, r"X is empty"),
    "lr zero": (lambda X, y: (X, y), {"lr": 0.0}, r"lr must be a positive finite number; got 0.0"),
    "lr negative": (lambda X, y: (X, y), {"lr": -0.1}, r"lr must be a positive finite number"),
    "lr NaN": (lambda X, y: (X, y), {"lr": float("nan")}, r"lr must be a positive finite number; got nan"),
    "lr inf": (lambda X, y: (X, y), {"lr": float("inf")}, r"lr must be a positive finite number; got inf"),
    "negative passes": (lambda X, y: (X, y), {"passes": -1}, r"passes must be an integer >= 0; got -1"),
    "fractional passes": (lambda X, y: (X, y), {"passes": 2.5}, r"passes must be an integer >= 0"),
    "negative l2": (lambda X, y: (X, y), {"l2": -1.0}, r"l2 must be a finite number >= 0"),
    "unknown reduction": (lambda X, y: (X, y), {"reduction": "avg"}, r"Unknown reduction 'avg'.*'mean', 'sum'"),
    "zero log_every": (lambda X, y: (X, y), {"log_every": 0}, r"log_every must be an integer >= 1"),
}


@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_rejects_bad_input_before_any_work(case, moons, model):
    make, kwargs, pattern = FIT_CASES[case]
    X, y = make(*moons)
    X_before, params_before = np.array(X, copy=True), model.params
    with pytest.raises(ValueError, match=pattern):
        model.fit(X, y, passes=kwargs.pop("passes", 5), **kwargs)
    assert_untouched(model, params_before, X, X_before)


def test_sigmoid_targets_outside_unit_interval():
    X, y = nnx.datasets.xor()
    model = nnx.MLP([2, 2, 1], hidden="sigmoid", output="sigmoid", init="uniform")
    before = model.params
    with pytest.raises(ValueError, match=r"sigmoid head must lie in \[0, 1\]; got values from 0.0 to 2.0"):
        model.fit(X, y * 2.0, passes=1, lr=1.0)
    assert_untouched(model, before)


def test_sigmoid_head_with_wrong_target_columns():
    X, y = nnx.datasets.xor()
    model = nnx.MLP([2, 2, 3], hidden="sigmoid", output="sigmoid")
    with pytest.raises(ValueError, match=r"one target per sample, but the network has 3 outputs"):
        model.fit(X, y, passes=1)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"hidden": "tanhh"}, r"Unknown hidden activation 'tanhh'.*Did you mean 'tanh'"),
    ({"output": "softmaxx"}, r"Unknown output head 'softmaxx'.*Did you mean 'softmax'"),
    ({"init": "xavier"}, r"Unknown initialiser 'xavier'.*'glorot'"),
    ({"dtype": "float16"}, r"dtype must be 'float32' or 'float64'; got 'float16'"),
    ({"dtype": "int32"}, r"dtype must be 'float32' or 'float64'"),
])
def test_constructor_rejects_unknown_names(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        nnx.MLP([2, 3, 2], **kwargs)


@pytest.mark.parametrize("sizes", [[2], [], [2, 0, 2], [2, 3.5, 2], "232", [2, -3, 2]])
def test_constructor_rejects_bad_layer_sizes(sizes):
    with pytest.raises(ValueError, match=r"layer_sizes must list at least two positive integers"):
        nnx.MLP(sizes)


def test_softmax_needs_two_outputs():
    with pytest.raises(ValueError, match=r"softmax head needs at least 2 outputs"):
        nnx.MLP([2, 3, 1])


def test_unknown_backend_in_scope_is_value_error_with_suggestion():
    with pytest.raises(ValueError, match=r"Unknown backend 'numbaa'.*Did you mean 'numba'"):
        with nnx.use_backend("numbaa"):
            pass


def test_predict_checks_input_width(model):
    with pytest.raises(ValueError, match=r"X has 3 features"):
        model.predict(np.zeros((4, 3)))


def test_set_params_rejects_wrong_shapes_and_nan(model):
    before = model.params
    (W1, b1), (W2, b2) = before
    with pytest.raises(ValueError, match=r"layer 1: expected W \(3, 2\) and b \(2,\)"):
        model.set_params([(W1, b1), (W2.T, b2)])
    with pytest.raises(ValueError, match=r"layer 0: parameters contain NaN"):
        model.set_params([(np.full_like(W1, np.nan), b1), (W2, b2)])
    with pytest.raises(ValueError, match=r"expected 2 \(W, b\) pairs"):
        model.set_params([(W1, b1)])
    assert_untouched(model, before)


def test_metrics_is_reachable_after_import_nnx():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import nnx; print(nnx.metrics.clipped_cross_entropy([[0.5, 0.5]], [1]))"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) == pytest.approx(-np.log(0.5 + 1e-8) / 2, rel=1e-15)


@pytest.mark.parametrize("where", ["X", "y"])
def test_values_beyond_float32_are_refused_before_any_work(where):
    X, y = nnx.datasets.moons(20, seed=0)
    y = X[:, 0].copy()
    model = nnx.MLP([2, 3, 1], output="identity", dtype="float32")
    before = model.params
    bad_X, bad_y = X.copy(), y.copy()
    (bad_X if where == "X" else bad_y)[3] = 1e39
    with pytest.raises(ValueError, match=rf"{where} has values beyond float32's range \(largest magnitude "
                                         r"1\.00e\+39; float32 holds up to 3\.40e\+38\).*dtype='float64'"):
        model.fit(bad_X, bad_y, passes=1)
    assert_untouched(model, before)
    with pytest.raises(ValueError, match=r"X has values beyond float32's range"):
        model.predict(bad_X if where == "X" else np.full((1, 2), -1e39))
    # the same values are fine in a float64 model, and float32's own largest value fits
    nnx.MLP([2, 3, 1], output="identity").fit(bad_X if where == "X" else X, y, passes=0)
    edge = X.copy()
    edge[0, 0] = float(np.finfo(np.float32).max)
    model.predict(edge)


def test_float32_range_bound_is_where_the_cast_overflows():
    """The refusal matches the cast exactly: a value that rounds to float32's max is kept."""
    top = float(np.finfo(np.float32).max)
    half_ulp = 2.0 ** 103
    model = nnx.MLP([1, 2, 1], output="identity", dtype="float32")
    below = np.nextafter(top + half_ulp, 0.0)
    assert np.isfinite(np.float32(below))
    model.predict(np.array([[below]]))
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(top + half_ulp))
    with pytest.raises(ValueError, match="beyond float32's range"):
        model.predict(np.array([[top + half_ulp]]))


def test_set_params_refuses_complex_and_out_of_range_values(model):
    before = model.params
    (W1, b1), (W2, b2) = before
    with pytest.raises(ValueError, match=r"layer 0 W must be real-valued; got dtype complex128"):
        model.set_params([(W1 + 1j, b1), (W2, b2)])
    model32 = nnx.MLP([2, 3, 2], dtype="float32")
    before32 = model32.params
    with pytest.raises(ValueError, match=r"layer 1 b has values beyond float32's range"):
        model32.set_params([(W1, b1), (W2, np.array([0.0, 1e39]))])
    with pytest.raises(ValueError, match=r"layer 0 W must be numeric"):
        model.set_params([(W1.astype(str), b1), (W2, b2)])
    assert_untouched(model, before)
    assert_untouched(model32, before32)


def test_complex_inputs_and_targets_are_refused(moons, model):
    X, y = moons
    before = model.params
    with pytest.raises(ValueError, match=r"X must be real-valued; got dtype complex128"):
        model.fit(X + 0j, y, passes=1)
    with pytest.raises(ValueError, match=r"y must be real-valued"):
        model.fit(X, y + 0j, passes=1)
    assert_untouched(model, before)


def test_bool_labels_are_class_ids_0_and_1(moons):
    X, y = moons
    as_bool = nnx.MLP([2, 3, 2]).fit(X, y.astype(bool), passes=20, lr=0.1)
    as_int = nnx.MLP([2, 3, 2]).fit(X, y, passes=20, lr=0.1)
    for (W, b), (W0, b0) in zip(as_bool.params, as_int.params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
    assert as_bool.accuracy(X, y.astype(bool)) == as_int.accuracy(X, y)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "0", True])
def test_constructor_rejects_bad_seeds(seed):
    with pytest.raises(ValueError, match=r"seed must be an integer from 0 to 2\*\*32 - 1"):
        nnx.MLP([2, 3, 2], seed=seed)
