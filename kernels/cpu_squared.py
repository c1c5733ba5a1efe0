"""Squared-error head (sigmoid or identity output): output, gradient and loss in one pass.

The gradient follows the NumPy reference order: (y - T) * (y * (1 - y)) for
sigmoid, then times ``scale``; the loss is 0.5 * sum((y - T)**2) when asked for.
The head codes are ``nnx.network.HEAD_CODES``; the branches end with the identity
code itself, and any other code gives NaN, never the identity.
"""
from __future__ import annotations

import math

from numba import njit, types

from .cpu_activation import HEAD_IDENTITY, HEAD_SIGMOID
from .cpu_ccall import value_types
from .cpu_math import CACHE, FASTMATH, like, vsigmoid


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def squared_error_block(head, z, TT, n0, nb, scale, delta, want_loss):
    """delta[:, :nb] from feature-major logits; returns the summed loss if ``want_loss``."""
    loss = 0.0
    for c in range(z.shape[0]):
        tc = TT[c, n0:]  # indexed from 0: an index n0 + n of unknown sign wraps negative values
        if head == HEAD_SIGMOID:
            for n in range(nb):
                y = vsigmoid(z[c, n])
                d = y - tc[n]
                if want_loss:
                    loss += 0.5 * d * d
                delta[c, n] = d * (y * (like(y, 1.0) - y)) * scale
        elif head == HEAD_IDENTITY:
            for n in range(nb):
                d = z[c, n] - tc[n]
                if want_loss:
                    loss += 0.5 * d * d
                delta[c, n] = d * scale
        else:  # not a squared-error head code (refused before any kernel runs)
            for n in range(nb):
                delta[c, n] = math.nan
            loss = math.nan
    return loss


def squared_error_block_types(dtype: str) -> tuple:
    """The argument types the fused kernels call ``squared_error_block`` with (C-contiguous
    blocks, scalars in ``dtype``): what a fit compiles it for ahead of a kernel that calls it."""
    f, _, a2 = value_types(dtype)
    i = types.int64
    return (i, a2, a2, i, i, f, a2, types.boolean)


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def squared_error_rows(head, Z, T, r0, r1, scale, D, want_loss):
    """D[r] from sample-major logits for rows r0..r1; returns the summed loss if ``want_loss``."""
    loss = 0.0
    n_out = Z.shape[1]
    for r in range(r0, r1):
        if head == HEAD_SIGMOID:
            for c in range(n_out):
                y = vsigmoid(Z[r, c])
                d = y - T[r, c]
                if want_loss:
                    loss += 0.5 * d * d
                D[r, c] = d * (y * (like(y, 1.0) - y)) * scale
        elif head == HEAD_IDENTITY:
            for c in range(n_out):
                d = Z[r, c] - T[r, c]
                if want_loss:
                    loss += 0.5 * d * d
                D[r, c] = d * scale
        else:  # not a squared-error head code (refused before any kernel runs)
            for c in range(n_out):
                D[r, c] = math.nan
            loss = math.nan
    return loss
