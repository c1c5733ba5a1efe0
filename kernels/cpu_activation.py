"""Hidden activations, written once: ``activation`` (f of one value) and ``derivative``
(f' from the output ``a``, as the tutorials write it), inlined wherever a kernel
needs them; plus the row loops built on them (forward in place, and the backward
pass fused with the incoming gradient, ``g *= f'(a)``).

The codes are ``nnx.network.ACTIVATION_CODES``, the one table Python and the
kernels share. Each chain of branches ends with the identity code itself: any
other value gives NaN, never silently the identity (and the Numba backend refuses
such a code before any call). In the row loops the branch sits outside each loop,
whose body calls the helper with a constant code, so every loop stays branch-free
and vectorises.
"""
from __future__ import annotations

import math

from numba import njit

from ..network import ACTIVATION_CODES, HEAD_CODES
from .cpu_math import CACHE, FASTMATH, like, vsigmoid, vtanh

SIGMOID = ACTIVATION_CODES["sigmoid"]
TANH = ACTIVATION_CODES["tanh"]
RELU = ACTIVATION_CODES["relu"]
IDENTITY = ACTIVATION_CODES["identity"]
HEAD_SOFTMAX = HEAD_CODES["softmax"]
HEAD_SIGMOID = HEAD_CODES["sigmoid"]
HEAD_IDENTITY = HEAD_CODES["identity"]

_INLINE = dict(inline="always", fastmath=FASTMATH, error_model="numpy")


@njit(**_INLINE)
def activation(code, x, libm):
    """f(x) for one value. ``libm`` (a constant at each call site) takes libm's scalar
    tanh and exp, faster for values computed one at a time; otherwise the
    vectorisable ``vtanh``/``vsigmoid`` for loops over many values."""
    one = like(x, 1.0)
    if code == TANH:
        return math.tanh(x) if libm else vtanh(x)
    if code == SIGMOID:
        return one / (one + math.exp(-x)) if libm else vsigmoid(x)
    if code == RELU:
        return like(x, 0.0) if x < 0.0 else x  # NaN stays NaN, as np.maximum
    if code == IDENTITY:
        return x
    return like(x, math.nan)


@njit(**_INLINE)
def derivative(code, a):
    """f' written from the output ``a``: 1 - a^2, a (1 - a), 1 where a > 0, 1."""
    one = like(a, 1.0)
    if code == TANH:
        return one - a * a
    if code == SIGMOID:
        return a * (one - a)
    if code == RELU:
        return one if a > 0.0 else like(a, 0.0)  # multiplied in, so NaN in the gradient survives
    if code == IDENTITY:
        return one
    return like(a, math.nan)


@njit(**_INLINE)
def head_activation(head):
    """The activation a sigmoid or identity head applies to its logits; -1 (NaN) for any
    other code, softmax included (its output is not elementwise). For kernels that work one
    value at a time (the vectorised loops branch on the head code themselves)."""
    if head == HEAD_SIGMOID:
        return SIGMOID
    if head == HEAD_IDENTITY:
        return IDENTITY
    return -1


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def activate(code, v, r, n):
    """v[r, :n] = f(v[r, :n]) (a row index, not a view: no refcounting in hot loops)."""
    if code == TANH:
        for i in range(n):
            v[r, i] = activation(TANH, v[r, i], False)
    elif code == SIGMOID:
        for i in range(n):
            v[r, i] = activation(SIGMOID, v[r, i], False)
    elif code == RELU:
        for i in range(n):
            v[r, i] = activation(RELU, v[r, i], False)
    elif code != IDENTITY:  # not an activation code (refused before any kernel runs): NaN, never the identity
        for i in range(n):
            v[r, i] = math.nan


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def grad_times_derivative(code, g, gr, a, ar, n):
    """g[gr, :n] *= f'(a[ar, :n])."""
    if code == TANH:
        for i in range(n):
            g[gr, i] *= derivative(TANH, a[ar, i])
    elif code == SIGMOID:
        for i in range(n):
            g[gr, i] *= derivative(SIGMOID, a[ar, i])
    elif code == RELU:
        for i in range(n):
            g[gr, i] *= derivative(RELU, a[ar, i])
    elif code != IDENTITY:  # not an activation code: NaN, never the identity
        for i in range(n):
            g[gr, i] = math.nan
