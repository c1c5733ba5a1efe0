"""Tutorial 003's sweep through ``nnx.sweep``, against the tutorial's own algorithm in plain NumPy.

The reference below is tutorial 003's ``build_model`` and ``calculate_loss`` (seed 0
draw, summed gradients, L2 on the weights), with hidden size 0 as the same
gradient descent on a network without a hidden layer. The sweep runs on the
NumPy backend, so both sides do the same float64 math up to the order of a few
operations.

Where the comparison can be exact (DESIGN.md, "Numerics"): every hidden size
before pass 300, when no rounding difference has grown yet; the stable sizes
(0, 1, 5, 20, 50) at 2,000 passes; hidden 3 at 1,000 passes, before it settles
(from about pass 1,100) into a period-2 oscillation whose phase a rounding
difference flips, and at the tutorial's full 20,000 passes phase-agnostically
(the reference after pass 20,000 or 20,001); hidden 2 and 4 are chaotic after
~300 and ~1,000 passes, so at 2,000 they are compared by accuracy within 3 points.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_moons

import nnx

EARLY, LATE, FULL = 250, 2000, 20_000
HIDDEN = (0, 1, 2, 3, 4, 5, 20, 50)


def tutorial_003(X, y, nn_hdim, num_passes, epsilon=0.01, reg_lambda=0.01):
    """build_model(nn_hdim, num_passes); returns (accuracy, calculate_loss) after each of the last two passes."""
    num_examples, nn_input_dim, nn_output_dim = len(X), 2, 2
    np.random.seed(0)
    if nn_hdim:
        W1 = np.random.randn(nn_input_dim, nn_hdim) / np.sqrt(nn_input_dim)
        b1 = np.zeros((1, nn_hdim))
        W2 = np.random.randn(nn_hdim, nn_output_dim) / np.sqrt(nn_hdim)
    else:
        W2 = np.random.randn(nn_input_dim, nn_output_dim) / np.sqrt(nn_input_dim)
    b2 = np.zeros((1, nn_output_dim))

    def forward(x):
        a1 = np.tanh(x.dot(W1) + b1) if nn_hdim else x
        exp_scores = np.exp(a1.dot(W2) + b2)
        return a1, exp_scores / np.sum(exp_scores, axis=1, keepdims=True)

    def accuracy_and_loss():
        probs = forward(X)[1]
        data_loss = np.sum(-np.log(probs[range(num_examples), y]))
        weights = np.sum(np.square(W2)) + (np.sum(np.square(W1)) if nn_hdim else 0.0)
        return np.mean(np.argmax(probs, axis=1) == y), (data_loss + reg_lambda / 2 * weights) / num_examples

    history = []
    for i in range(num_passes + 1):
        a1, probs = forward(X)
        delta3 = probs
        delta3[range(num_examples), y] -= 1
        dW2 = (a1.T).dot(delta3)
        db2 = np.sum(delta3, axis=0, keepdims=True)
        if nn_hdim:
            delta2 = delta3.dot(W2.T) * (1 - np.power(a1, 2))
            dW1 = np.dot(X.T, delta2) + reg_lambda * W1
            db1 = np.sum(delta2, axis=0)
            W1 += -epsilon * dW1
            b1 += -epsilon * db1
        dW2 += reg_lambda * W2
        W2 += -epsilon * dW2
        b2 += -epsilon * db2
        if i + 1 >= num_passes:
            history.append(accuracy_and_loss())
    return history[0], history[1]  # after num_passes and num_passes + 1 passes


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    records = nnx.sweep(hidden=HIDDEN, passes=[EARLY, LATE], backend="numpy",
                        out=tmp_path_factory.mktemp("tutorial"))
    return {(r["hidden"], r["passes"]): r for r in records}


@pytest.fixture(scope="module")
def data():
    np.random.seed(0)
    return make_moons(200, noise=0.20)  # the tutorial's own data


@pytest.mark.parametrize("hidden", HIDDEN)
def test_every_hidden_size_matches_before_rounding_grows(swept, data, hidden):
    (accuracy, loss), _ = tutorial_003(*data, hidden, EARLY)
    record = swept[hidden, EARLY]
    assert record["status"] == "ok" and record["passes_done"] == EARLY
    assert record["train_accuracy"] == accuracy
    assert record["loss"] == pytest.approx(loss, rel=1e-10)


@pytest.mark.parametrize("hidden", [0, 1, 5, 20, 50])
def test_stable_hidden_sizes_match_at_2000_passes(swept, data, hidden):
    (accuracy, loss), _ = tutorial_003(*data, hidden, LATE)
    assert swept[hidden, LATE]["train_accuracy"] == accuracy
    assert swept[hidden, LATE]["loss"] == pytest.approx(loss, rel=1e-8)


@pytest.fixture(scope="module")
def hidden_3(tmp_path_factory):
    records = nnx.sweep(hidden=3, passes=[1000, FULL], backend="numpy", out=tmp_path_factory.mktemp("h3"))
    return {r["passes"]: r for r in records}


def test_hidden_3_matches_before_its_oscillation_sets_in(hidden_3, data):
    (accuracy, loss), _ = tutorial_003(*data, 3, 1000)
    assert hidden_3[1000]["train_accuracy"] == accuracy
    assert hidden_3[1000]["loss"] == pytest.approx(loss, rel=1e-9)


def test_hidden_3_full_run_lands_on_a_phase_of_its_oscillation(hidden_3, data):
    """Tutorial 003's own run: 20,000 passes, settled into its period-2 oscillation."""
    record = hidden_3[FULL]
    phases = tutorial_003(*data, 3, FULL)
    assert any(record["train_accuracy"] == acc and record["loss"] == pytest.approx(loss, abs=1e-6)
               for acc, loss in phases), (record["train_accuracy"], record["loss"], phases)


@pytest.mark.parametrize("hidden", [2, 4])
def test_chaotic_hidden_sizes_agree_by_accuracy(swept, data, hidden):
    (accuracy, _), _ = tutorial_003(*data, hidden, LATE)
    assert abs(swept[hidden, LATE]["train_accuracy"] - accuracy) <= 0.03


def test_the_tutorials_headline_holds(swept):
    """Logistic regression cannot follow the moons; hidden layers of 3 and more can."""
    assert swept[0, LATE]["train_accuracy"] < 0.9
    assert all(swept[h, LATE]["train_accuracy"] > 0.96 for h in (3, 4, 5, 20, 50))
