"""The seed tutorials' algorithms as plain NumPy: the code users start from.

nnx grew out of the classic "neural network from scratch" tutorials. This module
holds their algorithms, rewritten by the nnx team with the same NumPy operations in
the same order as the tutorials (not their text), generalised only in the sizes
(any N, hidden width, number of classes) and the dtype. It has two jobs:

* it is the independent reference that ``tests/test_tutorials.py`` compares nnx
  with, through nnx's public API, on every backend; and
* it is the "tutorial-code" baseline that the benchmarks (``benchmarks/`` and
  ``nnx bench``) time every backend and every speed-up against.

So it depends on NumPy only, imports nothing from nnx, and deliberately keeps
the tutorials' numerics: no max-subtraction in tutorial 003's softmax,
``1 / (1 + exp(-x))`` in tutorial 001's sigmoid, ``log(p + 1e-8)`` in tutorial
000's loss. Do not "improve" it; nnx's own code is where the improvements go.

Tutorials:
    000  ReLU hidden layer, softmax output, ``randn * 0.01`` weights, zero biases,
         loss ``-mean(onehot * log(p + 1e-8))`` over all N*C entries.
    001  XOR, 2-2-1, sigmoid/sigmoid, ``rand`` init (W1, b1, W2, b2 in that order),
         error ``t - y``, summed ``+=`` updates with learning rate 1.
    002  As 001 with 4 hidden units (the tutorial has no code of its own).
    003  Two moons, tanh hidden, softmax output, full-batch gradient descent on the
         summed cross-entropy with L2, W = randn / sqrt(fan_in) after seed 0.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "moons_initial_params",
    "moons_tutorial",
    "relu_softmax_forward",
    "relu_softmax_loss",
    "xor_tutorial",
]


# --------------------------------------------------------------------------- 003
def moons_initial_params(n_inputs, hidden, n_classes, seed=0, dtype=np.float64):
    """Tutorial 003's initial draw: ``W1 = randn(n_in, H) / sqrt(n_in)``, zero b1,
    ``W2 = randn(H, C) / sqrt(H)``, zero b2, after seeding NumPy's legacy generator
    (a private ``RandomState``, so the global state is left alone).

    Drawn in float64, then cast to ``dtype``. Biases are (1, fan_out) as in the tutorial.
    """
    rs = np.random.RandomState(seed)
    W1 = rs.randn(n_inputs, hidden) / np.sqrt(n_inputs)
    b1 = np.zeros((1, hidden))
    W2 = rs.randn(hidden, n_classes) / np.sqrt(hidden)
    b2 = np.zeros((1, n_classes))
    return {"W1": W1.astype(dtype), "b1": b1.astype(dtype),
            "W2": W2.astype(dtype), "b2": b2.astype(dtype)}


def _moons_loss(X, y, W1, b1, W2, b2, l2):
    """Tutorial 003's ``calculate_loss``: (summed -log p_correct + l2/2 * sum W^2) / N."""
    num_examples = len(X)
    z1 = X.dot(W1) + b1
    a1 = np.tanh(z1)
    z2 = a1.dot(W2) + b2
    exp_scores = np.exp(z2)
    probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
    correct_logprobs = -np.log(probs[range(num_examples), y])
    data_loss = np.sum(correct_logprobs)
    data_loss += l2 / 2 * (np.sum(np.square(W1)) + np.sum(np.square(W2)))
    return float(1.0 / num_examples * data_loss)


def moons_tutorial(X, y, hidden, passes, lr=0.01, l2=0.01, seed=0, dtype=np.float64,
                   log_every=None, n_classes=2, params=None):
    """Tutorial 003's ``build_model``: ``passes`` full-batch gradient-descent updates.

    Returns a dict with ``W1, b1, W2, b2`` (biases (1, fan_out)) and ``losses``,
    ``{updates_done: loss}`` with the tutorial's ``calculate_loss`` figure recorded
    after updates ``log_every, 2*log_every, ...`` (empty when ``log_every`` is None).
    ``params`` (a dict like the one returned, copied) starts the run from there instead
    of the seed's draw, so a run can be continued; update counts then restart at 0.
    """
    X = np.asarray(X, dtype=dtype)
    y = np.asarray(y)
    num_examples, n_inputs = X.shape
    if params is None:
        params = moons_initial_params(n_inputs, hidden, n_classes, seed=seed, dtype=dtype)
    else:
        params = {k: np.array(params[k], dtype=dtype) for k in ("W1", "b1", "W2", "b2")}
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    epsilon, reg_lambda = lr, l2
    rows = range(num_examples)
    losses = {}
    for i in range(passes):
        # Forward propagation
        z1 = X.dot(W1) + b1
        a1 = np.tanh(z1)
        z2 = a1.dot(W2) + b2
        exp_scores = np.exp(z2)
        probs = exp_scores / np.sum(exp_scores, axis=1, keepdims=True)
        # Backpropagation
        delta3 = probs
        delta3[rows, y] -= 1
        dW2 = (a1.T).dot(delta3)
        db2 = np.sum(delta3, axis=0, keepdims=True)
        delta2 = delta3.dot(W2.T) * (1 - np.power(a1, 2))
        dW1 = np.dot(X.T, delta2)
        db1 = np.sum(delta2, axis=0)
        # Regularisation (biases are not regularised)
        dW2 += reg_lambda * W2
        dW1 += reg_lambda * W1
        # Gradient-descent update
        W1 += -epsilon * dW1
        b1 += -epsilon * db1
        W2 += -epsilon * dW2
        b2 += -epsilon * db2
        if log_every and (i + 1) % log_every == 0:
            losses[i + 1] = _moons_loss(X, y, W1, b1, W2, b2, reg_lambda)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "losses": losses}


# ------------------------------------------------------------------- 001 / 002
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _sigmoid_derivative(s):
    return s * (1 - s)


def _xor_forward(X, W1, b1, W2, b2):
    hidden_activation = np.dot(X, W1)
    hidden_activation += b1
    hidden_output = _sigmoid(hidden_activation)
    output_activation = np.dot(hidden_output, W2)
    output_activation += b2
    return hidden_output, _sigmoid(output_activation)


def xor_tutorial(X, T, hidden=2, epochs=10000, seed=0, dtype=np.float64):
    """Tutorial 001's XOR network (002 is the same with ``hidden=4``).

    ``np.random.RandomState(seed).rand`` draws W1 (n_in, H), b1 (1, H), W2 (H, n_out),
    b2 (1, n_out) in that order; each epoch is a forward pass and the tutorial's
    ``+=`` updates with error ``T - output`` (learning rate 1, summed over samples).
    ``T`` is (N, n_out). Returns ``W1, b1, W2, b2`` and ``output``, the network's
    output for ``X`` at the final parameters (what the tutorial's ``predict`` gives).
    """
    X = np.asarray(X, dtype=dtype)
    T = np.asarray(T, dtype=dtype)
    n_inputs, n_outputs = X.shape[1], T.shape[1]
    rs = np.random.RandomState(seed)
    W1 = rs.rand(n_inputs, hidden).astype(dtype)
    b1 = rs.rand(1, hidden).astype(dtype)
    W2 = rs.rand(hidden, n_outputs).astype(dtype)
    b2 = rs.rand(1, n_outputs).astype(dtype)
    for _ in range(epochs):
        hidden_output, predicted = _xor_forward(X, W1, b1, W2, b2)
        error = T - predicted
        d_predicted = error * _sigmoid_derivative(predicted)
        error_hidden = d_predicted.dot(W2.T)
        d_hidden = error_hidden * _sigmoid_derivative(hidden_output)
        W2 += hidden_output.T.dot(d_predicted)
        b2 += np.sum(d_predicted, axis=0, keepdims=True)
        W1 += X.T.dot(d_hidden)
        b1 += np.sum(d_hidden, axis=0, keepdims=True)
    _, output = _xor_forward(X, W1, b1, W2, b2)
    return {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "output": output}


# --------------------------------------------------------------------------- 000
def relu_softmax_forward(X, W1, b1, W2, b2):
    """Tutorial 000's forward pass: ReLU hidden layer, max-subtracted softmax output."""
    z1 = np.dot(X, W1) + b1
    a1 = np.maximum(0, z1)
    z2 = np.dot(a1, W2) + b2
    exp_z = np.exp(z2 - np.max(z2, axis=1, keepdims=True))
    return exp_z / np.sum(exp_z, axis=1, keepdims=True)


def relu_softmax_loss(probs, y_onehot):
    """Tutorial 000's loss: ``-mean(y_onehot * log(probs + 1e-8))`` over all N*C entries."""
    return float(-np.mean(y_onehot * np.log(probs + 1e-8)))
