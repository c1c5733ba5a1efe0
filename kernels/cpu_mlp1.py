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
from numba.extending import overload

from .cpu_activation import IDENTITY, RELU, SIGMOID, TANH
import numpy as np

from .cpu_math import (_EP0, _EP1, _EP2, _EQ0, _EQ1, _EQ2, _EQ3, _EXP_MIN, _LN2_HI, _LN2_LO, _LOG2E, FASTMATH,
                       _is32, _pow2, _vexp32, like, vsigmoid, vtanh)
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
            v[j, n] = like(x, 0.0) if x < 0.0 else x


@njit(inline="always", **_OPTS)
def _derivative_row(code, d, a, j, nb):
    if code == TANH:
        for n in range(nb):
            x = a[j, n]
            d[n] *= like(x, 1.0) - x * x
    elif code == SIGMOID:
        for n in range(nb):
            x = a[j, n]
            d[n] *= x * (like(x, 1.0) - x)
    elif code == RELU:
        for n in range(nb):
            d[n] *= like(d, 1.0) if a[j, n] > 0.0 else like(d, 0.0)


@njit(**_OPTS)
def mlp1_chunk(XT, TT, r0, r1, bs, W1, b1, W2, b2, code, head, scale,
               hb, z, g, d, m, s, dW1, db1, dW2, db2):
    """Accumulate the gradients of samples r0..r1 into dW1, db1, dW2, db2 (zeroed here)."""
    n_in, n_hidden = W1.shape
    n_out = W2.shape[1]
    zero = like(W1, 0.0)  # accumulators in W1's precision, as in _sweep_2x2
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
            acc = zero
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
                acc = zero
                for n in range(nb):
                    acc += hb[j, n] * g[c, n]
                dW2[j, c] += acc
            _derivative_row(code, d, hb, j, nb)
            acc = zero
            for n in range(nb):
                acc += d[n]
            db1[j] += acc
            for k in range(n_in):
                acc = zero
                for n in range(nb):
                    acc += XT[k, n0 + n] * d[n]
                dW1[k, j] += acc


@njit(inline="always", **_OPTS)
def _act(code, x):
    """The hidden activation; ``code`` is a constant wherever this is inlined."""
    if code == TANH:
        return vtanh(x)
    if code == SIGMOID:
        return vsigmoid(x)
    if code == RELU:
        return like(x, 0.0) if x < 0.0 else x  # NaN stays NaN, as np.maximum
    return x


@njit(inline="always", **_OPTS)
def _softmax2_grad64(za, zb, ta, tb, scale):
    """(softmax(za, zb) - (ta, tb)) * scale with one division and no exp polynomial.

    With m the larger logit, e = exp(small - m) = A / B (Cephes' rational exp,
    scaled in two steps so subnormal results come out right), so the
    probabilities are B / (A + B) and A / (A + B). An infinite or NaN logit
    makes both NaN, as exp(z - max z) does in the reference.
    """
    big = za > zb
    m = za if big else zb
    d = (zb if big else za) - m  # <= 0, or NaN
    dc = max(d, -746.0)
    k = np.floor(dc * _LOG2E + 0.5)
    r = (dc - k * _LN2_HI) - k * _LN2_LO
    rr = r * r
    pr = ((_EP0 * rr + _EP1) * rr + _EP2) * r
    qr = ((_EQ0 * rr + _EQ1) * rr + _EQ2) * rr + _EQ3
    n = np.int64(k)
    half = n >> 1
    a = (qr + pr) * _pow2(half) * _pow2(n - half)
    a = 0.0 if d < _EXP_MIN else a
    b = qr - pr
    inv = 1.0 / (a + b)
    p_big = b * inv
    p_small = a * inv
    bad = (d != d) or (m - m != 0.0)
    pa = p_big if big else p_small
    pb = p_small if big else p_big
    pa = d if bad else pa
    pb = d if bad else pb
    return (pa - ta) * scale, (pb - tb) * scale


@njit(inline="always", **_OPTS)
def _softmax2_grad32(za, zb, ta, tb, scale):
    """``_softmax2_grad64`` in float32: e = exp(small - m) by Cephes' expf
    polynomial, probabilities 1 / (1 + e) and e / (1 + e)."""
    big = za > zb
    m = za if big else zb
    d = (zb if big else za) - m  # <= 0, or NaN
    a = _vexp32(d)  # exp(small - max): 0 for -inf, NaN handled below
    inv = np.float32(1.0) / (a + np.float32(1.0))
    p_big = inv
    p_small = a * inv
    bad = (d != d) or (m - m != np.float32(0.0))
    pa = p_big if big else p_small
    pb = p_small if big else p_big
    pa = d if bad else pa
    pb = d if bad else pb
    return (pa - ta) * scale, (pb - tb) * scale


def _softmax2_grad(za, zb, ta, tb, scale):
    """(softmax(za, zb) - (ta, tb)) * scale in the logits' precision."""


@overload(_softmax2_grad, inline="always")
def _ov_softmax2_grad(za, zb, ta, tb, scale):
    if _is32(za):
        return lambda za, zb, ta, tb, scale: _softmax2_grad32(za, zb, ta, tb, scale)
    return lambda za, zb, ta, tb, scale: _softmax2_grad64(za, zb, ta, tb, scale)


@njit(**_OPTS)
def mlp1_chunk_2x2(XT, TT, n_samples, r0, r1, bs, W1, b1, W2, b2, code, scale, hb, z, dW1, db1, dW2, db2):
    """``mlp1_chunk`` for 2 inputs, 2 softmax classes (the moons model), every loop over
    the samples of a block fused into one; blocks are whole multiples of the vector
    width: ``XT``/``TT`` are padded with copies of real samples, whose gradient
    is set to exactly 0, so they add exact zeros (finite runs are unaffected).

    tanh only (the tutorial's activation): every other activation takes
    ``mlp1_chunk``, which keeps the cold compile time down.
    """
    _sweep_2x2(TANH, XT, TT, n_samples, r0, r1, bs, W1, b1, W2, b2, scale, hb, z, dW1, db1, dW2, db2)


@njit(inline="always", **_OPTS)
def _sweep_2x2(code, XT, TT, n_samples, r0, r1, bs, W1, b1, W2, b2, scale, hb, z, dW1, db1, dW2, db2):
    n_hidden = W1.shape[1]
    x0 = XT[0]
    x1 = XT[1]
    t0 = TT[0]
    t1 = TT[1]
    z0 = z[0]
    z1 = z[1]
    zero = like(W1, 0.0)  # in W1's precision: a float64 literal would make float32 loops float64
    one = like(W1, 1.0)
    for j in range(n_hidden):
        db1[j] = zero
        dW1[0, j] = zero
        dW1[1, j] = zero
        dW2[j, 0] = zero
        dW2[j, 1] = zero
    acc_b0 = zero
    acc_b1 = zero
    for n0 in range(r0, r1, bs):
        nb = min(bs, r1 - n0)
        c0 = b2[0]
        c1 = b2[1]
        for n in range(nb):
            z0[n] = c0
            z1[n] = c1
        # forward, hidden unit by hidden unit
        for j in range(n_hidden):
            bj = b1[j]
            w0 = W1[0, j]
            w1 = W1[1, j]
            v0 = W2[j, 0]
            v1 = W2[j, 1]
            for n in range(nb):
                h = _act(code, bj + x0[n0 + n] * w0 + x1[n0 + n] * w1)
                hb[j, n] = h
                z0[n] += h * v0
                z1[n] += h * v1
        # softmax + cross-entropy gradient, in place of the logits
        a0 = zero
        a1 = zero
        for n in range(nb):
            real = n0 + n < n_samples
            ga, gb = _softmax2_grad(z0[n], z1[n], t0[n0 + n], t1[n0 + n], scale)
            ga = ga if real else zero
            gb = gb if real else zero
            z0[n] = ga
            z1[n] = gb
            a0 += ga
            a1 += gb
        acc_b0 += a0
        acc_b1 += a1
        # backward, the same sweep
        for j in range(n_hidden):
            v0 = W2[j, 0]
            v1 = W2[j, 1]
            s_h0 = zero
            s_h1 = zero
            s_d = zero
            s_x0 = zero
            s_x1 = zero
            for n in range(nb):
                h = hb[j, n]
                ga = z0[n]
                gb = z1[n]
                s_h0 += h * ga
                s_h1 += h * gb
                if code == TANH:
                    fp = one - h * h
                elif code == SIGMOID:
                    fp = h * (one - h)
                elif code == RELU:
                    fp = one if h > zero else zero
                else:
                    fp = one
                dd = (ga * v0 + gb * v1) * fp
                s_d += dd
                s_x0 += x0[n0 + n] * dd
                s_x1 += x1[n0 + n] * dd
            dW2[j, 0] += s_h0
            dW2[j, 1] += s_h1
            db1[j] += s_d
            dW1[0, j] += s_x0
            dW1[1, j] += s_x1
    db2[0] = acc_b0
    db2[1] = acc_b1


@njit(inline="always", **_OPTS)
def _views(flat, n_in, n_hidden, n_out):
    o1 = n_in * n_hidden
    o2 = o1 + n_hidden
    o3 = o2 + n_hidden * n_out
    return (flat[:o1].reshape((n_in, n_hidden)), flat[o1:o2],
            flat[o2:o3].reshape((n_hidden, n_out)), flat[o3:o3 + n_out])


@njit(inline="always", **_OPTS)
def _scratch(buf, n_hidden, n_out, bs):
    o = n_hidden * bs
    hb = buf[:o].reshape((n_hidden, bs))
    z = buf[o:o + n_out * bs].reshape((n_out, bs))
    o += n_out * bs
    g = buf[o:o + n_out * bs].reshape((n_out, bs))
    o += n_out * bs
    return hb, z, g, buf[o:o + bs], buf[o + bs:o + 2 * bs], buf[o + 2 * bs:o + 3 * bs]


@njit(inline="always", **_OPTS)
def _chunk(fast, n_samples, r0, r1, XT, TT, bs, W1, b1, W2, b2, code, head, scale, buf, pgc):
    n_in, n_hidden = W1.shape
    n_out = W2.shape[1]
    hb, z, g, d, m, s = _scratch(buf, n_hidden, n_out, bs)
    dW1, db1, dW2, db2 = _views(pgc, n_in, n_hidden, n_out)
    if fast:
        mlp1_chunk_2x2(XT, TT, n_samples, r0, r1, bs, W1, b1, W2, b2, code, scale, hb, z, dW1, db1, dW2, db2)
    else:
        mlp1_chunk(XT, TT, r0, r1, bs, W1, b1, W2, b2, code, head, scale, hb, z, g, d, m, s,
                   dW1, db1, dW2, db2)


@njit(parallel=True, **_OPTS)
def mlp1_parallel(fast, n_samples, n_rows, XT, TT, n_chunks, chunk_len, bs, W1, b1, W2, b2, code, head, scale,
                  scratch, pg):
    for c in prange(n_chunks):
        r0 = c * chunk_len
        _chunk(fast, n_samples, r0, min(n_rows, r0 + chunk_len), XT, TT, bs, W1, b1, W2, b2, code, head, scale,
               scratch[get_thread_id()], pg[c])


@njit(**_OPTS)
def mlp1_train(passes, n_samples, n_in, n_hidden, n_out, code, head, n_chunks, chunk_len, bs,
               theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper):
    """``passes`` updates of ``theta`` (W1, b1, W2, b2 flat) in place.

    ``XT``/``TT`` are feature-major, the first ``n_samples`` columns real, the
    rest (up to a multiple of the block granule) padding for the 2x2 kernel.
    """
    W1, b1, W2, b2 = _views(theta, n_in, n_hidden, n_out)
    lr = hyper[0]
    l2 = hyper[1]
    scale = hyper[2]
    fast = n_in == 2 and n_out == 2 and head == HEAD_SOFTMAX and code == TANH
    n_rows = XT.shape[1] if fast else n_samples  # the fast kernel runs over the padding, masked
    n_p = grads.size
    # views made once: reshapes and reference counts cost more than a whole tiny pass
    hb, z, g, d, m, s = _scratch(scratch[0], n_hidden, n_out, bs)
    dW1, db1, dW2, db2 = _views(grads, n_in, n_hidden, n_out)
    for _ in range(passes):
        if n_chunks == 1:
            if fast:
                mlp1_chunk_2x2(XT, TT, n_samples, 0, n_rows, bs, W1, b1, W2, b2, code, scale, hb, z,
                               dW1, db1, dW2, db2)
            else:
                mlp1_chunk(XT, TT, 0, n_rows, bs, W1, b1, W2, b2, code, head, scale, hb, z, g, d, m, s,
                           dW1, db1, dW2, db2)
        else:
            mlp1_parallel(fast, n_samples, n_rows, XT, TT, n_chunks, chunk_len, bs, W1, b1, W2, b2, code, head,
                          scale, scratch, pg)
            for i in range(n_p):
                grads[i] = pg[0, i]
            for c in range(1, n_chunks):
                for i in range(n_p):
                    grads[i] += pg[c, i]
        gd_update(theta, grads, w_off, b_off, n_bias, lr, l2)
