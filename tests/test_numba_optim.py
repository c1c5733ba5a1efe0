"""The Numba backend's compiled optimisers and minibatches, at the loop-level seam.

Every optimiser x {full batch, batch 32} x {tutorial 003's 2-3-2 tanh/softmax net, a
3-hidden-layer ReLU net}, after 1 epoch and after 100, on each of the Numba paths a
network can take (the dedicated one-hidden-layer kernels, fused runs, BLAS layers),
against the NumPy backend's reference loop; the optimiser step alone against
``Optimizer.update`` bit for bit; plain gradient descent's step exactly as before;
an interval split in two equal to one; batches gathered into batch-sized buffers.
The optimiser settings are ones under which these runs are well conditioned (a one-ulp
change of one starting weight moves the NumPy reference by under 1e-13 after 100 epochs),
so the tolerances measure the backend, not the dynamics.
"""
from __future__ import annotations

import numpy as np
import pytest

from nnx.backends.numpy_backend import NumpyBackend
from nnx.batching import Batches, BatchStream
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD, Adam, AdamW, RMSprop
from tolerances import params_error, scaled_error

numba = pytest.importorskip("numba", reason="numba is not installed")

from nnx.backends.numba_backend import NumbaBackend, make_plan  # noqa: E402
from nnx.kernels import cpu_update  # noqa: E402
from nnx.kernels.cpu_ccall import c_call  # noqa: E402

ONE_EPOCH_TOL = 1e-12
MANY_EPOCH_TOL = 1e-10
ALL_BLAS, ALL_FUSED = 0, 10**9

OPTIMIZERS = {
    "sgd": SGD(0.05),
    "momentum": SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": Adam(0.01),
    "adamw-amsgrad": AdamW(0.01, amsgrad=True),
    "rmsprop-momentum": RMSprop(0.002, momentum=0.5),
    "rmsprop-centered": RMSprop(0.001, centered=True, weight_decay=1e-3),
}
NETS = {
    "tutorial003": Network((2, 3, 2), "tanh", "softmax"),
    "relu3": Network((2, 20, 20, 20, 2), "relu", "softmax"),  # by default fused, BLAS, BLAS, fused
}
# Each net on its default path and on the paths it takes when forced to BLAS or fused layers.
PATHS = {"default": None, "blas": ALL_BLAS, "fused": ALL_FUSED}


def moons_problem(net: Network, n: int = 200, seed: int = 3):
    from nnx import datasets

    X, y = datasets.moons(n, noise=0.2, seed=0)
    rng = np.random.default_rng(seed)
    params = [(rng.normal(size=s) / np.sqrt(s[0]), rng.normal(size=s[1]) * 0.1) for s in net.layer_shapes()]
    T = np.eye(net.n_outputs)[y] if net.n_outputs > 1 else y[:, None].astype(float)
    return X, T, params


def interval(n_samples: int, batch_size: int | None, epochs: int, seed: int = 7):
    """(updates, batches) of ``epochs`` epochs: full batch (no batches), or shuffled batches of
    ``batch_size`` drawn as ``fit`` draws them."""
    if batch_size is None:
        return epochs, None
    per_epoch = -(-n_samples // batch_size)
    stream = BatchStream(np.random.default_rng(seed), n_samples, batch_size, True)
    return epochs * per_epoch, stream.take(epochs * per_epoch)


def part(batches: Batches, start: int, stop: int) -> Batches:
    """Updates start..stop of an interval's batches, as an interval of their own."""
    lo, hi = int(batches.bounds[start]), int(batches.bounds[stop])
    return Batches(batches.order[lo:hi], batches.bounds[start:stop + 1] - lo, batches.max_size)


def fresh_state(backend, net, params, optimizer) -> TrainState:
    def zeros():
        return [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]

    return TrainState(backend.prepare_params(net, [(W.copy(), b.copy()) for W, b in params]),
                      slots={name: backend.prepare_params(net, zeros()) for name in optimizer.slots()})


def train(backend, net, X, T, params, optimizer, lrs, batches, objective=Objective("mean", 0.01)):
    """Params, slots and the logged loss after one ``train_and_loss`` call from fresh state."""
    state = fresh_state(backend, net, params, optimizer)
    loss = backend.train_and_loss(net, state, backend.prepare_data(net, X, T), objective, optimizer, lrs, batches)
    assert state.updates == state.step == len(lrs)
    slots = {name: backend.params_to_numpy(pairs) for name, pairs in state.slots.items()}
    return backend.params_to_numpy(state.params), slots, loss


_REFERENCE: dict = {}


def reference(net_name, optimizer_name, batch_size, epochs):
    """The NumPy backend's result for a case (computed once per test session)."""
    key = (net_name, optimizer_name, batch_size, epochs)
    if key not in _REFERENCE:
        net = NETS[net_name]
        X, T, params = moons_problem(net)
        updates, batches = interval(X.shape[0], batch_size, epochs)
        optimizer = OPTIMIZERS[optimizer_name]
        lrs = schedule(updates) * optimizer.lr
        _REFERENCE[key] = train(NumpyBackend(), net, X, T, params, optimizer, lrs, batches)
    return _REFERENCE[key]


def schedule(updates: int) -> np.ndarray:
    """A learning-rate factor per update that changes every update (cosine-like), as schedules do."""
    return 1.0 - 0.5 * np.arange(updates) / max(updates, 1)


@pytest.mark.parametrize("epochs,tol", [(1, ONE_EPOCH_TOL), (100, MANY_EPOCH_TOL)], ids=["1epoch", "100epochs"])
@pytest.mark.parametrize("batch_size", [None, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("net_name", NETS)
@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
@pytest.mark.parametrize("path", PATHS)
def test_every_optimizer_matches_numpy_on_every_path(path, optimizer_name, net_name, batch_size, epochs, tol):
    net = NETS[net_name]
    optimizer = OPTIMIZERS[optimizer_name]
    X, T, params = moons_problem(net)
    updates, batches = interval(X.shape[0], batch_size, epochs)
    lrs = schedule(updates) * optimizer.lr
    backend = NumbaBackend() if PATHS[path] is None else NumbaBackend(PATHS[path])
    got_params, got_slots, got_loss = train(backend, net, X, T, params, optimizer, lrs, batches)
    want_params, want_slots, want_loss = reference(net_name, optimizer_name, batch_size, epochs)
    assert params_error(got_params, want_params) <= tol
    for name in optimizer.slots():
        assert params_error(got_slots[name], want_slots[name]) <= tol, name
    assert got_loss == pytest.approx(want_loss, rel=tol)


@pytest.mark.parametrize("optimizer_name", ["adam", "momentum", "rmsprop-centered"])
@pytest.mark.parametrize("sizes", [(2, 300, 2), (3, 512, 64, 3), (3, 512, 64, 12)],
                         ids=["one-hidden", "deep", "deep-blas-output"])
def test_chunked_parallel_paths_match_numpy_with_large_minibatches(sizes, optimizer_name):
    """Batches large enough that their passes split into chunks on threads."""
    net = Network(sizes, "tanh", "softmax")
    rng = np.random.default_rng(1)
    n = 3000
    X = rng.normal(size=(n, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    params = [(rng.normal(size=s) / np.sqrt(s[0]), np.zeros(s[1])) for s in net.layer_shapes()]
    plan = make_plan(net, n, batch_rows=1000)
    assert plan.parallel and plan.batched, "this case must exercise a chunked minibatch plan"
    optimizer = OPTIMIZERS[optimizer_name]
    updates, batches = interval(n, 1000, 2)
    lrs = np.full(updates, optimizer.lr)
    got = train(NumbaBackend(), net, X, T, params, optimizer, lrs, batches)
    want = train(NumpyBackend(), net, X, T, params, optimizer, lrs, batches)
    assert params_error(got[0], want[0]) <= ONE_EPOCH_TOL
    assert got[2] == pytest.approx(want[2], rel=ONE_EPOCH_TOL)


@pytest.mark.parametrize("path", ["default", "blas"])
def test_float32_minibatches_stay_float32_and_close(path):
    net32 = Network((2, 3, 2), "tanh", "softmax", "float32")
    X, T, params = moons_problem(NETS["tutorial003"])
    updates, batches = interval(X.shape[0], 32, 5)
    lrs = np.full(updates, 0.01)
    backend = NumbaBackend() if PATHS[path] is None else NumbaBackend(PATHS[path])
    got, slots, _ = train(backend, net32, X, T, params, Adam(0.01), lrs, batches)
    want, _, _ = train(NumpyBackend(), NETS["tutorial003"], X, T, params, Adam(0.01), lrs, batches)
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in got)
    assert all(a.dtype == np.float32 for pairs in slots.values() for pair in pairs for a in pair)
    assert params_error(got, want) <= 1e-5


# ------------------------------------------------------------ the step itself
@numba.njit
def _call(update, theta, addresses, lr, l2, step):
    c_call(update, (theta, addresses, lr, l2, step))


def _step(update, theta, grads, slots, w_off, b_off, n_bias, settings, lr, l2, step, coef):
    """One call of a compiled update, its arrays passed by address as the training kernels pass them."""
    values = dict(grads=grads, slots=slots, w_off=w_off, b_off=b_off, n_bias=n_bias, settings=settings, coef=coef)
    values = {name: a.ctypes.data for name, a in values.items()}
    values.update(n_params=theta.size, n_slots=slots.shape[0], n_layers=w_off.size)
    addresses = np.array([values[name] for name in cpu_update.ADDRESSES], np.int64)
    _call(update.address, theta, addresses, lr, l2, step)


STEP_OPTIMIZERS = [SGD(0.1, weight_decay=0.01), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.8, dampening=0.3),
                   SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), Adam(0.01), Adam(0.01, weight_decay=0.1),
                   Adam(0.01, amsgrad=True), AdamW(0.01), AdamW(0.02, amsgrad=True, weight_decay=0.05),
                   RMSprop(0.01), RMSprop(0.01, momentum=0.5), RMSprop(0.01, centered=True, weight_decay=0.1),
                   RMSprop(0.01, alpha=0.9, momentum=0.5, centered=True)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", STEP_OPTIMIZERS, ids=lambda o: o.describe())
def test_the_compiled_step_is_the_reference_update_bit_for_bit(optimizer, dtype):
    """Three steps on the same gradients: every element operation rounds as NumPy's does."""
    shapes = [(3, 5), (5, 2)]
    w_off, b_off, off = [], [], 0
    for fi, fo in shapes:
        w_off.append(off)
        b_off.append(off + fi * fo)
        off += (fi + 1) * fo
    w_off, b_off, n_bias = np.array(w_off), np.array(b_off), np.array([fo for _, fo in shapes])
    rng = np.random.default_rng(0)
    theta = rng.normal(size=off).astype(dtype)
    want = theta.copy()
    k = len(optimizer.slots())
    slots, want_slots = np.zeros((k, off), dtype), np.zeros((k, off), dtype)
    l2 = 0.01
    update = cpu_update.updater(cpu_update.family(optimizer), dtype)
    for step in range(1, 4):
        lr = optimizer.lr * (1.0 + 0.25 * step)
        grads = rng.normal(size=off).astype(dtype)
        _step(update, theta, grads.copy(), slots, w_off, b_off, n_bias, cpu_update.settings(optimizer), lr,
              float(np.dtype(dtype).type(l2)), step, np.zeros(cpu_update.N_COEF, dtype))
        for layer, (fi, fo) in enumerate(shapes):  # the reference: dW + l2 W, then the optimiser, per array
            for lo, hi, weights in ((w_off[layer], b_off[layer], True), (b_off[layer], b_off[layer] + fo, False)):
                g = grads[lo:hi].copy()
                if weights:
                    g += np.asarray(l2 * want[lo:hi], dtype=dtype)
                optimizer.update(np, want[lo:hi], g, tuple(want_slots[j, lo:hi] for j in range(k)), step, lr)
    assert theta.dtype == np.dtype(dtype)
    assert np.array_equal(theta, want) and np.array_equal(slots, want_slots)


def test_plain_gradient_descent_is_p_plus_minus_lr_times_the_gradient_exactly():
    """Plain full-batch SGD keeps its formula: p + g * -lr, with g the same gradient the other
    optimisers see (SGD with momentum keeps g itself in its buffer after its first step).
    A power-of-two lr makes g * -lr exact, so the comparison holds to the bit."""
    for sizes, hidden in [((2, 3, 2), "tanh"), ((2, 16, 16, 16, 2), "relu"), ((2, 2, 1), "sigmoid")]:
        net = Network(sizes, hidden, "softmax" if sizes[-1] > 1 else "sigmoid")
        X, T, params = moons_problem(net)
        for path in PATHS.values():
            backend = NumbaBackend() if path is None else NumbaBackend(path)
            objective = Objective("mean", 0.0)
            plain, _, _ = train(backend, net, X, T, params, SGD(0.5), np.array([0.5]), None, objective)
            _, slots, _ = train(backend, net, X, T, params, SGD(0.5, momentum=0.9), np.array([0.5]), None, objective)
            for (W, b), (W0, b0), (gW, gb) in zip(plain, params, slots["momentum_buffer"]):
                assert np.array_equal(W, W0 + gW * -0.5) and np.array_equal(b, b0 + gb * -0.5)


# ------------------------------------------------------------ intervals and batches
@pytest.mark.parametrize("batch_size", [None, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "rmsprop-centered"])
@pytest.mark.parametrize("net_name", NETS)
def test_ten_updates_in_one_call_equal_five_and_five(net_name, optimizer_name, batch_size):
    net, optimizer = NETS[net_name], OPTIMIZERS[optimizer_name]
    X, T, params = moons_problem(net)
    _, batches = interval(X.shape[0], batch_size, 2) if batch_size else (None, None)
    lrs = schedule(10) * optimizer.lr
    backend = NumbaBackend()
    data = backend.prepare_data(net, X, T)
    objective = Objective("mean", 0.01)
    once = fresh_state(backend, net, params, optimizer)
    backend.train(net, once, data, objective, optimizer, lrs, part(batches, 0, 10) if batches else None)
    split = fresh_state(backend, net, params, optimizer)
    for lo, hi in ((0, 5), (5, 10)):
        backend.train(net, split, data, objective, optimizer, lrs[lo:hi], part(batches, lo, hi) if batches else None)
    assert once.step == split.step == 10 and once.updates == split.updates == 10
    for a, b in zip(backend.params_to_numpy(once.params), backend.params_to_numpy(split.params)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for name in optimizer.slots():
        for a, b in zip(once.slots[name], split.slots[name]):
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("sizes", [(2, 3, 2), (2, 16, 16, 16, 2), (30, 40, 3)], ids=["one-hidden", "fused", "blas"])
def test_minibatches_use_batch_sized_buffers_and_leave_the_data_alone(sizes):
    net = Network(sizes, "relu", "softmax")
    n = 4000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    X0, T0 = X.copy(), T.copy()
    params = [(rng.normal(size=s) / np.sqrt(s[0]), np.zeros(s[1])) for s in net.layer_shapes()]
    backend = NumbaBackend()
    state = fresh_state(backend, net, params, Adam())
    data = backend.prepare_data(net, X, T)
    _, batches = interval(n, 32, 1)
    loss = backend.train_and_loss(net, state, data, Objective(), Adam(), np.full(batches.updates, 1e-3), batches)
    plan = state.scratch["numba_plan"][1]
    widest = max(sizes) + 16  # padding of the one-hidden-layer kernel's batch buffers
    for name in ("acts", "deltas", "bx", "bxt", "bt", "btt"):
        assert getattr(plan, name).size <= 32 * widest * len(sizes), name
    XT, TT = plan.feature_major(data)
    assert XT.size <= 32 * widest and TT.size <= 32 * widest  # no feature-major copy of the data
    assert np.array_equal(X, X0) and np.array_equal(T, T0)
    # the loss covers all N samples: the NumPy backend's objective at the same parameters
    want = NumpyBackend().objective_value(net, state.params, NumpyBackend().prepare_data(net, X, T), Objective())
    assert loss == pytest.approx(want, rel=1e-12)


def test_a_loss_alone_with_the_fits_batches_needs_no_second_plan():
    """A fit's starting loss comes with its (empty) batches, so it builds the minibatch plan the
    fit goes on with instead of full-sized buffers; a later loss alone reuses whatever plan is there."""
    net = NETS["relu3"]
    X, T, params = moons_problem(net, n=1000)
    backend = NumbaBackend()
    state = fresh_state(backend, net, params, Adam())
    data = backend.prepare_data(net, X, T)
    stream = BatchStream(np.random.default_rng(0), 1000, 32, True)
    first = backend.train_and_loss(net, state, data, Objective(), Adam(), np.empty(0), stream.take(0))
    plan = state.scratch["numba_plan"][1]
    assert plan.batched and plan.rows == 32
    backend.train_and_loss(net, state, data, Objective(), Adam(), np.full(3, 1e-3), stream.take(3))
    assert state.scratch["numba_plan"][1] is plan
    again = backend.train_and_loss(net, state, data, Objective(), Adam(), np.empty(0), None)
    assert state.scratch["numba_plan"][1] is plan
    want = NumpyBackend().objective_value(net, state.params, NumpyBackend().prepare_data(net, X, T), Objective())
    assert again == pytest.approx(want, rel=1e-12) and first != again


# ------------------------------------------------------------ what compiles
def test_compiles_is_an_exact_class_table():
    class TweakedAdam(Adam):
        """A subclass may change the math: it must not run as Adam."""

    backend = NumbaBackend()
    for optimizer in (SGD(0.1), SGD(0.1, momentum=0.9), Adam(), AdamW(), RMSprop()):
        assert backend.compiles(optimizer)
    assert not backend.compiles(TweakedAdam())
    with pytest.raises(ValueError, match="no compiled update"):
        cpu_update.family(TweakedAdam())


def test_an_optimizer_without_a_compiled_step_runs_the_reference_loop():
    class TweakedAdam(Adam):
        def update(self, xp, param, grad, state, step, lr):
            super().update(xp, param, grad, state, step, 2 * lr)

    net = NETS["tutorial003"]
    X, T, params = moons_problem(net)
    _, batches = interval(X.shape[0], 32, 2)
    lrs = np.full(batches.updates, 0.01)
    got, _, _ = train(NumbaBackend(), net, X, T, params, TweakedAdam(0.01), lrs, batches)
    want, _, _ = train(NumpyBackend(), net, X, T, params, TweakedAdam(0.01), lrs, batches)
    plain, _, _ = train(NumpyBackend(), net, X, T, params, Adam(0.01), lrs, batches)
    assert params_error(got, want) == 0.0 and params_error(got, plain) > 1e-3


def test_the_step_scalars_fit_the_backends_buffer():
    from nnx.backends.numba_backend import N_COEF

    assert N_COEF == cpu_update.N_COEF
    assert cpu_update.N_SETTINGS == len(cpu_update.settings(Adam()))


def test_losses_of_batches_and_full_data_agree_at_the_same_parameters():
    """The interval's loss is over every sample, however the updates were batched."""
    net = NETS["relu3"]
    X, T, params = moons_problem(net, n=1000)
    backend = NumbaBackend()
    for rows in (None, 32, 999):
        state = fresh_state(backend, net, params, SGD(0.1))
        batches = None if rows is None else Batches(np.empty(0, np.int64), np.zeros(1, np.int64), rows)
        loss = backend.train_and_loss(net, state, backend.prepare_data(net, X, T), Objective("sum", 0.01), SGD(0.1),
                                      np.empty(0), batches)
        want = NumpyBackend().objective_value(net, params, NumpyBackend().prepare_data(net, X, T),
                                              Objective("sum", 0.01))
        assert scaled_error(loss, want) <= 1e-12
