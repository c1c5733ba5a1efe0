"""One hidden layer, both layers fused: the whole training loop for I-H-C nets with
small I and C (tutorial 003's 2-H-2 moons model, XOR) in one compiled call.

Per block of samples (feature-major, vectorised over samples) one sweep over the
hidden units goes forward (hidden pre-activation, activation, logits), then the
loss head, then one sweep back (hidden delta, all four gradients). The block's
hidden activations (H x block) are the only scratch; the N x H activations are
never stored. Blocks are sized so that scratch stays in L1/L2.

Samples split into a fixed number of chunks (from the sizes alone); each chunk
sums its own partial gradients and the chunks are added in order, so results
are bit-identical whatever ``NUMBA_NUM_THREADS``.
"""
from __future__ import annotations

from numba import get_thread_id, njit, prange

from .cpu_activation import RELU, SIGMOID, TANH
from .cpu_math import FASTMATH, vsigmoid, vtanh
from .cpu_softmax import softmax_xent_block
from .cpu_squared import squared_error_block
from .cpu_update import gd_update

HEAD_SOFTMAX = 0

_OPTS = dict(cache=True, fastmath=FASTMATH, error_model="numpy")


@njit(inline="always", **_OPTS)
def _activate_row(code, v, j, nb):
    if code == TANH:
        for n in range(nb):
            v[j, n] = vtanh(v[j, n])
    elif code == SIGMOID:
        for n in range(nb):
            v[j, n] = vsigmoid(v[j, n])
    elif code == RELU:
        for n in range(nb):
            x = v[j, n]
            v[j, n] = 0.0 if x < 0.0 else x


@njit(inline="always", **_OPTS)
def _derivative_row(code, d, a, j, nb):
    if code == TANH:
        for n in range(nb):
            x = a[j, n]
            d[n] *= 1.0 - x * x
    elif code == SIGMOID:
        for n in range(nb):
            x = a[j, n]
            d[n] *= x * (1.0 - x)
    elif code == RELU:
        for n in range(nb):
            d[n] *= 1.0 if a[j, n] > 0.0 else 0.0


@njit(**_OPTS)
def mlp1_chunk(XT, TT, r0, r1, bs, W1, b1, W2, b2, code, head, scale,
               hb, z, g, d, m, s, dW1, db1, dW2, db2):
    """Accumulate the gradients of samples r0..r1 into dW1, db1, dW2, db2 (zeroed here)."""
    n_in, n_hidden = W1.shape
    n_out = W2.shape[1]
    for k in range(n_in):
        for j in range(n_hidden):
            dW1[k, j] = 0.0
    for j in range(n_hidden):
        db1[j] = 0.0
        for c in range(n_out):
            dW2[j, c] = 0.0
    for c in range(n_out):
        db2[c] = 0.0
    for n0 in range(r0, r1, bs):
        nb = min(bs, r1 - n0)
        # forward: hidden unit by hidden unit, logits accumulated on the way
        for c in range(n_out):
            bc = b2[c]
            for n in range(nb):
                z[c, n] = bc
        for j in range(n_hidden):
            bj = b1[j]
            for n in range(nb):
                hb[j, n] = bj
            for k in range(n_in):
                w = W1[k, j]
                for n in range(nb):
                    hb[j, n] += XT[k, n0 + n] * w
            _activate_row(code, hb, j, nb)
            for c in range(n_out):
                w = W2[j, c]
                for n in range(nb):
                    z[c, n] += hb[j, n] * w
        if head == HEAD_SOFTMAX:
            softmax_xent_block(z, TT, n0, nb, scale, g, m, s, False)
        else:
            squared_error_block(head, z, TT, n0, nb, scale, g, False)
        for c in range(n_out):
            acc = 0.0
            for n in range(nb):
                acc += g[c, n]
            db2[c] += acc
        # backward: the same sweep over the hidden units
        for j in range(n_hidden):
            w = W2[j, 0]
            for n in range(nb):
                d[n] = g[0, n] * w
            for c in range(1, n_out):
                w = W2[j, c]
                for n in range(nb):
                    d[n] += g[c, n] * w
            for c in range(n_out):
                acc = 0.0
                for n in range(nb):
                    acc += hb[j, n] * g[c, n]
                dW2[j, c] += acc
            _derivative_row(code, d, hb, j, nb)
            acc = 0.0
            for n in range(nb):
                acc += d[n]
            db1[j] += acc
            for k in range(n_in):
                acc = 0.0
                for n in range(nb):
                    acc += XT[k, n0 + n] * d[n]
                dW1[k, j] += acc


@njit(inline="always", **_OPTS)
def _views(flat, n_in, n_hidden, n_out):
    o1 = n_in * n_hidden
    o2 = o1 + n_hidden
    o3 = o2 + n_hidden * n_out
    return (flat[:o1].reshape((n_in, n_hidden)), flat[o1:o2],
            flat[o2:o3].reshape((n_hidden, n_out)), flat[o3:o3 + n_out])


@njit(inline="always", **_OPTS)
def _chunk_on(c, XT, TT, n_chunks, chunk_len, bs, W1, b1, W2, b2, code, head, scale, buf, pgc):
    n_in, n_hidden = W1.shape
    n_out = W2.shape[1]
    n = XT.shape[1]
    r0 = c * chunk_len
    r1 = min(n, r0 + chunk_len)
    o = n_hidden * bs
    hb = buf[:o].reshape((n_hidden, bs))
    z = buf[o:o + n_out * bs].reshape((n_out, bs))
    o += n_out * bs
    g = buf[o:o + n_out * bs].reshape((n_out, bs))
    o += n_out * bs
    d = buf[o:o + bs]
    m = buf[o + bs:o + 2 * bs]
    s = buf[o + 2 * bs:o + 3 * bs]
    dW1, db1, dW2, db2 = _views(pgc, n_in, n_hidden, n_out)
    mlp1_chunk(XT, TT, r0, r1, bs, W1, b1, W2, b2, code, head, scale, hb, z, g, d, m, s, dW1, db1, dW2, db2)


@njit(parallel=True, **_OPTS)
def mlp1_parallel(XT, TT, n_chunks, chunk_len, bs, W1, b1, W2, b2, code, head, scale, scratch, pg):
    for c in prange(n_chunks):
        _chunk_on(c, XT, TT, n_chunks, chunk_len, bs, W1, b1, W2, b2, code, head, scale,
                  scratch[get_thread_id()], pg[c])


@njit(**_OPTS)
def mlp1_train(passes, n_in, n_hidden, n_out, code, head, n_chunks, chunk_len, bs,
               theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, lr, l2, scale):
    """``passes`` updates of ``theta`` (W1, b1, W2, b2 flat) in place."""
    W1, b1, W2, b2 = _views(theta, n_in, n_hidden, n_out)
    n_p = grads.size
    for _ in range(passes):
        if n_chunks == 1:
            _chunk_on(0, XT, TT, 1, chunk_len, bs, W1, b1, W2, b2, code, head, scale, scratch[0], grads)
        else:
            mlp1_parallel(XT, TT, n_chunks, chunk_len, bs, W1, b1, W2, b2, code, head, scale, scratch, pg)
            for i in range(n_p):
                grads[i] = pg[0, i]
            for c in range(1, n_chunks):
                for i in range(n_p):
                    grads[i] += pg[c, i]
        gd_update(theta, grads, w_off, b_off, n_bias, lr, l2)
