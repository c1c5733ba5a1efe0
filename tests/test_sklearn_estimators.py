"""nnx.sklearn's estimators as a scikit-learn user drives them: labels, attributes, training math,
partial_fit, warm_start, parameter checks, the fit transaction, and backend parity.

The training math is checked against full-batch gradient descent written here in NumPy float64
(Glorot's uniform initialisation, tanh, softmax cross-entropy or half squared error, mean over
samples, L2 on the weights), never against nnx's own code path.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import make_blobs  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

import nnx  # noqa: E402
from nnx.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

from tolerances import params_error, scaled_error  # noqa: E402

# Plain full-batch gradient descent for a fixed number of epochs, on NumPy: the tutorials' loop, checkable
# against the reference below. (The defaults are scikit-learn's: Adam on minibatches of 200, stopping when
# the training loss stops improving.)
FAST = dict(activation="tanh", optimizer="sgd", batch_size="full", tol=None, backend="numpy", random_state=0)


def moons(n=120, seed=0):
    return nnx.datasets.moons(n, noise=0.2, seed=seed)


# ---------------------------------------------------------------------------------------- the reference
def glorot(layer_sizes, seed):
    """Glorot-uniform weights and zero biases drawn layer by layer from RandomState(seed)."""
    rs = np.random.RandomState(seed)
    params = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        params.append([rs.uniform(-limit, limit, size=(fan_in, fan_out)), np.zeros(fan_out)])
    return params


def forward(params, X):
    acts = [X]
    for i, (W, b) in enumerate(params):
        z = acts[-1] @ W + b
        acts.append(np.tanh(z) if i < len(params) - 1 else z)
    return acts


def data_loss_sum(z, T, head):
    if head == "softmax":
        z = z - z.max(axis=1, keepdims=True)
        return -(T * (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))).sum()
    return 0.5 * ((z - T) ** 2).sum()


def logged_loss(params, X, T, l2, head):
    """(summed data loss + l2/2 sum W^2) / N over the whole set: tutorial 003's figure, nnx's history."""
    penalty = l2 / 2 * sum((W ** 2).sum() for W, _ in params)
    return (data_loss_sum(forward(params, X)[-1], T, head) + penalty) / X.shape[0]


def gradients(params, X, T, l2, head):
    """Gradients of the batch's mean loss + l2/2 sum W^2 (tanh hidden layers), layer by layer."""
    acts = forward(params, X)
    z = acts[-1]
    if head == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        out = e / e.sum(axis=1, keepdims=True)
    else:
        out = z
    delta = (out - T) / X.shape[0]
    grads = []
    for i in reversed(range(len(params))):
        W, _ = params[i]
        grads.append((acts[i].T @ delta + l2 * W, delta.sum(axis=0)))
        if i:
            delta = (delta @ W.T) * (1 - acts[i] ** 2)
    return grads[::-1]


def reference_gd(X, T, params, *, lr, l2, epochs, head):
    """Full-batch gradient descent; the parameters and the logged loss after each epoch."""
    params = copy.deepcopy(params)
    losses = []
    for _ in range(epochs):
        for (W, b), (dW, db) in zip(params, gradients(params, X, T, l2, head)):
            W -= lr * dW
            b -= lr * db
        losses.append(logged_loss(params, X, T, l2, head))
    return params, losses


def reference_adam(X, T, params, *, lr, l2, epochs, batch, seed, head, betas=(0.9, 0.999), eps=1e-8):
    """PyTorch's Adam on minibatches: each epoch visits the samples in the order of
    ``Generator(PCG64(seed)).permutation(N)`` (the model's own generator), in batches of ``batch``."""
    params = copy.deepcopy(params)
    rng = np.random.Generator(np.random.PCG64(seed))
    b1, b2 = betas
    moments = [[(np.zeros_like(W), np.zeros_like(b)) for W, b in params] for _ in range(2)]
    step, losses = 0, []
    for _ in range(epochs):
        order = rng.permutation(X.shape[0])
        for start in range(0, X.shape[0], batch):
            rows = order[start:start + batch]
            step += 1
            for layer, grads in enumerate(gradients(params, X[rows], T[rows], l2, head)):
                for k, g in enumerate(grads):
                    m, v = moments[0][layer][k], moments[1][layer][k]
                    m *= b1
                    m += (1 - b1) * g
                    v *= b2
                    v += (1 - b2) * g * g
                    denom = np.sqrt(v) / np.sqrt(1 - b2 ** step) + eps
                    params[layer][k] -= lr / (1 - b1 ** step) * (m / denom)
        losses.append(logged_loss(params, X, T, l2, head))
    return params, losses


# ---------------------------------------------------------------------------------------- training math
def test_classifier_trains_as_full_batch_gradient_descent():
    X, y = moons()
    clf = MLPClassifier((5,), learning_rate=0.3, l2=0.01, max_epochs=40, init="glorot", **FAST).fit(X, y)
    T = np.eye(2)[y]
    want, losses = reference_gd(X, T, glorot([2, 5, 2], 0), lr=0.3, l2=0.01, epochs=40, head="softmax")
    assert params_error(list(zip(clf.coefs_, clf.intercepts_)), want) < 1e-12
    assert scaled_error(clf.loss_curve_, losses) < 1e-12
    assert clf.n_iter_ == 40 and len(clf.loss_curve_) == 40
    assert clf.best_loss_ == min(clf.loss_curve_)
    # predict_proba is the softmax of the reference network's logits
    logits = forward(want, X)[-1]
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    assert scaled_error(clf.predict_proba(X), proba) < 1e-12
    assert np.array_equal(clf.predict(X), proba.argmax(axis=1))


def test_regressor_trains_as_full_batch_gradient_descent():
    X, _ = moons()
    y = np.column_stack([np.sin(X[:, 0]), X[:, 1] ** 2])
    reg = MLPRegressor((4, 3), learning_rate=0.1, max_epochs=25, init="glorot", **FAST).fit(X, y)
    want, losses = reference_gd(X, y, glorot([2, 4, 3, 2], 0), lr=0.1, l2=0.0, epochs=25, head="identity")
    assert params_error(list(zip(reg.coefs_, reg.intercepts_)), want) < 1e-12
    assert scaled_error(reg.loss_curve_, losses) < 1e-12
    assert reg.predict(X).shape == (len(X), 2) and reg.n_outputs_ == 2 and reg.n_layers_ == 4


def test_adam_on_minibatches_follows_pytorchs_adam_in_the_models_batch_order():
    X, y = moons(110)
    T = np.eye(2)[y]
    clf = MLPClassifier((6,), optimizer="adam", learning_rate=0.01, l2=0.001, batch_size=40, max_epochs=4,
                        init="glorot", tol=None, activation="tanh", backend="numpy", random_state=3).fit(X, y)
    want, losses = reference_adam(X, T, glorot([2, 6, 2], 3), lr=0.01, l2=0.001, epochs=4, batch=40, seed=3,
                                  head="softmax")
    assert params_error(clf.model_.params, want) < 1e-12
    assert scaled_error(clf.loss_curve_, losses) < 1e-12
    assert clf.n_iter_ == 4 and clf.model_.updates == 4 * 3  # ceil(110 / 40) updates per epoch


def test_log_every_records_the_loss_every_k_epochs_and_the_last():
    X, y = moons()
    clf = MLPClassifier((5,), learning_rate=0.3, max_epochs=10, log_every=4, init="glorot", **FAST).fit(X, y)
    _, losses = reference_gd(X, np.eye(2)[y], glorot([2, 5, 2], 0), lr=0.3, l2=0.0, epochs=10, head="softmax")
    assert scaled_error(clf.loss_curve_, [losses[3], losses[7], losses[9]]) < 1e-12
    assert clf.n_iter_ == 10 and sorted(clf.model_.history) == [0, 4, 8, 10]
    every = MLPClassifier((5,), learning_rate=0.3, max_epochs=10, init="glorot", **FAST).fit(X, y)
    assert params_error(clf.model_.params, every.model_.params) == 0
    # stopping rules run at logging points: n_iter_no_change=5 epochs is 2 intervals of 3
    stop = MLPClassifier((5,), learning_rate=0.3, max_epochs=3000, log_every=3, n_iter_no_change=5,
                         **{**FAST, "tol": 1e-3}).fit(X, y)
    curve = [stop.model_.history[0]] + stop.loss_curve_
    best, waited = np.inf, 0
    for point, loss in enumerate(curve):
        best, waited = (loss, 0) if loss < best - 1e-3 else (best, waited + 1)
        if waited == 2:
            break
    assert stop.n_iter_ == 3 * point < 3000


def test_default_batch_size_is_200_and_a_larger_batch_is_full_batch():
    X, y = moons(260)
    T = np.eye(2)[y]
    auto = MLPClassifier((4,), optimizer="adam", learning_rate=0.01, max_epochs=2, init="glorot", tol=None,
                         activation="tanh", backend="numpy", random_state=1).fit(X, y)
    want, _ = reference_adam(X, T, glorot([2, 4, 2], 1), lr=0.01, l2=0.0, epochs=2, batch=200, seed=1,
                             head="softmax")
    assert params_error(auto.model_.params, want) < 1e-12 and auto.model_.updates == 4
    full = MLPClassifier((4,), max_epochs=3, **FAST).fit(X, y)
    larger = MLPClassifier((4,), max_epochs=3, **{**FAST, "batch_size": 10_000}).fit(X, y)
    assert params_error(larger.model_.params, full.model_.params) == 0 and larger.model_.updates == 3


def test_regressor_single_target_predicts_1d_and_scores_r2():
    X, _ = moons()
    y = 0.5 * X[:, 0] - X[:, 1]
    reg = MLPRegressor((8,), learning_rate=0.2, max_epochs=300, **FAST).fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == (len(X),)
    r2 = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert reg.score(X, y) == pytest.approx(r2, rel=1e-12)
    assert r2 > 0.95


# ---------------------------------------------------------------------------------------- stopping
def test_early_stopping_holds_out_a_validation_set_and_keeps_the_best_epoch():
    X, y = moons(160, seed=2)
    settings = dict(hidden_layer_sizes=(40,), activation="tanh", optimizer="adam", learning_rate=0.05,
                    batch_size="full", early_stopping=True, validation_fraction=0.25, n_iter_no_change=5, tol=0.0,
                    backend="numpy", random_state=0)
    stopped = MLPClassifier(max_epochs=500, **settings).fit(X, y)
    curve = stopped.validation_loss_curve_
    best = int(np.argmin(curve))
    assert stopped.n_iter_ < 500 and len(curve) == len(stopped.loss_curve_) == stopped.n_iter_
    assert stopped.n_iter_ == best + 1 + 5  # patience epochs after the best one
    assert stopped.best_validation_loss_ == curve[best]
    assert stopped.model_.updates == stopped.n_iter_  # one full-batch update per epoch, on 120 samples
    # The network kept is the best epoch's: the same fit cut off there by max_epochs has the same parameters.
    with pytest.warns(ConvergenceWarning, match="held-out loss was still improving"):
        cut = MLPClassifier(max_epochs=best + 1, **{**settings, "n_iter_no_change": 1000}).fit(X, y)
    assert params_error(stopped.model_.params, cut.model_.params) == 0
    assert cut.validation_loss_curve_ == curve[:best + 1]


def test_training_loss_rule_stops_when_the_loss_stops_improving_by_tol():
    X, y = moons(100)
    clf = MLPClassifier((8,), learning_rate=0.5, max_epochs=5000, **{**FAST, "tol": 1e-3}, n_iter_no_change=4)
    curve = clf.fit(X, y).loss_curve_
    assert len(curve) == clf.n_iter_ < 5000
    # The rule, replayed: stop after 4 epochs in a row without beating the best loss so far (the loss
    # before training included) by more than tol.
    best, waited = np.inf, 0
    for epoch, loss in enumerate([clf.model_.history[0]] + curve):
        if loss < best - 1e-3:
            best, waited = loss, 0
        else:
            waited += 1
        if waited == 4:
            break
    assert epoch == clf.n_iter_
    assert not hasattr(clf, "validation_loss_curve_")


def test_convergence_warning_only_when_a_rule_was_active_and_did_not_fire():
    X, y = moons(60)
    with pytest.warns(ConvergenceWarning, match="ran all max_epochs=3 epochs"):
        MLPClassifier((4,), max_epochs=3, **{**FAST, "tol": 1e-4}).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        MLPClassifier((4,), max_epochs=3, **FAST).fit(X, y)  # tol=None: no rule, no warning
        MLPClassifier((4,), **{**FAST, "tol": 1e-4}).partial_fit(X, y, classes=[0, 1])


def test_early_stopping_needs_two_samples():
    with pytest.raises(ValueError, match="needs at least 2 samples"):
        MLPRegressor(early_stopping=True, **FAST).fit(np.zeros((1, 2)), np.zeros(1))


# ---------------------------------------------------------------------------------------- labels
@pytest.mark.parametrize("labels", [
    np.array(["no", "yes"]), np.array([False, True]), np.array([-3, 10]), np.array([1.0, 3.0]),
    np.array(["cat", "dog", "emu"], dtype=object), np.array([2, 7, 40]),
], ids=["str", "bool", "int-gaps", "float", "object-str", "3-int-gaps"])
def test_classes_of_any_label_type(labels):
    X, blob = make_blobs(150, centers=len(labels), n_features=2, cluster_std=0.5, random_state=0)
    y = labels[blob]
    clf = MLPClassifier((8,), learning_rate=0.5, max_epochs=100, **FAST).fit(X, y)
    assert np.array_equal(clf.classes_, np.sort(labels))
    assert clf.classes_.dtype == np.unique(y).dtype
    pred = clf.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= set(labels)
    assert np.mean(pred == y) > 0.95
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(labels))
    assert np.allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    # each column belongs to the class of the same index in classes_
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    assert np.allclose(clf.predict_log_proba(X), np.log(proba))


def test_label_order_does_not_matter_only_the_labels():
    X, blob = make_blobs(90, centers=3, random_state=1)
    as_ids = MLPClassifier((6,), max_epochs=30, **FAST).fit(X, blob)
    as_text = MLPClassifier((6,), max_epochs=30, **FAST).fit(X, np.array(["a", "b", "c"])[blob])
    assert np.array_equal(as_ids.predict_proba(X), as_text.predict_proba(X))


def test_one_class_is_refused_before_training():
    X, _ = moons(20)
    with pytest.raises(ValueError, match="at least 2 classes; got 1 class"):
        MLPClassifier(**FAST).fit(X, np.full(20, "only"))


def test_continuous_labels_are_refused():
    X, _ = moons(20)
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier(**FAST).fit(X, np.linspace(0, 1, 20))


def test_multilabel_indicator_trains_one_sigmoid_per_label():
    X, blob = make_blobs(160, centers=4, cluster_std=0.6, random_state=0)
    Y = np.column_stack([blob % 2, blob // 2, blob == 3]).astype(np.int64)
    clf = MLPClassifier((16,), learning_rate=1.0, max_epochs=400, **FAST).fit(X, Y)
    assert np.array_equal(clf.classes_, [0, 1, 2])
    assert clf.model_.output == "sigmoid"
    proba = clf.predict_proba(X)
    assert proba.shape == (160, 3) and ((proba > 0) & (proba < 1)).all()
    pred = clf.predict(X)
    assert pred.dtype == Y.dtype and np.array_equal(pred, (proba >= 0.5).astype(np.int64))
    assert np.mean(pred == Y) > 0.9


# ---------------------------------------------------------------------------------------- fitted attributes
def test_feature_names_from_a_dataframe():
    pd = pytest.importorskip("pandas")
    X, y = moons(60)
    frame = pd.DataFrame(X, columns=["width", "height"])
    clf = MLPClassifier((4,), max_epochs=5, **FAST).fit(frame, y)
    assert clf.n_features_in_ == 2
    assert list(clf.feature_names_in_) == ["width", "height"]
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        assert np.array_equal(clf.predict(frame), clf.predict(X))
    with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- w"):
        clf.predict(frame.rename(columns={"width": "w"}))
    refit = clf.fit(X, y)
    assert not hasattr(refit, "feature_names_in_")


def test_unfitted_estimator_says_so():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((1, 2)))
    assert not hasattr(MLPClassifier(), "coefs_")


def test_wrong_feature_count_at_predict():
    X, y = moons(40)
    clf = MLPClassifier((4,), max_epochs=3, **FAST).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 2"):
        clf.predict(np.zeros((2, 3)))


# ---------------------------------------------------------------------------------------- partial_fit and warm_start
def test_partial_fit_epochs_equal_one_fit():
    X, y = moons(80)
    labels = np.array(["x", "y"])[y]
    whole = MLPClassifier((5,), max_epochs=6, **FAST).fit(X, labels)
    steps = MLPClassifier((5,), max_epochs=999, **FAST)
    for _ in range(6):
        steps.partial_fit(X, labels, classes=["y", "x"])
    assert steps.n_iter_ == 6
    assert np.array_equal(steps.loss_curve_, whole.loss_curve_)
    assert params_error(steps.model_.params, whole.model_.params) == 0


def test_partial_fit_needs_classes_on_the_first_call_only():
    X, y = moons(40)
    clf = MLPClassifier((4,), **FAST)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    assert not hasattr(clf, "classes_")
    clf.partial_fit(X[:10], y[:10] * 0, classes=[0, 1])  # a first batch may lack a class
    assert np.array_equal(clf.classes_, [0, 1])
    clf.partial_fit(X, y)
    with pytest.raises(ValueError, match="differs from classes_"):
        clf.partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match=r"labels not in classes_ \(5\)"):
        clf.partial_fit(X, np.where(y == 1, 5, 0))
    with pytest.raises(ValueError, match="lists a label more than once"):
        MLPClassifier(**FAST).partial_fit(X, y, classes=[0, 1, 1])


def test_partial_fit_regressor_continues_and_checks_outputs():
    X, _ = moons(50)
    y = X[:, 0]
    reg = MLPRegressor((4,), learning_rate=0.1, **FAST)
    reg.partial_fit(X, y).partial_fit(X, y)
    whole = MLPRegressor((4,), learning_rate=0.1, max_epochs=2, **FAST).fit(X, y)
    assert np.array_equal(reg.loss_curve_, whole.loss_curve_)
    with pytest.raises(ValueError, match="2 target column"):
        reg.partial_fit(X, np.column_stack([y, y]))
    with pytest.raises(ValueError, match="X has 3 features"):
        reg.partial_fit(np.zeros((4, 3)), np.zeros(4))


def test_warm_start_continues_the_fitted_network():
    X, y = moons(80)
    ten = MLPClassifier((5,), max_epochs=10, **FAST).fit(X, y)
    warm = MLPClassifier((5,), max_epochs=4, warm_start=True, **FAST).fit(X, y)
    warm.set_params(max_epochs=6).fit(X, y)
    assert warm.n_iter_ == 10 and np.array_equal(warm.loss_curve_, ten.loss_curve_)
    assert params_error(warm.model_.params, ten.model_.params) == 0
    cold = MLPClassifier((5,), max_epochs=4, **FAST).fit(X, y)
    first = cold.coefs_[0].copy()
    cold.fit(X, y)  # warm_start=False: starts afresh from the same seed
    assert np.array_equal(cold.coefs_[0], first) and cold.n_iter_ == 4


def test_warm_start_refuses_a_changed_network():
    X, y = moons(40)
    clf = MLPClassifier((5,), max_epochs=2, warm_start=True, **FAST).fit(X, y)
    before = clf.coefs_
    with pytest.raises(ValueError, match="cannot continue training"):
        clf.set_params(hidden_layer_sizes=(6,)).fit(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(clf.coefs_, before))
    with pytest.raises(ValueError, match="labels not in classes_"):
        clf.set_params(hidden_layer_sizes=(5,)).fit(X, y + 1)


# ---------------------------------------------------------------------------------------- the fit transaction
def test_divergence_leaves_the_estimator_as_it_was():
    X, _ = moons(40)
    y = X[:, 0]
    reg = MLPRegressor((5,), max_epochs=3, learning_rate=0.1, **FAST).fit(X, y)
    before = {k: copy.deepcopy(v) for k, v in vars(reg).items()}
    with pytest.raises(nnx.NonFiniteLossError, match="in epoch [0-9]+: training diverged.*estimator was left as it"):
        reg.set_params(learning_rate=10.0, warm_start=True, max_epochs=200).fit(X, 1e6 * y)
    assert set(vars(reg)) == set(before)
    assert reg.learning_rate == 10.0  # set_params is the caller's change, not the fit's
    assert params_error(reg.model_.params, before["model_"].params) == 0
    assert reg.model_.updates == before["model_"].updates and reg.model_.history == before["model_"].history
    assert reg.loss_curve_ == before["loss_curve_"] and reg.n_iter_ == before["n_iter_"]


def test_bad_data_is_refused_with_scikit_learns_messages():
    X, y = moons(20)
    X_nan = X.copy()
    X_nan[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        MLPClassifier(**FAST).fit(X_nan, y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        MLPClassifier(**FAST).fit(X, None)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        MLPClassifier(**FAST).fit(X, y[:-1])


# ---------------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("name, value, message", [
    ("hidden_layer_sizes", (10, 0), "hidden_layer_sizes must be a positive integer or a tuple"),
    ("hidden_layer_sizes", "10", "hidden_layer_sizes must be"),
    ("activation", "tanhh", "Unknown activation 'tanhh'.*Did you mean 'tanh'"),
    ("optimizer", "sgdd", "optimizer must be one of"),
    ("optimizer_params", {"lr": 0.1}, "learning rate is the learning_rate parameter"),
    ("optimizer_params", {"bogus": 1}, "optimizer_params: 'sgd' takes"),
    ("optimizer_params", [("momentum", 0.9)], "optimizer_params must be a dict"),
    ("learning_rate", 0, "learning_rate must be a positive finite number"),
    ("learning_rate", float("nan"), "learning_rate must be a positive finite number"),
    ("l2", -1.0, "l2 must be a finite number >= 0"),
    ("batch_size", 0, "batch_size must be a positive integer"),
    ("max_epochs", 0, "max_epochs must be an integer >= 1"),
    ("max_epochs", 2.5, "max_epochs must be an integer >= 1"),
    ("log_every", 0, "log_every must be an integer >= 1"),
    ("shuffle", "yes", "shuffle must be True or False"),
    ("early_stopping", 1, "early_stopping must be True or False"),
    ("validation_fraction", 1.0, "validation_fraction must be a number strictly between 0 and 1"),
    ("n_iter_no_change", 0, "n_iter_no_change must be an integer >= 1"),
    ("tol", -1e-3, "tol must be a finite number >= 0"),
    ("init", "xavier", "Unknown init 'xavier'"),
    ("backend", "numbaa", "Unknown backend 'numbaa'.*Did you mean 'numba'"),
    ("backend", 3, "backend must be one of"),
    ("dtype", "float16", "dtype must be 'float32' or 'float64'"),
    ("random_state", -1, "random_state must be an integer from 0 to 2\\*\\*32 - 1"),
    ("random_state", "0", "random_state must be None, an integer"),
    ("verbose", -1, "verbose must be 0 \\(silent\\), 1 \\(a progress bar\\) or 2"),
    ("verbose", 3, "verbose must be 0"),
    ("optimizer_params", {"momentum": -1.0}, "optimizer_params for 'sgd': SGD momentum must be a finite number"),
    ("optimizer_params", {"nesterov": True}, "optimizer_params for 'sgd': SGD nesterov=True needs momentum > 0"),
    ("warm_start", None, "warm_start must be True or False"),
])
@pytest.mark.parametrize("estimator", [MLPClassifier, MLPRegressor])
def test_bad_parameters_are_refused_in_fit_naming_the_parameter(estimator, name, value, message):
    X, y = moons(20)
    model = estimator(**FAST).set_params(**{name: value})  # stored unchanged: no check before fit
    assert model.get_params()[name] is value
    with pytest.raises(ValueError, match=message):
        model.fit(X, y)
    assert not hasattr(model, "model_") and not hasattr(model, "n_features_in_")


def test_constructor_stores_arguments_unchanged_and_clones():
    hidden = [7, 3]
    settings = {"momentum": 0.9}
    clf = MLPClassifier(hidden, optimizer="sgd", optimizer_params=settings, activation="logistic", random_state=3,
                        max_epochs=3, tol=None, backend="numpy")
    params = clf.get_params()
    assert params["hidden_layer_sizes"] is hidden and params["optimizer_params"] is settings
    twin = clone(clf)
    assert twin.get_params()["hidden_layer_sizes"] == hidden and twin is not clf
    X, y = moons(40)
    clf.fit(X, y)
    assert clf.hidden_layer_sizes is hidden and settings == {"momentum": 0.9}
    assert clf.model_.training.optimizer == nnx.optim.SGD(lr=0.001, momentum=0.9)
    assert clf.model_.layer_sizes == (2, 7, 3, 2) and clf.model_.hidden == "sigmoid"
    assert not hasattr(clone(clf), "model_")
    assert set(params) == {
        "hidden_layer_sizes", "activation", "optimizer", "optimizer_params", "learning_rate", "l2", "batch_size",
        "max_epochs", "log_every", "shuffle", "early_stopping", "validation_fraction", "n_iter_no_change", "tol",
        "init", "backend", "dtype", "random_state", "verbose", "warm_start"}


def test_int_hidden_size_and_no_hidden_layer():
    X, y = moons(40)
    assert MLPClassifier(6, max_epochs=1, **FAST).fit(X, y).model_.layer_sizes == (2, 6, 2)
    logistic = MLPClassifier((), max_epochs=1, **FAST).fit(X, y)
    assert logistic.model_.layer_sizes == (2, 2) and logistic.n_layers_ == 2


def test_init_auto_is_he_for_relu_and_glorot_otherwise():
    X, y = moons(40)
    relu = MLPClassifier((30,), max_epochs=1, learning_rate=1e-12, **{**FAST, "activation": "relu"}).fit(X, y)
    he = np.random.RandomState(0).randn(2, 30) * np.sqrt(2.0 / 2)
    assert scaled_error(relu.coefs_[0], he) < 1e-9
    tanh = MLPClassifier((30,), max_epochs=1, learning_rate=1e-12, **FAST).fit(X, y)
    assert scaled_error(tanh.coefs_[0], glorot([2, 30, 2], 0)[0][0]) < 1e-9


def test_float32_dtype():
    X, y = moons(60)
    clf = MLPClassifier((6,), max_epochs=20, dtype="float32", **FAST).fit(X, y)
    assert clf.coefs_[0].dtype == np.float32 and clf.predict_proba(X).dtype == np.float32
    f64 = MLPClassifier((6,), max_epochs=20, **FAST).fit(X, y)
    assert scaled_error(clf.predict_proba(X), f64.predict_proba(X)) < 1e-5


# ---------------------------------------------------------------------------------------- seeds and backends
def test_random_state_kinds():
    X, y = moons(40)
    a = MLPClassifier((5,), max_epochs=2, **FAST).fit(X, y)
    b = MLPClassifier((5,), max_epochs=2, **FAST).fit(X, y)
    assert np.array_equal(a.coefs_[0], b.coefs_[0])
    free = {**FAST, "random_state": None}
    np.random.seed(5)
    c = MLPClassifier((5,), max_epochs=2, **free).fit(X, y)
    np.random.seed(5)
    d = MLPClassifier((5,), max_epochs=2, **free).fit(X, y)
    e = MLPClassifier((5,), max_epochs=2, **free).fit(X, y)
    assert np.array_equal(c.coefs_[0], d.coefs_[0]) and not np.array_equal(d.coefs_[0], e.coefs_[0])
    rs = np.random.RandomState(9)
    f = MLPClassifier((5,), max_epochs=2, **{**FAST, "random_state": rs}).fit(X, y)
    g = MLPClassifier((5,), max_epochs=2, **{**FAST, "random_state": rs}).fit(X, y)  # the generator moved on
    assert not np.array_equal(f.coefs_[0], g.coefs_[0])


@pytest.mark.parametrize("training", [
    dict(),  # the defaults: Adam on shuffled minibatches of 200
    dict(optimizer="sgd", batch_size="full", learning_rate=0.3),  # plain full-batch gradient descent
], ids=["adam-minibatches", "sgd-full-batch"])
def test_same_seed_same_model_on_every_backend(backend_name, training):
    """The estimator's own backend parameter, on each backend, against the NumPy backend's numbers."""
    X, y = moons(300)
    settings = dict(hidden_layer_sizes=(6,), activation="tanh", l2=0.001, max_epochs=60, tol=None,
                    random_state=4, **training)
    reference = MLPClassifier(**settings, backend="numpy").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", nnx.PerformanceWarning)  # compiled wherever the backend compiles
        other = MLPClassifier(**settings, backend=backend_name).fit(X, y)
    assert other.model_.backend_name == backend_name
    assert other.model_.updates == reference.model_.updates == 60 * (2 if not training else 1)
    assert params_error(other.model_.params, reference.model_.params) < 1e-10
    assert scaled_error(other.loss_curve_, reference.loss_curve_) < 1e-10
    assert scaled_error(other.predict_proba(X), reference.predict_proba(X)) < 1e-10


def test_backend_auto_follows_nnx_selection():
    X, y = moons(40)
    with nnx.use_backend("numpy"):
        clf = MLPClassifier((4,), max_epochs=2, activation="tanh", tol=None, random_state=0).fit(X, y)
    assert clf.backend == "auto" and clf.model_.backend_name == "numpy"


def test_unavailable_backend_fails_fit_but_prediction_falls_back_once():
    import nnx.sklearn.base as base
    missing = [name for name, reason in nnx.available_backends().items() if reason is not None]
    if not missing:
        pytest.skip("every backend is available here")
    name = missing[0]
    X, y = moons(40)
    with pytest.raises(nnx.BackendUnavailableError):
        MLPClassifier(backend=name, **{k: v for k, v in FAST.items() if k != "backend"}).fit(X, y)
    clf = MLPClassifier((4,), max_epochs=2, **FAST).fit(X, y)
    expected = clf.predict(X)
    clf.set_params(backend=name)
    base._FALLBACK_REPORTED.discard(name)
    with pytest.warns(UserWarning, match=f"backend '{name}' is unavailable here"):
        assert np.array_equal(clf.predict(X), expected)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(X)  # said once


# ---------------------------------------------------------------------------------------- optional dependency
def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_import_nnx_does_not_import_sklearn():
    done = _python("import sys, nnx; print('sklearn' in sys.modules); import nnx.sklearn; "
                   "print('sklearn' in sys.modules, nnx.sklearn.MLPClassifier.__name__)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "MLPClassifier"]


def test_without_sklearn_the_error_says_what_to_install():
    done = _python("import sys; sys.modules['sklearn'] = None\nimport nnx\nimport nnx.sklearn")
    assert done.returncode != 0
    assert "nnx.sklearn needs scikit-learn: pip install 'nnx[sklearn]'" in done.stderr
    attribute = _python("import sys; sys.modules['sklearn'] = None\nimport nnx\nnnx.sklearn")
    assert "pip install 'nnx[sklearn]'" in attribute.stderr
