"""MLP behaviour on every backend: continuation, history, divergence, Ctrl-C, persistence."""
from __future__ import annotations

import signal
import threading

import numpy as np
import pytest

import nnx
from nnx.initializers import INITIALIZERS, initial_params
from tolerances import params_error


def assert_same_params(p, q, tol=0.0):
    if tol == 0.0:
        assert all(np.array_equal(a, b) for pa, pb in zip(p, q) for a, b in zip(pa, pb))
    else:
        assert params_error(p, q) <= tol


@pytest.fixture
def moons():
    return nnx.datasets.moons(100, noise=0.2, seed=3)


def test_initial_params_shapes_and_dtype():
    m = nnx.MLP([2, 5, 4, 3], hidden="relu", dtype="float32")
    assert [(W.shape, b.shape) for W, b in m.params] == [((2, 5), (5,)), ((5, 4), (4,)), ((4, 3), (3,))]
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in m.params)
    m64 = nnx.MLP([2, 5, 4, 3], hidden="relu")
    for (W32, _), (W64, _) in zip(m.params, m64.params):
        assert np.array_equal(W32, W64.astype(np.float32))


@pytest.mark.parametrize("init", INITIALIZERS)
def test_initial_params_are_numpys_random_state_draws_whatever_was_drawn_before(init):
    """Each layer's W, then b where b is random, drawn from ``numpy.random.RandomState(seed)``, the
    tutorials' order; a model made after others (an odd count of normals drawn, another seed) or
    in another thread starts from the same numbers."""
    sizes = [3, 5, 2]

    def expected(seed):
        rs = np.random.RandomState(seed)
        out = []
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            W = {"normal_fan_in": lambda: rs.randn(fan_in, fan_out) / np.sqrt(fan_in),
                 "normal_001": lambda: rs.randn(fan_in, fan_out) * 0.01,
                 "uniform": lambda: rs.rand(fan_in, fan_out),
                 "glorot": lambda: rs.uniform(-np.sqrt(6 / (fan_in + fan_out)), np.sqrt(6 / (fan_in + fan_out)),
                                              size=(fan_in, fan_out)),
                 "he": lambda: rs.randn(fan_in, fan_out) * np.sqrt(2 / fan_in)}[init]()
            out.append((W, rs.rand(fan_out) if init == "uniform" else np.zeros(fan_out)))
        return out

    def same(got, want):
        return all(np.array_equal(gW, wW) and np.array_equal(gb, wb) for (gW, gb), (wW, wb) in zip(got, want))

    assert same(initial_params(sizes, init, 7), expected(7))
    initial_params([1, 3], "normal_fan_in", 5)  # three normals: the third's pair left cached
    assert same(initial_params(sizes, init, 0), expected(0))
    assert same(nnx.MLP(sizes, init=init, seed=2**32 - 1).params, expected(2**32 - 1))
    found = []
    worker = threading.Thread(target=lambda: found.append(initial_params(sizes, init, 7)))
    worker.start()
    worker.join()
    assert same(found[0], expected(7))


def test_params_are_copies():
    m = nnx.MLP([2, 3, 2])
    m.params[0][0][:] = 99.0
    assert not (m.params[0][0] == 99.0).any()


def test_second_fit_continues_exactly(backend, moons):
    X, y = moons
    once = nnx.MLP([2, 6, 2], seed=1).fit(X, y, passes=300, lr=0.05, l2=0.01, log_every=100)
    twice = nnx.MLP([2, 6, 2], seed=1).fit(X, y, passes=100, lr=0.05, l2=0.01, log_every=100)
    twice.fit(X, y, passes=200, lr=0.05, l2=0.01, log_every=100)
    assert once.updates == twice.updates == 300
    assert_same_params(once.params, twice.params)
    assert once.history.keys() == twice.history.keys() == {0, 100, 200, 300}
    assert once.history == twice.history


def test_history_is_the_tutorial_objective(moons):
    X, y = moons
    m = nnx.MLP([2, 4, 2]).fit(X, y, passes=250, lr=0.01, l2=0.1, reduction="sum", log_every=100)
    assert list(m.history) == [0, 100, 200, 250]
    (W1, b1), (W2, b2) = m.params
    z = np.tanh(X @ W1 + b1) @ W2 + b2
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    expected = (-np.log(p[np.arange(len(y)), y]).sum() + 0.05 * ((W1 ** 2).sum() + (W2 ** 2).sum())) / len(y)
    assert m.history[250] == pytest.approx(expected, rel=1e-12)
    assert m.loss(X, y) == pytest.approx(-np.log(p[np.arange(len(y)), y]).mean(), rel=1e-12)


def test_mean_reduction_equals_sum_with_lr_divided_by_n(moons):
    X, y = moons
    mean = nnx.MLP([2, 4, 2]).fit(X, y, passes=50, lr=0.5, reduction="mean")
    summed = nnx.MLP([2, 4, 2]).fit(X, y, passes=50, lr=0.5 / len(y), reduction="sum")
    assert_same_params(mean.params, summed.params, tol=1e-12)


def test_one_hot_labels_train_like_class_ids(moons):
    X, y = moons
    ids = nnx.MLP([2, 4, 2]).fit(X, y, passes=20, lr=0.1)
    onehot = nnx.MLP([2, 4, 2]).fit(X, np.eye(2)[y], passes=20, lr=0.1)
    assert_same_params(ids.params, onehot.params)


def test_predictions_per_head():
    X, y = nnx.datasets.xor()
    sig = nnx.MLP([2, 3, 1], hidden="sigmoid", output="sigmoid", init="uniform")
    proba = sig.predict_proba(X)
    assert proba.shape == (4, 1) and ((0 < proba) & (proba < 1)).all()
    assert np.array_equal(sig.predict(X), (proba[:, 0] >= 0.5).astype(int))
    soft = nnx.MLP([2, 3, 2])
    p = soft.predict_proba(X)
    assert np.allclose(p.sum(axis=1), 1.0) and np.array_equal(soft.predict(X), p.argmax(axis=1))
    reg = nnx.MLP([2, 3, 1], output="identity")
    (W1, b1), (W2, b2) = reg.params
    assert np.allclose(reg.predict(X), (np.tanh(X @ W1 + b1) @ W2 + b2)[:, 0], rtol=1e-14)
    with pytest.raises(ValueError, match="accuracy needs a classifier head"):
        reg.accuracy(X, y)


def test_regression_head_learns_a_smooth_function(backend):
    rs = np.random.RandomState(0)
    X = rs.uniform(-2, 2, size=(200, 1))
    y = np.sin(X[:, 0])
    m = nnx.MLP([1, 16, 1], hidden="tanh", output="identity", init="glorot")
    start = m.loss(X, y)
    m.fit(X, y, passes=2000, lr=0.1, log_every=1000)
    assert m.loss(X, y) < 0.02 * start


def test_extreme_inputs_give_no_warnings_and_finite_outputs():
    X = np.array([[1e6, -1e6], [-1e6, 1e6], [800.0, -800.0]])
    for hidden, output in [("sigmoid", "sigmoid"), ("relu", "softmax"), ("tanh", "softmax")]:
        m = nnx.MLP([2, 4, 2], hidden=hidden, output=output, init="he", seed=2)
        m.set_params([(W * 1e3, b) for W, b in m.params])
        out = m.predict_proba(X)
        assert np.isfinite(out).all() and ((0 <= out) & (out <= 1)).all()
        assert np.isfinite(m.loss(X, np.array([0, 1, 1]) if output == "softmax" else np.eye(2)[[0, 1, 1]]))


def test_divergence_names_the_pass_and_keeps_last_finite_params(backend, moons):
    X, y = moons
    X = X * 1e3
    m = nnx.MLP([2, 8, 2], hidden="relu", output="softmax", init="he")
    with pytest.raises(nnx.NonFiniteLossError) as info:
        m.fit(X, y, passes=5000, lr=1e3, reduction="sum", log_every=1000)
    bad = info.value.pass_number
    assert 1 <= bad <= 5000
    assert f"non-finite at pass {bad}" in str(info.value) and "Lower the learning rate" in str(info.value)
    assert m.updates == bad - 1
    assert all(np.isfinite(W).all() and np.isfinite(b).all() for W, b in m.params)
    assert np.isfinite(m.loss(X, y))
    # Replaying from scratch, exactly bad - 1 passes keeps the same finite parameters.
    replay = nnx.MLP([2, 8, 2], hidden="relu", output="softmax", init="he")
    if bad > 1:
        replay.fit(X, y, passes=bad - 1, lr=1e3, reduction="sum", log_every=bad - 1)
    assert_same_params(replay.params, m.params)


def test_ctrl_c_stops_at_next_logging_point_keeping_progress(moons):
    X, y = moons
    m = nnx.MLP([2, 3, 2])
    timer = threading.Timer(0.3, signal.raise_signal, args=(signal.SIGINT,))
    timer.start()
    try:
        m.fit(X, y, passes=10_000_000, lr=0.01, log_every=200)
    finally:
        timer.cancel()
    assert m.interrupted
    assert 0 < m.updates < 10_000_000 and m.updates % 200 == 0
    assert max(m.history) == m.updates
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    reference = nnx.MLP([2, 3, 2]).fit(X, y, passes=m.updates, lr=0.01, log_every=m.updates)
    assert_same_params(reference.params, m.params)


def test_save_and_load_round_trip(tmp_path, moons):
    X, y = moons
    m = nnx.MLP([2, 5, 2], hidden="relu", init="he", seed=4, dtype="float32").fit(X, y, passes=30, lr=0.1,
                                                                                    log_every=10)
    path = tmp_path / "model.npz"
    m.save(path)
    loaded = nnx.load(path)
    assert (loaded.layer_sizes, loaded.hidden, loaded.output, loaded.dtype, loaded.init, loaded.seed) == \
        ((2, 5, 2), "relu", "softmax", "float32", "he", 4)
    assert loaded.updates == 30 and loaded.history == m.history
    assert_same_params(loaded.params, m.params)
    assert np.array_equal(loaded.predict_proba(X), m.predict_proba(X))


def test_load_rejects_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3))
    with pytest.raises(ValueError, match="not an nnx model file"):
        nnx.load(foreign)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(ValueError, match="not a readable nnx model file"):
        nnx.load(corrupt)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a readable nnx model file"):
        nnx.load(text)
    with pytest.raises(FileNotFoundError):
        nnx.load(tmp_path / "missing.npz")


def test_load_rejects_newer_format(tmp_path):
    path = tmp_path / "m.npz"
    nnx.MLP([2, 3, 2]).save(path)
    with np.load(path) as f:
        arrays = dict(f)
    arrays["format_version"] = np.array(99)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="newer nnx.*upgrade nnx"):
        nnx.load(path)
