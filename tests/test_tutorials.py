"""The seed tutorials, reproduced through nnx's public API.

Every figure here is compared with ``nnx.bench.tutorial_code``: the tutorials'
algorithms as plain NumPy, the same operations in the same order. The reference
data is made the tutorials' way (scikit-learn's ``make_moons``, a literal XOR
table); nnx gets its own (``nnx.datasets``), so the whole public path is tested.

How closely each tutorial can be reproduced (the core issue):

* 003 (two moons, tanh, softmax, summed gradients, L2): parameters after 1 and
  1,000 passes to 1e-12; the whole 20,000 passes to 1e-10 for H in {1, 5, 20, 50}.
  H=3 settles into a period-2 oscillation from about pass 1,100 whose phase any
  rounding difference can flip, so its long run is checked phase-agnostically.
  H=2 and H=4 are chaotic (rounding differences grow to order one after ~300 and
  ~1,000 passes): parameters before that, statistics of the attractor after.
* 001 (XOR 2-2-1, sigmoid/sigmoid, summed ``+=`` updates) and 002 (the same with
  4 hidden units): parameters and outputs to 1e-10.
* 000 (ReLU hidden, softmax output, clipped loss): forward pass and loss at given
  parameters to 1e-12.

Tolerances are relative to each array's largest magnitude: ``max|a-b| <= tol*max|b|``.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

import nnx
from nnx.bench import tutorial_code as tut
from nnx.bench.tutorial_code import _moons_loss
from nnx.metrics import clipped_cross_entropy

LR, L2 = 0.01, 0.01          # tutorial 003's epsilon and reg_lambda
OTHER_BACKEND_TOL = 1e-10    # design notes: other backends, float64, 1,000 passes


# ------------------------------------------------------------------- helpers
@pytest.fixture
def on_numpy():
    """These tests pin the NumPy backend; parity of other backends is below."""
    with nnx.use_backend("numpy") as backend:
        yield backend


@pytest.fixture(scope="module")
def tutorial_moons():
    """Tutorial 003's data as the tutorial makes it (scikit-learn) for the reference."""
    return make_moons(200, noise=0.20, random_state=0)


@pytest.fixture(scope="module")
def nnx_moons():
    """The same data through nnx's public API (equal to the above: test_datasets.py)."""
    return nnx.datasets.moons(200, 0.2, 0)


XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
XOR_T = np.array([[0, 1, 1, 0]]).T


def assert_close(actual, reference, tol, what):
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert actual.shape == reference.shape, f"{what}: shape {actual.shape} != {reference.shape}"
    scale = float(np.max(np.abs(reference)))
    err = float(np.max(np.abs(actual - reference)))
    assert err <= tol * scale, (f"{what}: max|diff| {err:.3g} > {tol:g} * max|ref| {scale:.3g} "
                                f"(relative {err / scale if scale else float('inf'):.3g})")


def assert_params_close(model, ref, tol, what):
    """``model.params`` against a reference dict with the tutorials' (1, fan_out) biases."""
    (W1, b1), (W2, b2) = model.params
    for name, got in (("W1", W1), ("b1", b1), ("W2", W2), ("b2", b2)):
        want = ref[name]
        if name.startswith("b"):
            assert want.shape == (1, got.shape[0])
            want = want[0]
        assert_close(got, want, tol, f"{what}: {name}")


def assert_loss_close(got, want, tol, what):
    assert abs(got - want) <= tol * abs(want), f"{what}: {got!r} vs {want!r} (relative {abs(got - want) / abs(want):.3g})"


def fit_moons(model, X, y, passes, log_every):
    return model.fit(X, y, passes=passes, lr=LR, l2=L2, reduction="sum", log_every=log_every)


def moons_model(hidden, dtype="float64"):
    return nnx.MLP([2, hidden, 2], hidden="tanh", output="softmax", init="normal_fan_in", seed=0, dtype=dtype)


def tanh_softmax_accuracy(X, y, ref):
    """Accuracy of reference parameters (argmax of the logits, as the tutorial's predict)."""
    logits = np.tanh(X.dot(ref["W1"]) + ref["b1"]).dot(ref["W2"]) + ref["b2"]
    return float(np.mean(np.argmax(logits, axis=1) == y))


def xor_model(hidden, seed):
    return nnx.MLP([2, hidden, 1], hidden="sigmoid", output="sigmoid", init="uniform", seed=seed)


def fit_xor(model, passes):
    X, y = nnx.datasets.xor()
    return model.fit(X, y, passes=passes, lr=1.0, reduction="sum", log_every=5000)


# ---------------------------------------------------------- initial draws
@pytest.mark.parametrize("sizes", [(2, 3, 2), (2, 50, 2), (4, 7, 3)])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_initial_params_are_tutorial_003s_draw(on_numpy, sizes, seed):
    n_in, hidden, n_out = sizes
    ref = tut.moons_initial_params(n_in, hidden, n_out, seed=seed)
    (W1, b1), (W2, b2) = nnx.MLP(list(sizes), seed=seed).params
    for got, want in ((W1, ref["W1"]), (b1, ref["b1"][0]), (W2, ref["W2"]), (b2, ref["b2"][0])):
        assert got.dtype == np.float64
        assert np.array_equal(got, want)


def test_float32_model_starts_from_the_same_draw_cast_to_float32(on_numpy):
    ref = tut.moons_initial_params(2, 3, 2, seed=0, dtype=np.float32)
    (W1, b1), (W2, b2) = nnx.MLP([2, 3, 2], seed=0, dtype="float32").params
    for got, want, want64 in ((W1, ref["W1"], tut.moons_initial_params(2, 3, 2)["W1"]),
                              (W2, ref["W2"], tut.moons_initial_params(2, 3, 2)["W2"])):
        assert got.dtype == np.float32 and want.dtype == np.float32
        assert np.array_equal(got, want)
        assert np.array_equal(got, want64.astype(np.float32))
    assert b1.dtype == b2.dtype == np.float32 and not b1.any() and not b2.any()


@pytest.mark.parametrize("seed", [0, 5])
def test_initial_params_of_tutorials_000_and_001(on_numpy, seed):
    # Tutorial 000: W1 = randn(in, H) * 0.01, W2 = randn(H, out) * 0.01, zero biases.
    rs = np.random.RandomState(seed)
    W1_000 = rs.randn(4, 6) * 0.01
    W2_000 = rs.randn(6, 3) * 0.01
    (W1, b1), (W2, b2) = nnx.MLP([4, 6, 3], hidden="relu", init="normal_001", seed=seed).params
    assert np.array_equal(W1, W1_000) and np.array_equal(W2, W2_000)
    assert not b1.any() and not b2.any()
    # Tutorial 001: rand draws W1, b1, W2, b2 in that order (zero epochs = the draw).
    ref = tut.xor_tutorial(XOR_X, XOR_T, hidden=2, epochs=0, seed=seed)
    (W1, b1), (W2, b2) = xor_model(2, seed).params
    assert np.array_equal(W1, ref["W1"]) and np.array_equal(b1, ref["b1"][0])
    assert np.array_equal(W2, ref["W2"]) and np.array_equal(b2, ref["b2"][0])


# ------------------------------------------------------ tutorial 003: moons
def check_moons_h3_1000_passes(X_nnx, y_nnx, X, y, tol):
    """H=3: after 1 pass and after 1,000, parameters and every logged loss."""
    model = moons_model(3)
    fit_moons(model, X_nnx, y_nnx, passes=1, log_every=1)
    assert_params_close(model, tut.moons_tutorial(X, y, 3, 1, lr=LR, l2=L2), tol, "after 1 pass")

    fit_moons(model, X_nnx, y_nnx, passes=999, log_every=100)
    ref = tut.moons_tutorial(X, y, 3, 1000, lr=LR, l2=L2, log_every=1)
    assert model.updates == 1000
    assert_params_close(model, ref, tol, "after 1,000 passes")

    # history: 0 and 1 from the first fit, then at least every 100 passes up to 1,000
    # (the reference logged every pass, so any logging points can be checked).
    logged = sorted(model.history)
    assert {0, 1, 1000} <= set(logged) and set(logged) <= set(range(1001))
    assert len(logged) >= 12 and max(np.diff(logged)) <= 100, logged
    start = tut.moons_initial_params(2, 3, 2)
    assert_loss_close(model.history[0], _moons_loss(X, y, **start, l2=L2), tol, "history[0]")
    for updates, loss in model.history.items():
        if updates:
            assert_loss_close(loss, ref["losses"][updates], tol, f"history[{updates}]")
    # model.loss is the mean data loss without the L2 term.
    ref_params = {k: ref[k] for k in ("W1", "b1", "W2", "b2")}
    assert_loss_close(model.loss(X_nnx, y_nnx), _moons_loss(X, y, **ref_params, l2=0.0), tol, "loss()")
    assert model.accuracy(X_nnx, y_nnx) == tanh_softmax_accuracy(X, y, ref)


def test_moons_h3_first_pass_and_1000_passes(on_numpy, nnx_moons, tutorial_moons):
    check_moons_h3_1000_passes(*nnx_moons, *tutorial_moons, tol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [1, 5, 20, 50])
def test_moons_whole_20000_passes_where_stable(on_numpy, nnx_moons, tutorial_moons, hidden):
    """Tutorial 003's full run for the widths whose dynamics are stable: 1e-10 throughout."""
    X, y = tutorial_moons
    model = fit_moons(moons_model(hidden), *nnx_moons, passes=20000, log_every=1000)
    ref = tut.moons_tutorial(X, y, hidden, 20000, lr=LR, l2=L2, log_every=1000)
    assert_params_close(model, ref, 1e-10, f"H={hidden} after 20,000 passes")
    assert sorted(model.history) == list(range(0, 20001, 1000))
    for updates, loss in ref["losses"].items():
        assert_loss_close(model.history[updates], loss, 1e-10, f"H={hidden} history[{updates}]")
    assert model.accuracy(*nnx_moons) == tanh_softmax_accuracy(X, y, ref)


@pytest.mark.slow
def test_moons_h3_20000_passes_end_in_either_phase_of_the_oscillation(on_numpy, nnx_moons, tutorial_moons):
    """The tutorial's headline run. From ~pass 1,100 the loss alternates between two
    values; rounding decides the phase, so the end must match one of the two."""
    X, y = tutorial_moons
    ref_odd = tut.moons_tutorial(X, y, 3, 19999, lr=LR, l2=L2, log_every=19999)
    ref_even = tut.moons_tutorial(X, y, 3, 1, lr=LR, l2=L2, log_every=1, params=ref_odd)
    phases = [ref_odd["losses"][19999], ref_even["losses"][1]]
    # Sanity bound on the reference itself: the two phases the tutorial's run shows, in
    # whichever order this CPU's rounding puts them.
    assert np.allclose(sorted(phases), [0.0707579, 0.0713158], rtol=0, atol=1e-6), phases

    model = fit_moons(moons_model(3), *nnx_moons, passes=20000, log_every=1000)
    final = model.history[20000]
    phase = int(np.argmin([abs(final - p) for p in phases]))
    assert abs(final - phases[phase]) <= 1e-6, (final, phases)
    accuracies = [tanh_softmax_accuracy(X, y, r) for r in (ref_odd, ref_even)]
    assert model.accuracy(*nnx_moons) == accuracies[phase]


def attractor_statistics(model_or_ref, advance, accuracy, window_chunks=50, chunk=100):
    """Accuracy every ``chunk`` passes and the loss every 10 over ``window_chunks`` chunks."""
    accuracies, losses = [], []
    for _ in range(window_chunks):
        model_or_ref, chunk_losses = advance(model_or_ref, chunk)
        accuracies.append(accuracy(model_or_ref))
        losses.extend(chunk_losses)
    return np.array(accuracies), np.array(losses)


@pytest.mark.slow
@pytest.mark.parametrize("hidden, exact_until", [(2, 200), (4, 800)])
def test_moons_chaotic_widths(on_numpy, nnx_moons, tutorial_moons, hidden, exact_until):
    """H=2 and H=4: rounding differences grow to order one after ~300 / ~1,000 passes
    (different BLAS paths give different endings too), so the parameters are compared
    before that and the last 5,000 of 20,000 passes by the statistics of the attractor:
    median accuracy (sampled every 100 passes) within one sample in 200, median loss
    (sampled every 10) within 2%, and the loss floor within 3%."""
    X, y = tutorial_moons
    ref = tut.moons_tutorial(X, y, hidden, exact_until, lr=LR, l2=L2)
    model = fit_moons(moons_model(hidden), *nnx_moons, passes=exact_until, log_every=exact_until)
    assert_params_close(model, ref, 1e-12, f"H={hidden} after {exact_until} passes")

    ref = tut.moons_tutorial(X, y, hidden, 15000 - exact_until, lr=LR, l2=L2, params=ref)
    fit_moons(model, *nnx_moons, passes=15000 - exact_until, log_every=15000)

    def advance_ref(r, n):
        r = tut.moons_tutorial(X, y, hidden, n, lr=LR, l2=L2, log_every=10, params=r)
        return r, list(r["losses"].values())

    def advance_model(m, n):
        before = set(m.history)
        fit_moons(m, *nnx_moons, passes=n, log_every=10)
        return m, [m.history[k] for k in sorted(set(m.history) - before)]

    ref_acc, ref_loss = attractor_statistics(ref, advance_ref, lambda r: tanh_softmax_accuracy(X, y, r))
    got_acc, got_loss = attractor_statistics(model, advance_model, lambda m: m.accuracy(*nnx_moons))
    assert model.updates == 20000 and len(got_loss) == len(ref_loss) == 500
    assert abs(np.median(got_acc) - np.median(ref_acc)) <= 0.005 + 1e-12, (np.median(got_acc), np.median(ref_acc))
    assert_loss_close(float(np.median(got_loss)), float(np.median(ref_loss)), 0.02, f"H={hidden} median loss")
    assert_loss_close(float(got_loss.min()), float(ref_loss.min()), 0.03, f"H={hidden} loss floor")


def test_moons_float32_within_stated_tolerance(on_numpy, nnx_moons, tutorial_moons):
    """float32: 1,000 passes within 2e-5 of the tutorial code run in float32 and of float64."""
    X, y = tutorial_moons
    model = fit_moons(moons_model(3, dtype="float32"), *nnx_moons, passes=1000, log_every=1000)
    assert all(W.dtype == b.dtype == np.float32 for W, b in model.params)
    assert_params_close(model, tut.moons_tutorial(X, y, 3, 1000, lr=LR, l2=L2, dtype=np.float32), 2e-5, "vs float32")
    assert_params_close(model, tut.moons_tutorial(X, y, 3, 1000, lr=LR, l2=L2), 2e-5, "vs float64")


# ------------------------------------------------------ tutorials 001 / 002: XOR
def check_xor(hidden, seed, tol):
    """5,000 then 10,000 epochs: parameters, outputs and the logged squared error."""
    X, _ = nnx.datasets.xor()
    model = xor_model(hidden, seed)
    for epochs in (5000, 10000):
        fit_xor(model, epochs - model.updates)
        ref = tut.xor_tutorial(XOR_X, XOR_T, hidden=hidden, epochs=epochs, seed=seed)
        assert_params_close(model, ref, tol, f"XOR H={hidden} seed={seed} after {epochs} epochs")
        assert_close(model.predict_proba(X), ref["output"], tol, f"XOR outputs after {epochs} epochs")
        # The logged figure is (1/2 * sum (y - t)^2) / N.
        sse = 0.5 * float(np.sum((ref["output"] - XOR_T) ** 2)) / len(XOR_T)
        assert_loss_close(model.history[epochs], sse, tol, f"XOR history[{epochs}]")
    assert np.array_equal(model.predict(X), (ref["output"][:, 0] >= 0.5).astype(int))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_tutorial_001(on_numpy, seed):
    """Tutorial 001: XOR on a 2-2-1 sigmoid network, rand init, summed updates at lr 1."""
    check_xor(2, seed, tol=1e-10)


@pytest.mark.parametrize("seed", [0, 3])
def test_xor_tutorial_002_four_hidden_units(on_numpy, seed):
    """Tutorial 002 has no code of its own: it is tutorial 001's algorithm with 4 hidden units."""
    check_xor(4, seed, tol=1e-10)


# ------------------------------------------- tutorial 000: ReLU + softmax
@pytest.mark.parametrize("logit_scale", [1.0, 1e3])
def test_relu_softmax_tutorial_000_forward_and_clipped_loss(on_numpy, logit_scale):
    """Tutorial 000's forward pass and ``-mean(onehot * log(p + 1e-8))`` at given
    parameters (biases in the tutorial's (1, fan_out) shape); the large scale drives
    logits to ~1e3, where only the max-subtracted softmax stays finite."""
    rs = np.random.RandomState(7)
    X = rs.randn(40, 4)
    labels = rs.randint(0, 3, size=40)
    onehot = np.eye(3)[labels]
    W1, b1 = rs.randn(4, 6), rs.randn(1, 6) * 0.5
    W2, b2 = rs.randn(6, 3) * logit_scale, rs.randn(1, 3) * logit_scale
    assert (X.dot(W1) + b1 < 0).any() and (X.dot(W1) + b1 > 0).any()  # both ReLU branches

    model = nnx.MLP([4, 6, 3], hidden="relu", output="softmax", init="normal_001")
    model.set_params([(W1, b1), (W2, b2)])
    probs = model.predict_proba(X)
    ref_probs = tut.relu_softmax_forward(X, W1, b1, W2, b2)
    assert_close(probs, ref_probs, 1e-12, "tutorial 000 probabilities")
    assert np.array_equal(model.predict(X), np.argmax(ref_probs, axis=1))

    ref_loss = tut.relu_softmax_loss(ref_probs, onehot)
    assert_loss_close(clipped_cross_entropy(probs, labels), ref_loss, 1e-12, "clipped loss (labels)")
    assert_loss_close(clipped_cross_entropy(probs, onehot), ref_loss, 1e-12, "clipped loss (one-hot)")


# ------------------------------------------------- every backend vs the tutorials
def test_moons_h3_1000_passes_on_every_backend(backend, nnx_moons, tutorial_moons):
    """Design notes: float64, 1,000 passes to 1e-10 on every backend (NumPy: 1e-12)."""
    tol = 1e-12 if backend.name == "numpy" else OTHER_BACKEND_TOL
    check_moons_h3_1000_passes(*nnx_moons, *tutorial_moons, tol=tol)


def test_xor_on_every_backend(backend):
    tol = 1e-12 if backend.name == "numpy" else OTHER_BACKEND_TOL
    check_xor(2, 0, tol=tol)
