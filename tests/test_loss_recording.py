"""Logging points taken from the training passes themselves.

Where a backend records each logging point's loss from the forward pass of the update
that follows it (``Backend.records_losses``: Numba's one-hidden-layer kernels), the
driver logs many points per call. Nothing a user sees may change: the history, the
parameters, early stopping, divergence reports and every kernel path must equal a fit
run one call per logging interval (forced here by a callback, which reads the model at
each point) bit for bit, and the NumPy backend within the parity tolerances.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.backends.numpy_backend import NumpyBackend
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD, Adam

numba = pytest.importorskip("numba", reason="numba is not installed")
if nnx.available_backends()["numba"] is not None:
    pytest.skip(f"numba backend unavailable: {nnx.available_backends()['numba']}", allow_module_level=True)

from nnx.backends.numba_backend import NumbaBackend, make_plan  # noqa: E402

# (id, layer sizes, hidden, output, samples, the entry point and chunk kernel the plan runs)
NETS = [
    ("tutorial-2x2", (2, 3, 2), "tanh", "softmax", 200, ("train", "2x2")),
    ("wide-2x2-chunked", (2, 64, 2), "tanh", "softmax", 5000, ("train_parallel", "2x2")),
    ("relu-3-classes", (2, 16, 3), "relu", "softmax", 300, ("train", "any")),
    ("relu-chunked", (2, 128, 3), "relu", "softmax", 5000, ("train_parallel", "any")),
    ("xor-tiny", (2, 2, 1), "sigmoid", "sigmoid", 4, ("train_tiny", "")),
]


def _data(sizes, output, n):
    if n == 4:
        X, y = nnx.datasets.xor()
        return X, y.astype(float)
    X, _ = nnx.datasets.moons(n, noise=0.2, seed=3)
    y = np.random.default_rng(0).integers(0, sizes[-1], n) if output == "softmax" else None
    return X, y


def _fit(net, *, callback=None, passes=50, log_every=7, **settings):
    _, sizes, hidden, output, n, _ = net
    X, y = _data(sizes, output, n)
    if settings.get("reduction") == "sum":  # tutorial 003's lr is for its 200 summed samples
        settings = {**settings, "lr": settings["lr"] * 200 / n}
    model = nnx.MLP(list(sizes), hidden=hidden, output=output, seed=2)
    model.fit(X, y, passes=passes, log_every=log_every, verbose=0, callback=callback, **settings)
    return model


def _one_call_per_point(updates, loss):
    """Reads nothing, but makes the driver run one call per logging interval."""


SETTINGS = {
    "sgd-l2-sum": dict(lr=0.01, l2=0.01, reduction="sum"),
    "sgd-mean": dict(lr=0.1, reduction="mean"),
    "adam-l2": dict(optimizer=Adam(0.01), l2=0.001),
}


@pytest.mark.parametrize("settings", SETTINGS.values(), ids=SETTINGS.keys())
@pytest.mark.parametrize("net", NETS, ids=[n[0] for n in NETS])
@pytest.mark.parametrize("log_every", [1, 7])
def test_points_from_the_passes_equal_a_call_per_point_bit_for_bit(net, settings, log_every):
    plan = make_plan(Network(net[1], hidden=net[2], output=net[3]), net[4])
    assert (plan.kernel, plan.chunk_kernel) == net[5]
    with nnx.use_backend("numba") as backend:
        assert backend.records_losses(Network(net[1], hidden=net[2], output=net[3]), SGD(0.1))
        recorded = _fit(net, log_every=log_every, **settings)
        per_point = _fit(net, log_every=log_every, callback=_one_call_per_point, **settings)
    assert list(recorded.history) == list(range(0, 50, log_every)) + [50]
    assert recorded.history == per_point.history  # dicts of floats: equal bit for bit
    for (W, b), (W0, b0) in zip(recorded.params, per_point.params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
    with nnx.use_backend("numpy"):
        reference = _fit(net, log_every=log_every, **settings)
    for updates, loss in reference.history.items():
        assert recorded.history[updates] == pytest.approx(loss, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("net", NETS, ids=[n[0] for n in NETS])
def test_recorded_points_match_the_formula_at_each_points_parameters(net):
    """The backend call itself: its losses against tutorial 003's objective, computed in NumPy
    float64 at the parameters a point-by-point replay reaches."""
    _, sizes, hidden, output, n, _ = net
    X, y = _data(sizes, output, n)
    model = nnx.MLP(list(sizes), hidden=hidden, output=output, seed=2)
    numba_backend, numpy_backend = NumbaBackend(), NumpyBackend()
    objective = Objective("sum", 0.01)
    T = np.eye(sizes[-1])[y] if output == "softmax" else y.reshape(-1, 1)
    data = numba_backend.prepare_data(model.net, X, T)
    state = TrainState(numba_backend.prepare_params(model.net, model.params))
    losses = numba_backend.train_recording(model.net, state, data, objective, SGD(0.01), np.full(10, 0.01), 4)
    assert losses.shape == (3,)  # after 4, 8 and 10 updates
    replay = TrainState(numpy_backend.prepare_params(model.net, model.params))
    for count, loss in zip((4, 4, 2), losses):
        numpy_backend.train(model.net, replay, numpy_backend.prepare_data(model.net, X, T), objective, SGD(0.01),
                            np.full(count, 0.01))
        (W1, b1), (W2, b2) = replay.params
        z = (np.tanh if hidden == "tanh" else (lambda v: np.maximum(v, 0)) if hidden == "relu"
             else (lambda v: 1 / (1 + np.exp(-v))))(X @ W1 + b1) @ W2 + b2
        if output == "softmax":
            top = z.max(axis=1, keepdims=True)
            data_loss = float((np.log(np.exp(z - top).sum(axis=1)) + top[:, 0] - (T * z).sum(axis=1)).sum())
        else:
            data_loss = float(0.5 * ((1 / (1 + np.exp(-z)) - T) ** 2).sum())
        expected = (data_loss + 0.01 / 2 * ((W1 ** 2).sum() + (W2 ** 2).sum())) / n
        assert loss == pytest.approx(expected, rel=1e-11)


def test_early_stopping_on_the_training_loss_stops_at_the_same_point():
    net = NETS[0]
    rule = dict(early_stopping=nnx.EarlyStopping("loss", patience=2, min_delta=1e-3, restore_best=False))
    with nnx.use_backend("numba"):
        recorded = _fit(net, passes=5000, log_every=5, lr=0.01, l2=0.01, reduction="sum", **rule)
        per_point = _fit(net, passes=5000, log_every=5, lr=0.01, l2=0.01, reduction="sum",
                         callback=_one_call_per_point, **rule)
    assert recorded.stopped_early and per_point.stopped_early
    assert recorded.updates == per_point.updates < 5000 and recorded.history == per_point.history
    assert max(recorded.history) == recorded.updates
    for (W, b), (W0, b0) in zip(recorded.params, per_point.params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_a_divergence_is_reported_at_the_same_pass_with_the_same_parameters():
    outcomes = []
    for callback in (None, _one_call_per_point):
        model = nnx.MLP([2, 8, 2], hidden="relu", init="he", seed=2)  # relu: unbounded, so it overflows
        X, y = nnx.datasets.moons(200, noise=0.2, seed=3)
        with nnx.use_backend("numba"), pytest.raises(nnx.NonFiniteLossError) as info:
            model.fit(X * 1e3, y, passes=5000, lr=1e3, reduction="sum", log_every=3, verbose=0, callback=callback)
        outcomes.append((info.value.pass_number, model.updates, dict(model.history), model.params))
    (bad, updates, history, params), (bad0, updates0, history0, params0) = outcomes
    assert (bad, updates, history) == (bad0, updates0, history0) and bad > 0
    for (W, b), (W0, b0) in zip(params, params0):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


@pytest.mark.parametrize("sizes", [(2, 3, 2), (2, 64, 2)], ids=["tutorial", "wide"])
def test_float32_points_from_the_passes_equal_a_call_per_point(sizes):
    X, y = nnx.datasets.moons(300, noise=0.2, seed=0)
    fits = []
    for callback in (None, _one_call_per_point):
        model = nnx.MLP(list(sizes), seed=1, dtype="float32")
        with nnx.use_backend("numba"):
            model.fit(X, y, passes=40, log_every=3, lr=0.01, l2=0.01, reduction="sum", verbose=0, callback=callback)
        fits.append(model)
    assert fits[0].history == fits[1].history and len(fits[0].history) == 15
    for (W, b), (W0, b0) in zip(fits[0].params, fits[1].params):
        assert W.dtype == np.float32 and np.array_equal(W, W0) and np.array_equal(b, b0)
