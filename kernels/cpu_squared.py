"""Squared-error head (sigmoid or identity output): output, gradient and loss in one pass.

The gradient follows the NumPy reference order: (y - T) * (y * (1 - y)) for
sigmoid, then times ``scale``; the loss is 0.5 * sum((y - T)**2) when asked for.
The head code (``nnx.network.HEAD_CODES``) maps to the activation code of its
output (``head_activation``): a code that is neither sigmoid nor identity gives
NaN, never the identity.
"""
from __future__ import annotations

from numba import njit

from .cpu_activation import IDENTITY, SIGMOID, activation, derivative, head_activation
from .cpu_math import CACHE, FASTMATH



@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _half_squared_and_delta(code, z, t, scale):
    """(0.5 (y - t)^2, dLoss/dz * scale) for one logit ``z``, y = f(z) for the activation
    ``code`` of the head (sigmoid or identity; any other code gives NaN)."""
    y = activation(code, z, False)
    d = y - t
    return 0.5 * d * d, d * derivative(code, y) * scale  # identity: d * 1 * scale, exactly d * scale


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def squared_error_block(head, z, TT, n0, nb, scale, delta, want_loss):
    """delta[:, :nb] from feature-major logits; returns the summed loss if ``want_loss``."""
    code = head_activation(head)
    loss = 0.0
    for c in range(z.shape[0]):
        if code == SIGMOID:
            for n in range(nb):
                half_sq, d = _half_squared_and_delta(SIGMOID, z[c, n], TT[c, n0 + n], scale)
                delta[c, n] = d
                if want_loss:
                    loss += half_sq
        elif code == IDENTITY:
            for n in range(nb):
                half_sq, d = _half_squared_and_delta(IDENTITY, z[c, n], TT[c, n0 + n], scale)
                delta[c, n] = d
                if want_loss:
                    loss += half_sq
        else:
            for n in range(nb):
                half_sq, d = _half_squared_and_delta(code, z[c, n], TT[c, n0 + n], scale)
                delta[c, n] = d
                if want_loss:
                    loss += half_sq
    return loss


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def squared_error_rows(head, Z, T, r0, r1, scale, D, want_loss):
    """D[r] from sample-major logits for rows r0..r1; returns the summed loss if ``want_loss``."""
    code = head_activation(head)
    loss = 0.0
    n_out = Z.shape[1]
    for r in range(r0, r1):
        if code == SIGMOID:
            for c in range(n_out):
                half_sq, d = _half_squared_and_delta(SIGMOID, Z[r, c], T[r, c], scale)
                D[r, c] = d
                if want_loss:
                    loss += half_sq
        elif code == IDENTITY:
            for c in range(n_out):
                half_sq, d = _half_squared_and_delta(IDENTITY, Z[r, c], T[r, c], scale)
                D[r, c] = d
                if want_loss:
                    loss += half_sq
        else:
            for c in range(n_out):
                half_sq, d = _half_squared_and_delta(code, Z[r, c], T[r, c], scale)
                D[r, c] = d
                if want_loss:
                    loss += half_sq
    return loss
