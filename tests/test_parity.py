"""Every backend against the NumPy backend's float64 reference, through one fixture.

Op level: each reference op against a direct NumPy formula. Model level:
``nnx.MLP`` on the backend under test against the same model on NumPy, after
one pass (1e-12) and 1,000 passes (1e-10), relative to each array's largest
magnitude. The NumPy reference math itself is checked against central finite
differences, so the parity tests compare with something known to be right.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.backends.base import Data
from nnx.backends.numpy_backend import NumpyBackend
from nnx.network import Network, Objective
from tolerances import params_error, scaled_error

ONE_PASS_TOL = 1e-12
MANY_PASS_TOL = 1e-10
# float32 runs against the float64 reference: NumPy's own float32 run lands
# within ~1e-6 (1 pass) and ~1e-4 (1,000 passes) of it; other backends may sum
# in another order, so they get ten times that.
FLOAT32_ONE_PASS_TOL = 1e-5
FLOAT32_MANY_PASS_TOL = 1e-3


# (id, layer sizes, hidden, head, data, lr, l2, reduction)
CASES = {
    "tutorial003": ((2, 3, 2), "tanh", "softmax", "moons", 0.01, 0.01, "sum"),
    "h50": ((2, 50, 2), "tanh", "softmax", "moons", 0.01, 0.01, "sum"),
    "relu3": ((2, 50, 50, 50, 2), "relu", "softmax", "moons", 0.001, 0.01, "sum"),
    "blas_head": ((2, 12, 40, 10), "tanh", "softmax", "moons", 0.001, 0.01, "sum"),
    "xor": ((2, 2, 1), "sigmoid", "sigmoid", "xor", 1.0, 0.0, "sum"),
    "identity_mean": ((2, 30, 3), "identity", "identity", "regression", 0.05, 0.01, "mean"),
    "deep_regression": ((2, 8, 8, 3), "tanh", "identity", "regression", 0.05, 0.01, "mean"),
    # at most 8 samples, inputs or outputs wider than 2: the Numba backend's shared sample-by-sample
    # entry point (xor above takes the one made for its widths)
    "few_classes": ((5, 6, 3), "tanh", "softmax", "few_classes", 0.1, 0.01, "sum"),
    "few_regression": ((3, 4, 2), "relu", "identity", "few_regression", 0.05, 0.0, "mean"),
}


def case_data(kind: str):
    if kind == "moons":
        return nnx.datasets.moons(200, 0.2, 0)
    if kind == "xor":
        return nnx.datasets.xor()
    rng = np.random.default_rng(3)
    if kind == "few_classes":
        return rng.normal(size=(6, 5)), np.array([0, 1, 2, 2, 1, 0])
    if kind == "few_regression":
        X = rng.normal(size=(5, 3))
        return X, np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]], axis=1)
    X = rng.normal(size=(150, 2))
    return X, np.stack([np.sin(X[:, 0]), X[:, 0] * X[:, 1], np.cos(X[:, 1])], axis=1)


def fit(case: str, passes: int, dtype: str = "float64"):
    sizes, hidden, head, kind, lr, l2, reduction = CASES[case]
    X, y = case_data(kind)
    model = nnx.MLP(list(sizes), hidden=hidden, output=head, seed=1, dtype=dtype)
    model.fit(X, y, passes=passes, lr=lr, l2=l2, reduction=reduction, log_every=max(passes, 1))
    return model


def reference(case: str, passes: int):
    with nnx.use_backend("numpy"):
        return fit(case, passes)


# ------------------------------------------------------------------ op level
@pytest.mark.parametrize("kind", ["sigmoid", "tanh", "relu", "identity"])
def test_activation_ops_match_their_formulas(backend, kind):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(40, 7))
    want = {"sigmoid": 1 / (1 + np.exp(-z)), "tanh": np.tanh(z), "relu": np.maximum(z, 0), "identity": z}[kind]
    got = backend.activation_forward(kind, backend.asarray(z, np.float64), backend.asarray(np.empty_like(z), np.float64))
    assert scaled_error(backend.to_numpy(got), want) <= ONE_PASS_TOL
    g = rng.normal(size=z.shape)
    deriv = {"sigmoid": want * (1 - want), "tanh": 1 - want**2, "relu": (want > 0) * 1.0, "identity": 1.0}[kind]
    out = backend.activation_backward(kind, backend.asarray(g.copy(), np.float64), backend.asarray(want, np.float64),
                                      backend.asarray(np.empty_like(z), np.float64))
    assert scaled_error(backend.to_numpy(out), g * deriv) <= ONE_PASS_TOL


def test_softmax_head_and_dense_forward_match_numpy(backend):
    rng = np.random.default_rng(1)
    x, W, b = rng.normal(size=(30, 4)), rng.normal(size=(4, 5)), rng.normal(size=5)
    T = np.eye(5)[rng.integers(0, 5, 30)]
    xp = lambda a: backend.asarray(a, np.float64)  # noqa: E731
    z = backend.to_numpy(backend.dense_forward(xp(x), xp(W), xp(b), "identity", xp(np.empty((30, 5)))))
    assert scaled_error(z, x @ W + b) <= ONE_PASS_TOL
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    y = backend.to_numpy(backend.head_output("softmax", xp(z), xp(np.empty_like(z))))
    assert scaled_error(y, p) <= ONE_PASS_TOL
    delta = backend.head_delta("softmax", xp(p), xp(T), 0.5, xp(np.empty_like(z)), xp(np.empty_like(z)))
    assert scaled_error(backend.to_numpy(delta), (p - T) * 0.5) <= ONE_PASS_TOL
    loss = backend.head_loss_sum("softmax", xp(z), xp(T))
    assert abs(loss - float(-(T * np.log(p)).sum())) <= 1e-12 * abs(loss)


# -------------------------------------------- the reference math is correct
def objective_for_gradcheck(np_backend, net, params, data, objective) -> float:
    """reduce(data loss) + l2/2 * sum(W**2): what ``gradients`` differentiates."""
    mean_loss = np_backend.data_loss(net, params, data)
    reduced = mean_loss * data.n_samples if objective.reduction == "sum" else mean_loss
    return reduced + objective.l2 / 2 * sum(float((W * W).sum()) for W, _ in params)


@pytest.mark.parametrize("hidden,head,reduction", [
    ("tanh", "softmax", "sum"), ("sigmoid", "sigmoid", "mean"), ("relu", "identity", "sum"),
    ("identity", "softmax", "mean"),
])
def test_numpy_reference_gradients_match_finite_differences(hidden, head, reduction):
    rng = np.random.default_rng(4)
    net = Network((3, 5, 4, 2), hidden, head)
    X = rng.normal(size=(25, 3))
    T = np.eye(2)[rng.integers(0, 2, 25)] if head == "softmax" else rng.uniform(0.1, 0.9, size=(25, 2))
    params = [(rng.normal(size=s) * 0.7, rng.normal(size=s[1]) * 0.3) for s in net.layer_shapes()]
    objective = Objective(reduction, 0.05)
    be = NumpyBackend()
    data = Data(X, T)
    grads = be.gradients(net, params, data, objective)
    h = 1e-6
    for layer, (W, b) in enumerate(params):
        for arr, grad in ((W, grads[layer][0]), (b, grads[layer][1])):
            numeric = np.empty_like(arr)
            for idx in np.ndindex(arr.shape):
                old = arr[idx]
                arr[idx] = old + h
                up = objective_for_gradcheck(be, net, params, data, objective)
                arr[idx] = old - h
                down = objective_for_gradcheck(be, net, params, data, objective)
                arr[idx] = old
                numeric[idx] = (up - down) / (2 * h)
            assert scaled_error(grad, numeric) < 1e-6, (layer, arr.shape)


# ---------------------------------------------------------------- model level
@pytest.mark.parametrize("case", sorted(CASES))
def test_one_pass_matches_numpy(backend, case):
    assert params_error(fit(case, 1).params, reference(case, 1).params) <= ONE_PASS_TOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_thousand_passes_match_numpy(backend, case):
    got, want = fit(case, 1000), reference(case, 1000)
    assert params_error(got.params, want.params) <= MANY_PASS_TOL
    assert abs(got.history[1000] - want.history[1000]) <= MANY_PASS_TOL * abs(want.history[1000])


@pytest.mark.parametrize("case", ["tutorial003", "h50", "xor"])
def test_float32_within_stated_tolerance(backend, case):
    assert params_error(fit(case, 1, "float32").params, reference(case, 1).params) <= FLOAT32_ONE_PASS_TOL
    got, want = fit(case, 1000, "float32"), reference(case, 1000)
    assert params_error(got.params, want.params) <= FLOAT32_MANY_PASS_TOL
    assert all(W.dtype == np.float32 for W, _ in got.params)


def test_long_tutorial_run_ends_in_either_phase(backend):
    """Tutorial 003 settles into a period-2 oscillation at rounding level, so a
    long run is compared by its phase-free figures: loss near either phase,
    accuracy equal."""
    X, y = nnx.datasets.moons(200, 0.2, 0)
    model = nnx.MLP([2, 3, 2], seed=0).fit(X, y, passes=20_000, lr=0.01, l2=0.01, reduction="sum",
                                            log_every=1000)
    with nnx.use_backend("numpy"):
        ref = nnx.MLP([2, 3, 2], seed=0).fit(X, y, passes=20_000, lr=0.01, l2=0.01, reduction="sum",
                                              log_every=1000)
        ref_accuracy = ref.accuracy(X, y)
    loss = model.history[20_000]
    assert min(abs(loss - 0.0707579), abs(loss - 0.0713158)) < 1e-6
    assert min(abs(ref.history[20_000] - 0.0707579), abs(ref.history[20_000] - 0.0713158)) < 1e-6
    assert model.accuracy(X, y) == ref_accuracy
    # the first 1,000 passes are still on the shared trajectory
    assert abs(model.history[1000] - ref.history[1000]) <= MANY_PASS_TOL * ref.history[1000]
