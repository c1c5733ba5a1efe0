"""Hand-written Numba loops over a tutorial's own math: the reference issue 8 names for what
a compiled loop reaches on a small network, timed beside ``MLP.fit`` so its ratio to the
tutorial's NumPy code is read in the same run (it moves with the machine).

Written the way a user would write it: scalar loops over samples and units, ``math.exp``,
every update in place. Not part of nnx; compiled once per process, not cached.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(fastmath=True)
def _xor_epochs(X, T, W1, b1, W2, b2, epochs):
    n_samples, n_in = X.shape
    n_hidden = W1.shape[1]
    n_out = W2.shape[1]
    hidden = np.empty((n_samples, n_hidden))
    d_hidden = np.empty((n_samples, n_hidden))
    d_out = np.empty((n_samples, n_out))
    for _ in range(epochs):
        for n in range(n_samples):
            for j in range(n_hidden):
                a = b1[0, j]
                for k in range(n_in):
                    a += X[n, k] * W1[k, j]
                hidden[n, j] = 1.0 / (1.0 + math.exp(-a))
            for c in range(n_out):
                a = b2[0, c]
                for j in range(n_hidden):
                    a += hidden[n, j] * W2[j, c]
                y = 1.0 / (1.0 + math.exp(-a))
                d_out[n, c] = (T[n, c] - y) * y * (1.0 - y)
            for j in range(n_hidden):
                back = 0.0
                for c in range(n_out):
                    back += d_out[n, c] * W2[j, c]
                d_hidden[n, j] = back * hidden[n, j] * (1.0 - hidden[n, j])
        for j in range(n_hidden):
            for c in range(n_out):
                s = 0.0
                for n in range(n_samples):
                    s += hidden[n, j] * d_out[n, c]
                W2[j, c] += s
        for c in range(n_out):
            s = 0.0
            for n in range(n_samples):
                s += d_out[n, c]
            b2[0, c] += s
        for k in range(n_in):
            for j in range(n_hidden):
                s = 0.0
                for n in range(n_samples):
                    s += X[n, k] * d_hidden[n, j]
                W1[k, j] += s
        for j in range(n_hidden):
            s = 0.0
            for n in range(n_samples):
                s += d_hidden[n, j]
            b1[0, j] += s


def xor_loop(X, T, hidden: int = 2, epochs: int = 10_000, seed: int = 0) -> dict:
    """Tutorial 001's training (``nnx.bench.tutorial_code.xor_tutorial``: the same draws and
    updates) as one compiled loop; returns the final W1, b1, W2, b2."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    T = np.ascontiguousarray(T, dtype=np.float64)
    rs = np.random.RandomState(seed)
    params = {"W1": rs.rand(X.shape[1], hidden), "b1": rs.rand(1, hidden),
              "W2": rs.rand(hidden, T.shape[1]), "b2": rs.rand(1, T.shape[1])}
    _xor_epochs(X, T, params["W1"], params["b1"], params["W2"], params["b2"], epochs)
    return params
