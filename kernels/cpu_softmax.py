"""Softmax + cross-entropy + its gradient in one pass over the logits.

The row max is subtracted before exp, the gradient is (softmax - T) * scale,
and the loss (log-sum-exp minus T.z) is summed only when asked for, since the
training loop itself never needs it. ``*_block`` takes feature-major blocks
(classes x samples, vectorised over samples); ``*_rows`` takes the
sample-major logits a BLAS output layer leaves behind.
"""
from __future__ import annotations

import math

from numba import njit

from .cpu_math import CACHE, FASTMATH, like, vexp


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def softmax_xent_block(z, TT, n0, nb, scale, delta, m, s, want_loss):
    """delta[:, :nb] = (softmax(z) - T) * scale; returns the summed loss if ``want_loss``."""
    n_classes = z.shape[0]
    for n in range(nb):
        m[n] = z[0, n]
        s[n] = 0.0
    for c in range(1, n_classes):
        for n in range(nb):
            v = z[c, n]
            m[n] = v if v > m[n] else m[n]
    for c in range(n_classes):
        for n in range(nb):
            e = vexp(z[c, n] - m[n])
            delta[c, n] = e
            s[n] += e
    loss = 0.0
    if want_loss:
        for n in range(nb):
            loss += math.log(s[n]) + m[n]
        for c in range(n_classes):
            tc = TT[c, n0:]  # indexed from 0: an index n0 + n of unknown sign wraps negative values
            for n in range(nb):
                loss -= tc[n] * z[c, n]
    for n in range(nb):
        s[n] = like(s, 1.0) / s[n]  # one division per sample, not per class
    for c in range(n_classes):
        tc = TT[c, n0:]
        for n in range(nb):
            delta[c, n] = (delta[c, n] * s[n] - tc[n]) * scale
    return loss


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def softmax_xent_rows(Z, T, r0, r1, scale, D, want_loss):
    """D[r] = (softmax(Z[r]) - T[r]) * scale for rows r0..r1 of sample-major logits."""
    n_classes = Z.shape[1]
    loss = 0.0
    for r in range(r0, r1):
        m = Z[r, 0]
        for c in range(1, n_classes):
            v = Z[r, c]
            m = v if v > m else m
        s = 0.0
        for c in range(n_classes):
            e = vexp(Z[r, c] - m)
            D[r, c] = e
            s += e
        if want_loss:
            loss += math.log(s) + m
            for c in range(n_classes):
                loss -= T[r, c] * Z[r, c]
        inv = 1.0 / s
        for c in range(n_classes):
            D[r, c] = (D[r, c] * inv - T[r, c]) * scale
    return loss
