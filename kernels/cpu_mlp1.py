"""One hidden layer, both layers fused: the whole training loop for I-H-C nets with
small I and C (tutorial 003's 2-H-2 moons model, XOR) in one compiled call.

Per block of samples (feature-major, vectorised over samples) one sweep over the
hidden units goes forward (hidden pre-activation, activation, logits), then the
loss head, then one sweep back (hidden delta, all four gradients). The block's
hidden activations (H x block) are the only scratch; the N x H activations are
never stored. Blocks are sized so that scratch stays in L1/L2. With minibatches,
each update first gathers its samples by index into small feature-major batch
buffers (the data itself is never copied or permuted), and the optimiser step
(``cpu_update``) follows every update inside the same call.

Samples split into a fixed number of chunks (from the sizes alone); each chunk
sums its own partial gradients and the chunks are added in order, so results
are bit-identical whatever ``NUMBA_NUM_THREADS``.

Compile time: the chunk kernels (``_chunk_2x2`` for the moons model, ``_chunk_any``)
are C-callable functions (``chunk_kernel``), compiled once per dtype and cached, and
the entry points (``train``, its chunked twin ``train_parallel``) call them by address,
as they call the optimiser step. So an entry point compiles only its loop, whatever
network it trains, and no function holds a second copy of a kernel: Numba links a
compiled callee's code into each caller, where LLVM optimises and emits it again, and
a parallel function's compile grows with all it holds. Fits of a handful of samples
(XOR-sized work) run ``tiny_entry``'s entry point instead, made per input and output
width where both are small, which inlines its sample-by-sample kernel.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import carray, get_thread_id, njit, prange, types
from numba.extending import overload

from .cpu_activation import (HEAD_IDENTITY, HEAD_SOFTMAX, activate, activation, derivative, grad_times_derivative,
                             head_activation)
from .cpu_math import (CACHE, FASTMATH, _is32, _vexp32, _vtanh32, _vtanh64, like, log1p_exp,
                       rational_exp_below_zero, vexp, vtanh)
from .cpu_softmax import softmax_xent_block
from .cpu_squared import squared_error_block, squared_error_block_types
from .cpu_ccall import DTYPES, c_call, c_call_float, c_kernel, value_types

# What a chunk computes (``mode``): its gradients; its gradients and the summed data loss of the
# same forward pass (the update after a logging point, whose forward gives that point's loss);
# or only that loss.
GRADIENTS, GRADIENTS_AND_LOSS, LOSS_ONLY = 0, 1, 2

# Helpers compiled on their own and cached, so a second caller of the same dtype loads them.
_INNER = dict(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
# Entry points: cached on disk, and free of the GIL so fits in threads run side by side.
_ENTRY = dict(nogil=True, **_INNER)
# Inlined where they are called. The loop takes the tiny kernel and the chunk runner as
# first-class functions: inlined into each entry point, they are direct calls there (a
# function passed to a compiled, not inlined, callee is a run-time object that Numba's
# cache cannot store).
_SHARED = dict(inline="always", fastmath=FASTMATH, error_model="numpy")
# Only prange loops become parallel: the other parfor conversions cost compile time for nothing here.
_PARALLEL = dict(parallel={"prange": True, "numpy": False, "comprehension": False, "reduction": False,
                           "inplace_binop": False, "setitem": False, "stencil": False, "fusion": False},
                 **_INNER)


@njit(**_INNER)
def _forward_block(XT, n0, nb, W1, b1, W2, b2, code, hb, z):
    """hb[:, :nb] = f(W1.T x + b1) and z[:, :nb] = W2.T hb + b2 for samples n0..n0+nb.

    A one-row ``hb`` (a forward alone keeps no activations for a backward pass) takes
    each hidden unit in turn, so a block can be long whatever the hidden width."""
    n_in, n_hidden = W1.shape
    n_out = W2.shape[1]
    last = hb.shape[0] - 1
    for c in range(n_out):
        bc = b2[c]
        for n in range(nb):
            z[c, n] = bc
    for j in range(n_hidden):
        r = min(j, last)
        bj = b1[j]
        for n in range(nb):
            hb[r, n] = bj
        for k in range(n_in):
            w = W1[k, j]
            xk = XT[k, n0:]  # indexed from 0: see _chunk_2x2
            for n in range(nb):
                hb[r, n] += xk[n] * w
        activate(code, hb, r, nb)
        for c in range(n_out):
            w = W2[j, c]
            for n in range(nb):
                z[c, n] += hb[r, n] * w


@njit(**_SHARED)
def _zero(dW1, db1, dW2, db2, n_in, n_out):
    """Explicit loops: slice assignment costs more than a whole tiny pass. The widths come as
    arguments: constants in most of ``tiny_entry``'s kernels."""
    for j in range(dW1.shape[1]):
        db1[j] = 0.0
        for k in range(n_in):
            dW1[k, j] = 0.0
        for c in range(n_out):
            dW2[j, c] = 0.0
    for c in range(n_out):
        db2[c] = 0.0


def _chunk_any(xt, tt, cols, n_samples, r0, r1, bs, theta, n_in, n_hidden, n_out, code, head, scale, mode, scratch,
               grads):
    """Gradients of samples r0..r1 into dW1, db1, dW2, db2 (zeroed here), and, unless ``mode``
    is GRADIENTS, the summed data loss of those samples (LOSS_ONLY: the loss alone).
    A C-callable kernel (``chunk_kernel``): the arrays come as pointers (``_pointer_views``)."""
    XT, TT, W1, b1, W2, b2, hb, z, g, d, m, s, dW1, db1, dW2, db2 = _pointer_views(
        xt, tt, cols, theta, n_in, n_hidden, n_out, bs, scratch, grads)
    scale = like(W1, scale)
    zero = like(W1, 0.0)  # accumulators in W1's precision
    loss = 0.0
    if mode != LOSS_ONLY:
        _zero(dW1, db1, dW2, db2, n_in, n_out)
    r1 = min(r1, n_samples)  # the padding is for the 2x2 kernel only
    for n0 in range(r0, r1, bs):
        nb = min(bs, r1 - n0)
        _forward_block(XT, n0, nb, W1, b1, W2, b2, code, hb, z)
        if head == HEAD_SOFTMAX:
            loss += softmax_xent_block(z, TT, n0, nb, scale, g, m, s, mode != GRADIENTS)
        else:
            loss += squared_error_block(head, z, TT, n0, nb, scale, g, mode != GRADIENTS)
        if mode == LOSS_ONLY:
            continue
        for c in range(n_out):
            acc = zero
            for n in range(nb):
                acc += g[c, n]
            db2[c] += acc
        # backward: the same sweep over the hidden units
        for j in range(n_hidden):
            w = W2[j, 0]
            for n in range(nb):
                d[0, n] = g[0, n] * w
            for c in range(1, n_out):
                w = W2[j, c]
                for n in range(nb):
                    d[0, n] += g[c, n] * w
            for c in range(n_out):
                acc = zero
                for n in range(nb):
                    acc += hb[j, n] * g[c, n]
                dW2[j, c] += acc
            grad_times_derivative(code, d, np.int64(0), hb, j, nb)  # a literal 0 would compile a second specialisation
            acc = zero
            for n in range(nb):
                acc += d[0, n]
            db1[j] += acc
            for k in range(n_in):
                acc = zero
                xk = XT[k, n0:]
                for n in range(nb):
                    acc += xk[n] * d[0, n]
                dW1[k, j] += acc
    return loss


# inlined into its loop: at XOR's 4 x 2-2-1 a call per pass was a fifth of the pass
@njit(**_SHARED)
def _chunk_tiny(XT, TT, n_samples, r0, r1, bs, n_in, n_out, W1, b1, W2, b2, code, head, scale, mode,
                hb, z, g, d, m, s, dW1, db1, dW2, db2):
    """``_chunk_any`` one sample at a time, for a handful of samples and units (XOR: 4 x 2-2-1):
    there, loops over blocks of samples would be all set-up and remainder. ``n_in`` and ``n_out``
    are constants of the entry point where both are small (``tiny_entry``)."""
    n_hidden = W1.shape[1]
    h = hb[:, 0]
    zz = z[:, 0]
    gg = g[:, 0]
    loss = 0.0
    if mode != LOSS_ONLY:
        _zero(dW1, db1, dW2, db2, n_in, n_out)
    for n in range(r0, min(r1, n_samples)):
        for j in range(n_hidden):
            acc = b1[j]
            for k in range(n_in):
                acc += XT[k, n] * W1[k, j]
            h[j] = activation(code, acc, True)
        for c in range(n_out):
            acc = b2[c]
            for j in range(n_hidden):
                acc += h[j] * W2[j, c]
            zz[c] = acc
        if head == HEAD_SOFTMAX:
            top = zz[0]
            for c in range(1, n_out):
                top = zz[c] if zz[c] > top else top
            total = like(top, 0.0)
            for c in range(n_out):
                gg[c] = math.exp(zz[c] - top)
                total += gg[c]
            if mode != GRADIENTS:
                loss += math.log(total) + top
                for c in range(n_out):
                    loss -= TT[c, n] * zz[c]
            if mode == LOSS_ONLY:
                continue
            inv = like(top, 1.0) / total
            for c in range(n_out):
                gg[c] = (gg[c] * inv - TT[c, n]) * scale
        else:
            out_code = head_activation(head)
            for c in range(n_out):
                y = activation(out_code, zz[c], True)
                diff = y - TT[c, n]
                if mode != GRADIENTS:
                    loss += 0.5 * diff * diff
                gg[c] = diff * derivative(out_code, y) * scale  # identity: exactly diff * scale
            if mode == LOSS_ONLY:
                continue
        for c in range(n_out):
            db2[c] += gg[c]
        for j in range(n_hidden):
            back = like(h[j], 0.0)
            for c in range(n_out):
                dW2[j, c] += h[j] * gg[c]
                back += gg[c] * W2[j, c]
            back *= derivative(code, h[j])
            db1[j] += back
            for k in range(n_in):
                dW1[k, j] += XT[k, n] * back
    return loss


@njit(**_INNER)
def _softmax2_grad64(za, zb, ta, tb, scale):
    """(softmax(za, zb) - (ta, tb)) * scale with one division and no exp polynomial.

    With m the larger logit, e = exp(small - m) = A / B (``rational_exp_below_zero``),
    so the probabilities are B / (A + B) and A / (A + B). An infinite or NaN logit
    makes both NaN, as exp(z - max z) does in the reference.
    """
    big = za > zb
    m = za if big else zb
    d = (zb if big else za) - m  # <= 0, or NaN
    a, b = rational_exp_below_zero(d)
    inv = 1.0 / (a + b)
    p_big = b * inv
    p_small = a * inv
    bad = (d != d) or (m - m != 0.0)
    pa = p_big if big else p_small
    pb = p_small if big else p_big
    pa = d if bad else pa
    pb = d if bad else pb
    return (pa - ta) * scale, (pb - tb) * scale


@njit(**_INNER)
def _softmax2_grad32(za, zb, ta, tb, scale):
    """``_softmax2_grad64`` in float32: e = exp(small - m) by Cephes' expf
    polynomial, probabilities 1 / (1 + e) and e / (1 + e)."""
    big = za > zb
    m = za if big else zb
    d = (zb if big else za) - m  # <= 0, or NaN
    a = _vexp32(d)  # exp(small - max): 0 for -inf, NaN handled below
    inv = np.float32(1.0) / (a + np.float32(1.0))
    p_small = a * inv
    bad = (d != d) or (m - m != np.float32(0.0))
    pa = inv if big else p_small
    pb = p_small if big else inv
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


def _chunk_2x2(xt, tt, cols, n_samples, r0, r1, bs, theta, n_in, n_hidden, n_out, code, head, scale, mode, scratch,
               grads):
    """``_chunk_any`` for 2 inputs, 2 softmax classes and tanh (the moons model), every
    loop over the samples of a block fused into one. Blocks are whole multiples of
    the vector width: ``XT``/``TT`` are padded with copies of real samples, whose
    gradient is set to exactly 0, so they add exact zeros."""
    XT, TT, W1, b1, W2, b2, hb, z, g, d, m, s, dW1, db1, dW2, db2 = _pointer_views(
        xt, tt, cols, theta, n_in, n_hidden, n_out, bs, scratch, grads)
    scale = like(W1, scale)
    x0 = XT[0]
    x1 = XT[1]
    t0 = TT[0]
    t1 = TT[1]
    z0 = z[0]
    z1 = z[1]
    zero = like(W1, 0.0)  # in W1's precision: a float64 literal would make float32 loops float64
    one = like(W1, 1.0)
    loss = 0.0
    if mode != LOSS_ONLY:
        _zero(dW1, db1, dW2, db2, n_in, n_out)
    acc_b0 = zero
    acc_b1 = zero
    for n0 in range(r0, r1, bs):
        nb = min(bs, r1 - n0)
        # the block's samples as views indexed from 0: an index n0 + n, whose sign LLVM cannot
        # know, makes every access wrap negative indices, and the loops gather instead of load
        bx0 = x0[n0:]
        bx1 = x1[n0:]
        bt0 = t0[n0:]
        bt1 = t1[n0:]
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
                h = vtanh(bj + bx0[n] * w0 + bx1[n] * w1)
                hb[j, n] = h
                z0[n] += h * v0
                z1[n] += h * v1
        if mode != GRADIENTS:  # the logged loss: log-sum-exp minus T.z over the real samples, in float64
            for n in range(min(nb, n_samples - n0)):
                za = np.float64(z0[n])
                zb = np.float64(z1[n])
                top = za if za > zb else zb
                low = zb if za > zb else za  # NaN (or inf - inf) below makes the loss NaN, as it must
                loss += top + log1p_exp(low - top) - (np.float64(bt0[n]) * za + np.float64(bt1[n]) * zb)
            if mode == LOSS_ONLY:
                continue
        # softmax + cross-entropy gradient, in place of the logits
        a0 = zero
        a1 = zero
        for n in range(nb):
            real = n0 + n < n_samples
            ga, gb = _softmax2_grad(z0[n], z1[n], bt0[n], bt1[n], scale)
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
                dd = (ga * v0 + gb * v1) * (one - h * h)  # tanh' from the output, inline: this kernel is tanh's
                s_d += dd
                s_x0 += bx0[n] * dd
                s_x1 += bx1[n] * dd
            dW2[j, 0] += s_h0
            dW2[j, 1] += s_h1
            db1[j] += s_d
            dW1[0, j] += s_x0
            dW1[1, j] += s_x1
    if mode != LOSS_ONLY:
        db2[0] = acc_b0
        db2[1] = acc_b1
    return loss


@njit(**_SHARED)
def _views(flat, n_in, n_hidden, n_out):
    o1 = n_in * n_hidden
    o2 = o1 + n_hidden
    o3 = o2 + n_hidden * n_out
    return (flat[:o1].reshape((n_in, n_hidden)), flat[o1:o2],
            flat[o2:o3].reshape((n_hidden, n_out)), flat[o3:o3 + n_out])


@njit(**_SHARED)
def _scratch(buf, n_hidden, n_out, bs):
    o = n_hidden * bs
    hb = buf[:o].reshape((n_hidden, bs))
    z = buf[o:o + n_out * bs].reshape((n_out, bs))
    o += n_out * bs
    g = buf[o:o + n_out * bs].reshape((n_out, bs))
    o += n_out * bs
    d = buf[o:o + bs].reshape((1, bs))  # one delta row, in the 2-D form the activation helpers take
    return hb, z, g, d, buf[o + bs:o + 2 * bs], buf[o + 2 * bs:o + 3 * bs]


@njit(**_SHARED)
def _pointer_views(xt, tt, cols, theta, n_in, n_hidden, n_out, bs, scratch, grads):
    """A chunk kernel's arrays from its pointers: the data (``cols`` columns), the parameters and
    their gradients (``_views``) and the block buffers (``_scratch``). Views: nothing is copied."""
    n_params = (n_in + 1) * n_hidden + (n_hidden + 1) * n_out
    W1, b1, W2, b2 = _views(carray(theta, (n_params,)), n_in, n_hidden, n_out)
    dW1, db1, dW2, db2 = _views(carray(grads, (n_params,)), n_in, n_hidden, n_out)
    hb, z, g, d, m, s = _scratch(carray(scratch, (bs * (n_hidden + 2 * n_out + 3),)), n_hidden, n_out, bs)
    return carray(xt, (n_in, cols)), carray(tt, (n_out, cols)), W1, b1, W2, b2, hb, z, g, d, m, s, dW1, db1, dW2, db2


@njit(**_PARALLEL)
def _side_by_side(kernel, mode, n_samples, n_rows, n_chunks, chunk_len, bs, XT, TT, theta, n_in, n_hidden, n_out,
                  code, head, scale, scratch, pg, losses):
    """The chunks side by side, each through the chunk kernel at address ``kernel``, with the
    block buffers of the thread it runs on and partial gradients (or losses) of its own."""
    cols = np.int64(XT.shape[1])
    for c in prange(n_chunks):
        r0 = np.int64(c * chunk_len)
        losses[c] = c_call_float(kernel, (XT, TT, cols, n_samples, r0, np.int64(min(n_rows, r0 + chunk_len)), bs,
                                          theta, n_in, n_hidden, n_out, code, head, scale, mode,
                                          scratch[get_thread_id()], pg[c]))


@njit(**_SHARED)
def _train(chunk, side_by_side, n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel,
           n_chunks, chunk_len, bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T, batch,
           interval):
    """The update loop shared by every entry point. Each update's gradients come from the chunk
    kernel at address ``kernel`` (``chunk_kernel``): in one call (``side_by_side`` None), or
    chunk by chunk on several threads, the chunks added in order (the same bits on any thread
    count). ``chunk``, where not None, is a kernel inlined instead, on views made once
    (``_chunk_tiny``: at XOR's size, a call per update would be a fifth of the update).

    ``n_updates`` steps (forward and backward on the data or a gathered minibatch, then
    ``update``), then with ``want_loss`` the summed data loss of all samples: in one go on
    the full data, or batch-sized range by range through the batch buffers.

    ``record`` (float64, rows x 2) gets (summed data loss, sum of squared weights) at the
    final parameters in its last row when ``want_loss``. With ``stride`` > 0 (full batch
    only), row k - 1 also gets them after ``k * stride`` updates (the logging points before
    the last), from the forward pass of the update that follows: a fit logging every few
    updates pays no extra forward for it.
    """
    batch_rows, order, bounds, gather, meta = batch
    lrs, update, addresses, step0, record, stride = interval
    W1, b1, W2, b2 = _views(theta, n_in, n_hidden, n_out)
    l2 = hyper[0]
    hb, z, g, d, m, s = _scratch(scratch[0], n_hidden, n_out, bs)
    dW1, db1, dW2, db2 = _views(grads, n_in, n_hidden, n_out)
    n_p = grads.size
    n_loss = 0 if not want_loss else 1 if batch_rows == 0 else -(-n_samples // batch_rows)
    loss = 0.0
    to_point = stride  # updates left to the next logging point (a countdown: no division per update)
    for p in range(n_updates + n_loss):
        loss_only = p >= n_updates
        logged = stride > 0 and p > 0 and to_point == 0 and not loss_only
        if logged:
            to_point = stride
        to_point -= 1
        mode = np.int64(LOSS_ONLY if loss_only else GRADIENTS_AND_LOSS if logged else GRADIENTS)
        if batch_rows > 0:  # XT/TT are the batch buffers; meta and hyper[3] say what is in them
            c_call(gather, (X, T, order, bounds, XT, TT, hyper, meta, p))
        # real samples, columns with the padding (the 2x2 kernel masks it, the general one stops
        # at n_real) and the loss scale: the full data's (set before the call) or the batch's
        n_real, n_rows, scale = meta[0], meta[1], hyper[3]
        if side_by_side is None:
            if chunk is None:
                part = c_call_float(kernel, (XT, TT, np.int64(XT.shape[1]), n_real, np.int64(0), n_rows, bs, theta,
                                             n_in, n_hidden, n_out, code, head, np.float64(scale), mode, scratch[0],
                                             grads))
            else:
                part = chunk(XT, TT, n_real, np.int64(0), n_rows, bs, n_in, n_out, W1, b1, W2, b2, code, head, scale,
                             mode, hb, z, g, d, m, s, dW1, db1, dW2, db2)
        else:
            losses = np.empty(n_chunks)
            side_by_side(kernel, mode, n_real, n_rows, n_chunks, chunk_len, bs, XT, TT, theta, n_in, n_hidden, n_out,
                         code, head, np.float64(scale), scratch, pg, losses)
            part = 0.0
            for c in range(n_chunks):
                part += losses[c]
            if not loss_only:
                for i in range(n_p):
                    grads[i] = pg[0, i]
                for c in range(1, n_chunks):
                    for i in range(n_p):
                        grads[i] += pg[c, i]
        if loss_only:
            loss += part
        if logged or (loss_only and p == n_updates + n_loss - 1):  # one place, so one copy of the sum
            row = p // stride - 1 if logged else record.shape[0] - 1
            record[row, 0] = part if logged else loss
            record[row, 1] = _sum_of_squared_weights(W1, W2)
        if not loss_only:
            c_call(update, (theta, addresses, lrs[p], np.float64(l2), step0 + p + 1))
    return loss


@njit(inline="always", error_model="numpy")
def _sum_of_squared_weights(W1, W2):
    """sum(W1**2) + sum(W2**2) in float64 (the L2 term's sum, biases excluded), in order (no fast
    math: once per logging point, so small code matters more than speed); one function, so a
    loss logged before an update and one logged at the end of a call agree to the bit."""
    total = 0.0
    for k in range(W1.shape[0]):
        for j in range(W1.shape[1]):
            total += np.float64(W1[k, j]) * np.float64(W1[k, j])
    for j in range(W2.shape[0]):
        for c in range(W2.shape[1]):
            total += np.float64(W2[j, c]) * np.float64(W2[j, c])
    return total


# ------------------------------------------------------------- entry points
# Same arguments for all three: ``n_updates`` steps of ``theta`` (W1, b1, W2, b2 flat) and
# the optimiser state in place, then, with ``want_loss``, the summed data loss of all
# samples at the new parameters; ``kernel`` is the address of the chunk kernel (``chunk_kernel``;
# unused by ``train_tiny``). Full batch (``batch_rows`` 0): ``XT``/``TT`` are the data
# feature-major, the first ``n_samples`` columns real, the rest (up to a multiple of the
# block granule) padding for the 2x2 kernel. Minibatches (``batch`` = (batch_rows, order,
# bounds, gather, meta)): ``XT``/``TT`` are batch buffers, and update u gathers samples
# ``order[bounds[u]:bounds[u + 1]]`` of ``X``/``T`` into them (``batch_rows`` at most, padded
# to whole blocks) with the compiled gather at address ``gather`` (``cpu_gather``).
# ``interval`` = (lrs, update, addresses, step0, record, stride): ``update`` is the address of
# the optimiser step (``cpu_update``), run with ``lrs[u]`` and step ``step0 + u + 1``; ``record``
# and ``stride`` are the logged losses (see ``_train``). ``hyper``
# is [l2, full-batch scale, mean?, this step's scale]; ``meta`` (``cpu_gather.META``) starts
# [this step's samples, columns].
@njit(**_ENTRY)
def train(n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel, n_chunks, chunk_len, bs, theta,
          grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T, batch, interval):
    return _train(None, None, n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel, n_chunks,
                  chunk_len, bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T, batch,
                  interval)


@njit(**_ENTRY)
def train_parallel(n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel, n_chunks, chunk_len,
                   bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T, batch, interval):
    return _train(None, _side_by_side, n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel,
                  n_chunks, chunk_len, bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T,
                  batch, interval)


# Input and output widths up to which fits of a few samples get an entry point made for their
# widths (``tiny_entry``): the tutorials' two-input networks, where unrolled loops over them pay.
TINY_CONSTANT_WIDTH = 2


@njit(**_ENTRY)
def train_tiny_any(n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel, n_chunks, chunk_len,
                   bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T, batch, interval):
    return _train(_chunk_tiny, None, n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel,
                  n_chunks, chunk_len, bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T,
                  batch, interval)


def tiny_entry(n_in: int, n_out: int):
    """The entry point of fits too small for blocks (``train_tiny`` in a plan). For at most
    ``TINY_CONSTANT_WIDTH`` inputs and outputs it is made for those widths: constants of the
    function, so LLVM unrolls the loops over them (XOR's 2-2-1: 220-270 ns a pass against 350-370
    with the widths known only at run time, in one process). Wider fits share ``train_tiny_any``,
    so each new shape of a few samples does not compile an entry point of its own (a hypothesis
    test drawing 1 to 300 inputs and 1 to 3 outputs compiled 22 before). The hidden width always
    stays a run-time value, so a sweep over it compiles once."""
    if n_in > TINY_CONSTANT_WIDTH or n_out > TINY_CONSTANT_WIDTH:
        return train_tiny_any
    return _tiny_entry_for(int(n_in), int(n_out))


@functools.lru_cache(maxsize=None)
def _tiny_entry_for(n_in: int, n_out: int):
    """``tiny_entry`` made for ``n_in`` inputs and ``n_out`` outputs (Numba's disk cache keys each
    variant by those constants)."""
    def train_tiny(n_updates, want_loss, n_samples, any_in, n_hidden, any_out, code, head, kernel, n_chunks,
                   chunk_len, bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T, batch,
                   interval):
        return _train(_chunk_tiny, None, n_updates, want_loss, n_samples, n_in, n_hidden, n_out, code, head, kernel,
                      n_chunks, chunk_len, bs, theta, grads, XT, TT, scratch, pg, w_off, b_off, n_bias, hyper, X, T,
                      batch, interval)

    return njit(**_ENTRY)(train_tiny)


# ------------------------------------------------------------ chunk kernels
# One C-callable kernel per chunk kernel and dtype: the gradients (and loss) of samples
# r0..r1 into ``grads`` (flat, theta's layout), from the flat ``theta`` and one thread's
# ``scratch`` row; ``XT``/``TT`` are ``cols`` columns wide. Called by address, so every
# entry point (serial or chunked, any chunk kernel) compiles only the call.
@functools.lru_cache(maxsize=None)
def _chunk_signature(dtype: str):
    p, i = types.CPointer(DTYPES[dtype]), types.int64
    return types.float64(p, p, i, i, i, i, i, p, i, i, i, i, i, types.float64, i, p, p)


CHUNK_KERNELS = {"2x2": _chunk_2x2, "any": _chunk_any}


def chunk_kernel(name: str, dtype: str, *, cached_only: bool = False):
    """The C-callable chunk kernel ``name`` (``CHUNK_KERNELS``) for ``dtype`` (compiled on first
    use, then loaded from the disk cache); with ``cached_only``, whether it is made or on disk."""
    return c_kernel(CHUNK_KERNELS[name], _chunk_signature(dtype), cached_only=cached_only)


def late_callees(name: str, dtype: str, entry: str) -> list:
    """(function, argument types) for separately compiled functions chunk kernel ``name`` calls, in
    the types it calls them with, in the order the kernel's compile reaches them. A fit compiles
    these while a helper process compiles the kernel (``compile_aside``), which then finds them
    in the cache: the helper's compile is the longer one. For ``2x2`` that is both of its callees,
    the tanh first: the helper spends about 0.9 s starting Python, importing Numba and typing the
    kernel's set-up before it needs the tanh, which the fit has made 0.35 s after it starts
    (timelines of both processes, tutorial 003 float64 on 2 cores: the fit 0.25 s shorter). The
    general kernel's first callees (the activations' loops) stay with the helper, which reaches
    them before the fit could have them ready. ``entry`` does not change the list: every
    one-hidden-layer entry point is about as short a compile."""
    f, a1, a2 = value_types(dtype)
    i = types.int64
    if name == "2x2":
        return [(_vtanh32 if dtype == "float32" else _vtanh64, (f,)),
                (_softmax2_grad32 if dtype == "float32" else _softmax2_grad64, (f,) * 5)]
    return [(grad_times_derivative, (i, a2, i, a2, i, i)),
            (squared_error_block, squared_error_block_types(dtype)),
            (softmax_xent_block, (a2, a2, i, i, f, a2, a1, a1, types.boolean))]


def compile_aside(name: str, dtype: str) -> None:
    """What a helper process compiles beside a fit's entry point: its chunk kernel."""
    chunk_kernel(name, dtype)


# ------------------------------------------------------------------ predict
@njit(**_INNER)
def _predict_rows(XT, r0, r1, bs, W1, b1, W2, b2, code, head, hb, z, m, s, out):
    """out[:, r0:r1] = the head outputs (softmax, sigmoid or identity) of samples r0..r1."""
    n_out = W2.shape[1]
    for n0 in range(r0, r1, bs):
        nb = min(bs, r1 - n0)
        _forward_block(XT, n0, nb, W1, b1, W2, b2, code, hb, z)
        if head == HEAD_SOFTMAX:
            for n in range(nb):
                m[n] = z[0, n]
                s[n] = 0.0
            for c in range(1, n_out):
                for n in range(nb):
                    m[n] = z[c, n] if z[c, n] > m[n] else m[n]
            for c in range(n_out):
                for n in range(nb):
                    z[c, n] = vexp(z[c, n] - m[n])
                    s[n] += z[c, n]
            for n in range(nb):
                s[n] = like(s, 1.0) / s[n]
            for c in range(n_out):
                for n in range(nb):
                    z[c, n] *= s[n]
        elif head != HEAD_IDENTITY:
            for c in range(n_out):
                activate(head_activation(head), z, c, nb)
        for c in range(n_out):
            oc = out[c, n0:]
            for n in range(nb):
                oc[n] = z[c, n]


@njit(**_ENTRY)
def predict(n_samples, n_in, n_hidden, n_out, code, head, bs, theta, XT, scratch, out):
    """Head outputs, feature-major (``out`` is n_out x n_samples), without the N x H activations:
    ``scratch`` holds one hidden row and the block's logits (``_scratch`` with one hidden row)."""
    W1, b1, W2, b2 = _views(theta, n_in, n_hidden, n_out)
    hb, z, g, d, m, s = _scratch(scratch[0], 1, n_out, bs)
    _predict_rows(XT, np.int64(0), n_samples, bs, W1, b1, W2, b2, code, head, hb, z, m, s, out)


@njit(parallel=True, **_ENTRY)
def predict_parallel(n_samples, n_in, n_hidden, n_out, code, head, n_chunks, chunk_len, bs, theta, XT, scratch,
                     out):
    """``predict`` with the samples in chunks across threads."""
    W1, b1, W2, b2 = _views(theta, n_in, n_hidden, n_out)
    for c in prange(n_chunks):
        r0 = c * chunk_len
        hb, z, g, d, m, s = _scratch(scratch[get_thread_id()], 1, n_out, bs)
        _predict_rows(XT, r0, min(n_samples, r0 + chunk_len), bs, W1, b1, W2, b2, code, head, hb, z, m, s, out)
