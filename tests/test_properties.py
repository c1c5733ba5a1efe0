"""Property-based checks over random networks: every backend is NumPy's twin on any shape.

Hypothesis draws depth, widths (including the tiny dimensions that switch kernel
paths), activations, heads and reductions; one pass on the backend under test
must match the NumPy backend to 1e-12 (float64), and probabilities stay valid.
"""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnx
from nnx.network import HIDDEN_ACTIVATIONS, OUTPUT_HEADS
from tolerances import scaled_error

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def problems(draw):
    head = draw(st.sampled_from(OUTPUT_HEADS))
    n_out = draw(st.integers(2, 12)) if head == "softmax" else draw(st.integers(1, 12))
    sizes = [draw(st.integers(1, 12))] + draw(st.lists(st.sampled_from([1, 2, 3, 9, 16, 40]), min_size=1,
                                                           max_size=3)) + [n_out]
    hidden = draw(st.sampled_from(HIDDEN_ACTIVATIONS))
    n = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**16))
    rs = np.random.RandomState(seed)
    X = rs.normal(size=(n, sizes[0])) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    if head == "softmax":
        y = rs.randint(0, n_out, size=n)
    elif head == "sigmoid":
        y = rs.uniform(0, 1, size=(n, n_out))
    else:
        y = rs.normal(size=(n, n_out))
    return sizes, hidden, head, X, y, seed, draw(st.sampled_from(["sum", "mean"]))


@SETTINGS
@given(problem=problems())
def test_one_pass_matches_numpy_on_random_networks(backend, problem):
    sizes, hidden, head, X, y, seed, reduction = problem
    kwargs = dict(hidden=hidden, output=head, init="glorot", seed=seed)
    fit = dict(passes=1, lr=0.05, l2=0.01, reduction=reduction, log_every=1)
    model = nnx.MLP(sizes, **kwargs).fit(X, y, **fit)
    with nnx.use_backend("numpy"):
        reference = nnx.MLP(sizes, **kwargs).fit(X, y, **fit)
    for (W, b), (W0, b0) in zip(model.params, reference.params):
        assert scaled_error(W, W0) <= 1e-12 and scaled_error(b, b0) <= 1e-12
    assert abs(model.history[1] - reference.history[1]) <= 1e-12 * max(abs(reference.history[1]), 1.0)


@SETTINGS
@given(problem=problems())
def test_probabilities_are_valid_at_any_scale(backend, problem):
    sizes, hidden, head, X, _, seed, _ = problem
    model = nnx.MLP(sizes, hidden=hidden, output=head, init="he", seed=seed)
    model.set_params([(W * 50.0, b) for W, b in model.params])
    out = model.predict_proba(X * 100.0)
    assert out.shape == (X.shape[0], sizes[-1]) and np.isfinite(out).all()
    if head == "softmax":
        assert np.allclose(out.sum(axis=1), 1.0, atol=1e-12) and (out >= 0).all()
    elif head == "sigmoid":
        assert ((out >= 0) & (out <= 1)).all()
