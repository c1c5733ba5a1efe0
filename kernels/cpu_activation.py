"""Hidden activations on one row of a 2-D array: forward in place, and the backward
pass fused with the incoming gradient (``g *= f'(a)``, f' from the output ``a``).

The activation is a runtime code (``nnx.network.ACTIVATION_CODES``); the branch
sits outside each loop so every loop body stays branch-free and vectorises.
"""
from __future__ import annotations

from numba import njit

from .cpu_math import CACHE, FASTMATH, like, vsigmoid, vtanh

SIGMOID, TANH, RELU, IDENTITY = 0, 1, 2, 3


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def activate(code, v, r, n):
    """v[r, :n] = f(v[r, :n]) (a row index, not a view: no refcounting in hot loops)."""
    if code == TANH:
        for i in range(n):
            v[r, i] = vtanh(v[r, i])
    elif code == SIGMOID:
        for i in range(n):
            v[r, i] = vsigmoid(v[r, i])
    elif code == RELU:
        for i in range(n):
            x = v[r, i]
            v[r, i] = like(x, 0.0) if x < 0.0 else x  # NaN stays NaN, as np.maximum
    # IDENTITY: nothing to do


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def grad_times_derivative(code, g, gr, a, ar, n):
    """g[gr, :n] *= f'(a[ar, :n]) with f' written from the output: 1-a^2, a(1-a), a>0."""
    if code == TANH:
        for i in range(n):
            x = a[ar, i]
            g[gr, i] *= like(x, 1.0) - x * x
    elif code == SIGMOID:
        for i in range(n):
            x = a[ar, i]
            g[gr, i] *= x * (like(x, 1.0) - x)
    elif code == RELU:
        for i in range(n):
            g[gr, i] *= like(g, 1.0) if a[ar, i] > 0.0 else like(g, 0.0)  # a multiply, so NaN in g survives
