"""nnx.datasets: the tutorials' data, made without scikit-learn at run time.

``moons`` must be scikit-learn's ``make_moons`` draw for draw, so tutorial 003
(``np.random.seed(0); make_moons(200, noise=0.20)``) starts from the same points.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

import nnx


@pytest.mark.parametrize("n, noise, seed", [
    (200, 0.2, 0),
    (200, 0.2, 1),
    (201, 0.2, 0),      # odd n: the inner moon gets the extra point
    (3, 0.05, 42),
    (2, 0.3, 7),
    (1001, 0.5, 123),
    (50, None, 0),      # no noise: no normal draw at all
    (51, None, 3),
    (200, 0.0, 0),
])
def test_moons_equals_scikit_learn_make_moons(n, noise, seed):
    X, y = nnx.datasets.moons(n, noise, seed)
    X_ref, y_ref = make_moons(n, noise=noise, random_state=seed)
    assert X.shape == (n, 2) and y.shape == (n,)
    assert X.dtype == X_ref.dtype == np.float64
    assert np.issubdtype(y.dtype, np.integer)
    assert np.array_equal(X, X_ref)
    assert np.array_equal(y, y_ref)
    assert np.bincount(y).tolist() == [n // 2, n - n // 2]


def test_moons_equals_the_tutorials_global_state_call():
    """Tutorial 003: ``np.random.seed(0)`` then ``make_moons(200, noise=0.20)``
    (random_state=None uses the global generator)."""
    saved = np.random.get_state()
    try:
        np.random.seed(0)
        X_tut, y_tut = make_moons(200, noise=0.20)
    finally:
        np.random.set_state(saved)
    X, y = nnx.datasets.moons(200, 0.2, 0)
    assert np.array_equal(X, X_tut) and np.array_equal(y, y_tut)


def test_moons_leaves_the_global_random_state_alone():
    saved = np.random.get_state()
    try:
        np.random.seed(99)
        before = np.random.get_state()[1].copy()
        nnx.datasets.moons(100, 0.2, 0)
        assert np.array_equal(np.random.get_state()[1], before)
    finally:
        np.random.set_state(saved)


def test_moons_seeds_differ_and_repeat():
    a, _ = nnx.datasets.moons(100, 0.2, 0)
    b, _ = nnx.datasets.moons(100, 0.2, 1)
    c, _ = nnx.datasets.moons(100, 0.2, 0)
    assert not np.array_equal(a, b)
    assert np.array_equal(a, c)


@pytest.mark.parametrize("n", [0, 1, -5, 2.5])
def test_moons_rejects_too_few_or_fractional_samples(n):
    with pytest.raises(ValueError, match="moons needs n"):
        nnx.datasets.moons(n, 0.2, 0)


def test_xor_is_the_truth_table():
    X, y = nnx.datasets.xor()
    assert X.dtype == np.float64 and X.shape == (4, 2)
    assert np.issubdtype(y.dtype, np.integer) and y.shape == (4,)
    assert np.array_equal(X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert np.array_equal(y, np.logical_xor(X[:, 0], X[:, 1]).astype(int))


@pytest.mark.parametrize("n_per_class, n_classes", [(100, 3), (1, 2), (37, 5)])
def test_spirals_shape_classes_and_determinism(n_per_class, n_classes):
    X, y = nnx.datasets.spirals(n_per_class, n_classes, noise=0.2, seed=4)
    n = n_per_class * n_classes
    assert X.shape == (n, 2) and X.dtype == np.float64 and y.shape == (n,)
    assert np.issubdtype(y.dtype, np.integer)
    assert np.bincount(y, minlength=n_classes).tolist() == [n_per_class] * n_classes
    assert np.isfinite(X).all()
    # Points lie on arms of radius 0..1.
    assert np.all(np.hypot(X[:, 0], X[:, 1]) <= 1.0 + 1e-12)
    X2, y2 = nnx.datasets.spirals(n_per_class, n_classes, noise=0.2, seed=4)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    if n_per_class > 1:
        X3, _ = nnx.datasets.spirals(n_per_class, n_classes, noise=0.2, seed=5)
        assert not np.array_equal(X, X3)


def test_spirals_arms_are_interleaved_and_not_linearly_separable():
    """Each arm turns through 4 radians; a linear classifier cannot separate them."""
    from sklearn.linear_model import LogisticRegression

    X, y = nnx.datasets.spirals(100, 3, noise=0.2, seed=0)
    linear = LogisticRegression(max_iter=1000).fit(X, y).score(X, y)
    assert linear < 0.75


@pytest.mark.parametrize("kwargs", [dict(n_per_class=0), dict(n_classes=1)])
def test_spirals_rejects_degenerate_sizes(kwargs):
    with pytest.raises(ValueError):
        nnx.datasets.spirals(**kwargs)
