"""Dense layers: forward with bias and activation, and the backward products.

Two paths. ``*_block`` work on a block of samples stored feature-major
(features x samples) with explicit loops vectorised over samples; they serve
layers with a tiny fan-in or fan-out, where a matrix product would be memory
bound. ``bias_activation_rows`` is the elementwise tail fused after a BLAS
product on sample-major (N x width) arrays.
"""
from __future__ import annotations

from numba import njit

from .cpu_activation import IDENTITY, activate, grad_times_derivative
from .cpu_math import CACHE, FASTMATH


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def bias_activation_rows(Z, b, code, r0, r1):
    """Z[r] = f(Z[r] + b) for rows r0..r1 of a sample-major product."""
    w = Z.shape[1]
    for r in range(r0, r1):
        for j in range(w):
            Z[r, j] += b[j]
        if code != IDENTITY:
            activate(code, Z, r, w)


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def forward_block(W, b, code, x, out, nb):
    """out[:, :nb] = f(W.T @ x[:, :nb] + b) for a feature-major block.

    The wider side is the outer loop so the big block is swept once; both
    orders add the inputs in the same sequence, so results are bit-identical.
    """
    fan_in, fan_out = W.shape
    if fan_in <= fan_out:
        for j in range(fan_out):
            bj = b[j]
            for n in range(nb):
                out[j, n] = bj
            for k in range(fan_in):
                w = W[k, j]
                for n in range(nb):
                    out[j, n] += x[k, n] * w
            if code != IDENTITY:
                activate(code, out, j, nb)
    else:
        for j in range(fan_out):
            bj = b[j]
            for n in range(nb):
                out[j, n] = bj
        for k in range(fan_in):
            for j in range(fan_out):
                w = W[k, j]
                for n in range(nb):
                    out[j, n] += x[k, n] * w
        if code != IDENTITY:
            for j in range(fan_out):
                activate(code, out, j, nb)


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def backward_block(W, g, x, dW, db, gin, nb, want_gin, prev_code):
    """Accumulate dW += x g^T and db += sum(g) over a block; gin = (W g) * f'(x).

    ``g`` is dLoss/dZ of this layer (features x samples), ``x`` the layer input
    (the previous layer's output, whose derivative ``prev_code`` is fused in).
    """
    fan_in, fan_out = W.shape
    for j in range(fan_out):
        acc = 0.0
        for n in range(nb):
            acc += g[j, n]
        db[j] += acc
    if fan_in <= fan_out:
        if want_gin:
            for k in range(fan_in):
                for n in range(nb):
                    gin[k, n] = 0.0
        for j in range(fan_out):
            for k in range(fan_in):
                acc = 0.0
                for n in range(nb):
                    acc += x[k, n] * g[j, n]
                dW[k, j] += acc
                if want_gin:
                    w = W[k, j]
                    for n in range(nb):
                        gin[k, n] += g[j, n] * w
        if want_gin:
            for k in range(fan_in):
                grad_times_derivative(prev_code, gin, k, x, k, nb)
    else:
        for k in range(fan_in):
            for j in range(fan_out):
                acc = 0.0
                for n in range(nb):
                    acc += x[k, n] * g[j, n]
                dW[k, j] += acc
            if want_gin:
                for n in range(nb):
                    gin[k, n] = 0.0
                for j in range(fan_out):
                    w = W[k, j]
                    for n in range(nb):
                        gin[k, n] += g[j, n] * w
                grad_times_derivative(prev_code, gin, k, x, k, nb)
