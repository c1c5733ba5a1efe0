"""Gradient-descent update with L2 on the flat parameter vector, one fused sweep.

Same order as the NumPy reference: dW += l2 * W, dW *= -lr, W += dW (biases
take no L2). Parameters and gradients live in one flat buffer laid out
W0, b0, W1, b1, ... so the whole update is one loop per layer.
"""
from __future__ import annotations

from numba import njit

from .cpu_math import CACHE, FASTMATH


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def gd_update(theta, grads, w_off, b_off, n_bias, lr, l2):
    """theta -= lr * (grads + l2 * W) over weights, theta -= lr * grads over biases."""
    neg_lr = -lr
    for layer in range(w_off.size):
        w0 = w_off[layer]
        b0 = b_off[layer]
        if l2 != 0.0:
            for i in range(w0, b0):
                theta[i] += (grads[i] + l2 * theta[i]) * neg_lr
        else:
            for i in range(w0, b0):
                theta[i] += grads[i] * neg_lr
        for i in range(b0, b0 + n_bias[layer]):
            theta[i] += grads[i] * neg_lr
