"""The whole training loop in one compiled call: a logging interval of updates, full
batch or on minibatches gathered by index, each followed by the optimiser step
(``cpu_update``, called through a function pointer), then the loss of all samples.

The network is described by flat arrays so one specialisation per dtype serves
every depth, width, activation and head:

* ``theta``/``grads``: all parameters laid out W0, b0, W1, b1, ... (``w_off``);
* units: a BLAS layer (``UNIT_BLAS``) or a run of fused layers (``UNIT_FUSED``,
  layers ``t0..t1``) that streams blocks of samples through explicit loops;
* ``acts``/``deltas``: flat sample-major buffers, only for the layer outputs a
  BLAS layer needs or a fused run hands on (``act_off``, -1 where not stored).

Fused runs split the samples into a fixed number of chunks (from the sizes
alone, never the thread count); each chunk sums its own partial gradients and
the chunks are added in order, so results are bit-identical for any
``NUMBA_NUM_THREADS``.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import carray, get_thread_id, njit, prange, types

from .cpu_activation import HEAD_SOFTMAX, IDENTITY, activate, grad_times_derivative
from .cpu_dense import backward_block, bias_activation_rows, forward_block
from .cpu_math import CACHE, FASTMATH, like
from .cpu_softmax import softmax_xent_block, softmax_xent_rows
from .cpu_squared import squared_error_block, squared_error_rows
from .cpu_ccall import DTYPES, c_call, c_call_float, c_kernel, value_types

UNIT_BLAS, UNIT_FUSED = 0, 1
MODE_FORWARD, MODE_BACKWARD, MODE_HEAD, MODE_LOSS = 0, 1, 2, 3

# Compiled into the entry points that call them; cached too, so a second entry point of
# the same dtype (say, the chunked twin of the serial one) loads them instead of compiling.
_OPTS = dict(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
# Only prange loops become parallel: the other parfor conversions cost compile time for nothing here.
_PARALLEL = dict(parallel={"prange": True, "numpy": False, "comprehension": False, "reduction": False,
                           "inplace_binop": False, "setitem": False, "stencil": False, "fusion": False},
                 **_OPTS)
# Entry points: cached on disk, and free of the GIL so fits in threads run side by side.
_ENTRY = dict(nogil=True, **_OPTS)
# The loop takes the fused-run runner as a first-class function and is inlined into
# each entry point, so the runner is a direct call there (a function passed to a
# compiled, not inlined, callee is a run-time object that Numba's cache cannot store).
_SHARED = dict(inline="always", fastmath=FASTMATH, error_model="numpy")


@njit(**_OPTS)
def _weights(theta, w_off, sizes, layer):
    fan_in = sizes[layer]
    fan_out = sizes[layer + 1]
    w0 = w_off[layer]
    return theta[w0:w0 + fan_in * fan_out].reshape((fan_in, fan_out))


@njit(**_OPTS)
def _bias(theta, w_off, sizes, layer):
    b0 = w_off[layer] + sizes[layer] * sizes[layer + 1]
    return theta[b0:b0 + sizes[layer + 1]]


@njit(**_OPTS)
def _stored(buf, act_off, sizes, layer, n):
    o = act_off[layer]
    w = sizes[layer + 1]
    return buf[o:o + n * w].reshape((n, w))


@njit(**_OPTS)
def _block(buf, off, rows, bs):
    return buf[off:off + rows * bs].reshape((rows, bs))


def _fused_chunk_for(loss_head: str):
    """The fused-run kernel for one kind of loss head, ``"softmax"`` or ``"squared"`` (sigmoid and
    identity outputs): a constant of the function it returns, so Numba leaves the other head's
    code out (half a second of its compile on 2 cores). Numba's disk cache keys each variant by
    that constant, so both live in the same cache files."""
    softmax = {"softmax": True, "squared": False}[loss_head]

    def fused_chunk(mode, t0, t1, sizes, codes, head, w_off, theta, n_samples, xt, tt, acts, deltas, act_off, r0, r1,
                    bs, buf, pgrad, pg_off, scale, n_layers, n_theta, x_cols, t_cols, n_stored, n_buf, n_pg):
        """Stream samples r0..r1 through fused layers t0..t1 in blocks of ``bs``: the C-callable
        kernel of the fused runs (``chunk_kernel``), its arrays as pointers with the sizes it
        views them with (nothing is copied). Written as one function, not a wrapper around an
        inlined one: Numba's inlining copies a large function's IR at a cost of half a second.

        MODE_FORWARD stores the run's output; MODE_BACKWARD recomputes the run's
        activations and back-propagates the stored delta at its output;
        MODE_HEAD goes forward, through the loss head and back in one sweep;
        MODE_LOSS goes forward and returns the summed data loss. The partial
        gradients of this chunk accumulate in ``pgrad``; when the run does not start
        at the input, the delta at its input is stored for the layer before.
        """
        sizes = carray(sizes, (n_layers + 1,))
        codes = carray(codes, (n_layers,))
        w_off = carray(w_off, (n_layers,))
        theta = carray(theta, (n_theta,))
        XT = carray(xt, (sizes[0], x_cols))
        TT = carray(tt, (sizes[n_layers], t_cols))
        acts = carray(acts, (n_stored,))
        deltas = carray(deltas, (n_stored,))
        act_off = carray(act_off, (n_layers,))
        buf = carray(buf, (n_buf,))
        pgrad = carray(pgrad, (n_pg,))
        pg_off = carray(pg_off, (n_layers,))
        scale = like(theta, scale)
        n_in = sizes[t0]
        maxw = n_in
        for layer in range(t0, t1 + 1):
            maxw = max(maxw, sizes[layer + 1])
        act_base = n_in * bs
        top = act_base
        for layer in range(t0, t1 + 1):
            top += sizes[layer + 1] * bs
        ga = top
        gb = top + maxw * bs
        m = buf[top + 2 * maxw * bs:top + 2 * maxw * bs + bs]
        s = buf[top + 2 * maxw * bs + bs:top + 2 * maxw * bs + 2 * bs]
        # offsets as int64, never a literal 0: Numba compiles a callee once per literal argument
        xin = _block(buf, np.int64(0), n_in, bs)
        loss = 0.0
        if mode == MODE_HEAD or mode == MODE_BACKWARD:
            for layer in range(t0, t1 + 1):
                o = pg_off[layer]
                for i in range(o, o + (sizes[layer] + 1) * sizes[layer + 1]):
                    pgrad[i] = 0.0
        for n0 in range(r0, r1, bs):
            nb = min(bs, r1 - n0)
            if t0 == 0:
                for k in range(n_in):
                    xk = XT[k, n0:]  # block views indexed from 0: an index n0 + n of unknown sign wraps negatives
                    for n in range(nb):
                        xin[k, n] = xk[n]
            else:
                a_in = _stored(acts, act_off, sizes, t0 - 1, n_samples)[n0:]
                for n in range(nb):
                    for k in range(n_in):
                        xin[k, n] = a_in[n, k]
            # forward through the run, block activations only
            off = act_base
            prev = np.int64(0)
            for layer in range(t0, t1 + 1):
                fan_out = sizes[layer + 1]
                out = _block(buf, off, fan_out, bs)
                x = _block(buf, prev, sizes[layer], bs)
                code = IDENTITY if layer == n_layers - 1 else codes[layer]
                forward_block(_weights(theta, w_off, sizes, layer), _bias(theta, w_off, sizes, layer),
                              code, x, out, nb)
                prev = off
                off += fan_out * bs
            width = sizes[t1 + 1]
            last = _block(buf, prev, width, bs)
            if mode == MODE_FORWARD:
                a_out = _stored(acts, act_off, sizes, t1, n_samples)[n0:]
                for n in range(nb):
                    for j in range(width):
                        a_out[n, j] = last[j, n]
                continue
            g = _block(buf, ga, width, bs)
            if mode == MODE_HEAD or mode == MODE_LOSS:
                want_loss = mode == MODE_LOSS
                if softmax:  # a constant of this kernel: the other head is not compiled into it
                    loss += softmax_xent_block(last, TT, n0, nb, scale, g, m, s, want_loss)
                else:
                    loss += squared_error_block(head, last, TT, n0, nb, scale, g, want_loss)
                if want_loss:
                    continue
            else:
                d_out = _stored(deltas, act_off, sizes, t1, n_samples)[n0:]
                for n in range(nb):
                    for j in range(width):
                        g[j, n] = d_out[n, j]
            # backward: off walks back over the block activations
            g_off = ga
            gin_off = gb
            for layer in range(t1, t0 - 1, -1):
                fan_in = sizes[layer]
                fan_out = sizes[layer + 1]
                off -= fan_out * bs
                x_off = off - fan_in * bs if layer > t0 else np.int64(0)
                o = pg_off[layer]
                dW = pgrad[o:o + fan_in * fan_out].reshape((fan_in, fan_out))
                db = pgrad[o + fan_in * fan_out:o + (fan_in + 1) * fan_out]
                want_gin = layer > 0
                prev_code = codes[layer - 1] if layer > 0 else IDENTITY
                backward_block(_weights(theta, w_off, sizes, layer), _block(buf, g_off, fan_out, bs),
                               _block(buf, x_off, fan_in, bs), dW, db, _block(buf, gin_off, fan_in, bs),
                               nb, want_gin, prev_code)
                g_off, gin_off = gin_off, g_off
            if t0 > 0:
                d_in = _stored(deltas, act_off, sizes, t0 - 1, n_samples)[n0:]
                gin = _block(buf, g_off, n_in, bs)
                for n in range(nb):
                    for k in range(n_in):
                        d_in[n, k] = gin[k, n]
        return loss

    return fused_chunk


@njit(**_OPTS)
def _sum_chunk_grads(t0, t1, sizes, w_off, grads, pg, pg_off, n_chunks):
    """Add the chunks' partial gradients into ``grads`` in chunk order (deterministic)."""
    for layer in range(t0, t1 + 1):
        o = pg_off[layer]
        size = (sizes[layer] + 1) * sizes[layer + 1]
        g0 = w_off[layer]
        for i in range(size):
            grads[g0 + i] = pg[0, o + i]
        for c in range(1, n_chunks):
            for i in range(size):
                grads[g0 + i] += pg[c, o + i]


@njit(**_SHARED)
def _fused_call(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, n_samples, XT, TT, acts, deltas, act_off,
                r0, r1, bs, buf, pgrad, pg_off, scale):
    """The fused-run kernel (``fused_chunk``), C-callable at address ``kernel`` (arrays as pointers, with the
    sizes it rebuilds them from)."""
    return c_call_float(kernel, (mode, t0, t1, sizes, codes, head, w_off, theta, n_samples, XT, TT, acts, deltas,
                                 act_off, r0, r1, bs, buf, pgrad, pg_off, np.float64(scale), np.int64(codes.size),
                                 np.int64(theta.size), np.int64(XT.shape[1]), np.int64(TT.shape[1]),
                                 np.int64(acts.size), np.int64(buf.size), np.int64(pgrad.size)))


@njit(**_OPTS)
def fused_unit_serial(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, grads, X, XT, TT, acts, deltas,
                      act_off, n_chunks, chunk_len, bs, scratch, pg, pg_off, scale):
    """A fused run over all samples on this thread; returns the loss in MODE_LOSS."""
    loss = _fused_call(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, np.int64(X.shape[0]), XT, TT, acts,
                       deltas, act_off, np.int64(0), np.int64(X.shape[0]), bs, scratch[0], pg[0], pg_off, scale)
    if mode == MODE_HEAD or mode == MODE_BACKWARD:
        _sum_chunk_grads(t0, t1, sizes, w_off, grads, pg, pg_off, 1)
    return loss


@njit(**_PARALLEL)
def _chunks_in_parallel(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, X, XT, TT, acts, deltas,
                        act_off, n_chunks, chunk_len, bs, scratch, pg, pg_off, scale, losses):
    """Only the prange loop, the chunks through the kernel at address ``kernel``: Numba's
    parallel compile costs grow with what the function holds."""
    n_samples = np.int64(X.shape[0])
    for c in prange(n_chunks):
        r0 = np.int64(c * chunk_len)
        r1 = np.int64(min(n_samples, r0 + chunk_len))
        buf = scratch[get_thread_id()]  # one row per NUMBA_NUM_THREADS thread
        losses[c] = _fused_call(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, n_samples, XT, TT, acts,
                                deltas, act_off, r0, r1, bs, buf, pg[c], pg_off, scale)


@njit(**_OPTS)
def fused_unit_parallel(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, grads, X, XT, TT, acts, deltas,
                        act_off, n_chunks, chunk_len, bs, scratch, pg, pg_off, scale):
    """The chunks of a fused run side by side, then their partial gradients (or
    losses) added in chunk order.

    Block buffers are per thread (``scratch`` has a row per possible thread),
    partial gradients per chunk, so the sums never depend on the scheduling.
    """
    losses = np.empty(n_chunks)
    _chunks_in_parallel(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, X, XT, TT, acts, deltas,
                        act_off, n_chunks, chunk_len, bs, scratch, pg, pg_off, scale, losses)
    loss = 0.0
    for c in range(n_chunks):
        loss += losses[c]
    if mode == MODE_HEAD or mode == MODE_BACKWARD:
        _sum_chunk_grads(t0, t1, sizes, w_off, grads, pg, pg_off, n_chunks)
    return loss


@njit(**_OPTS)
def rows_bias_activation(Z, b, code):
    """Z = f(Z + b) after a BLAS product.

    On one thread, as NumPy does it: OpenBLAS's workers keep spinning after a
    product, and Numba threads competing with them made the blas-bound net
    0.91-1.04x the NumPy backend on 2 cores (1.00-1.03x on one thread).
    """
    bias_activation_rows(Z, b, code, 0, Z.shape[0])


@njit(**_OPTS)
def _grad_rows(D, A, code, r0, r1):
    w = D.shape[1]
    for r in range(r0, r1):
        grad_times_derivative(code, D, r, A, r, w)


@njit(**_OPTS)
def rows_grad_derivative(D, A, code):
    """D *= f'(A) after the BLAS product D = D_next @ W.T (one thread: see rows_bias_activation)."""
    _grad_rows(D, A, code, 0, D.shape[0])


@njit(**_OPTS)
def rows_head(head, Z, T, D, scale, want_loss):
    """The loss head's gradient on sample-major logits left by a BLAS output layer (one
    thread); the summed data loss too with ``want_loss``."""
    n = Z.shape[0]
    if head == HEAD_SOFTMAX:
        return softmax_xent_rows(Z, T, 0, n, scale, D, want_loss)
    return squared_error_rows(head, Z, T, 0, n, scale, D, want_loss)


@njit(**_OPTS)
def column_sums(D, out):
    """out = D.sum(axis=0), rows added in order (deterministic)."""
    w = D.shape[1]
    for j in range(w):
        out[j] = 0.0
    for r in range(D.shape[0]):
        for j in range(w):
            out[j] += D[r, j]


@njit(**_SHARED)
def _train(fused_unit, blas, n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind,
           unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts, deltas, scratch,
           pg, hyper, batch, interval):
    """``n_updates`` steps in place (forward, gradients, then ``update``: the optimiser step
    with ``lrs[u]`` and step ``step0 + u + 1``); with ``want_loss``, the summed data loss of
    all samples at the new parameters. ``blas`` is None for networks without BLAS layers: their
    code is then left out of the entry point (a branch on ``is None`` is pruned). Otherwise it
    is the loss head of a BLAS output layer: ``rows_head``, or ``_no_blas_head`` where the output
    layer is in a fused run, whose kernel has the head (``rows_head`` is a second of a cold
    compile on 2 cores).

    ``batch`` = (batch_rows, order, bounds, data_X, data_T, gather, meta). Full batch
    (``batch_rows`` 0): ``X``/``T`` are the data (``XT``/``TT`` feature-major where fused runs
    read them), every step on all of it and the loss in one more forward. Minibatches:
    ``X``, ``XT``, ``T``, ``TT`` are batch buffers (``batch_rows`` rows), step u gathers the
    samples ``order[bounds[u]:bounds[u + 1]]`` of ``data_X``/``data_T`` into them (by the
    compiled gather at address ``gather``, ``cpu_gather``), and the loss goes range by range
    through the same buffers, so nothing but the data is N rows long. ``interval`` = (lrs, update, addresses,
    step0, kernel), ``update`` the address of the optimiser step (``cpu_update``), ``kernel`` that of the
    fused-run kernel (``chunk_kernel("fused_softmax", dtype)`` or ``"fused_squared"``; unused
    without fused runs); ``hyper``
    is [l2, full-batch scale, mean?, this step's scale], ``meta`` (``cpu_gather.META``) starts
    [this step's rows, -]: the
    kernel reads both each step (a minibatch's gather writes them), so a step's data is
    always the same arrays cut to ``meta[0]`` rows.
    """
    batch_rows, order, bounds, data_X, data_T, gather, meta = batch
    lrs, update, addresses, step0, kernel = interval
    n_layers = sizes.size - 1
    n_samples = data_X.shape[0]
    n_units = unit_kind.size
    l2 = np.float64(hyper[0])
    last = n_layers - 1
    # modes as runtime values: a literal argument would compile each callee once per value
    forward, backward, head_pass, loss_pass = (np.int64(MODE_FORWARD), np.int64(MODE_BACKWARD),
                                               np.int64(MODE_HEAD), np.int64(MODE_LOSS))
    n_loss = 0 if not want_loss else 1 if batch_rows == 0 else -(-n_samples // batch_rows)
    loss = 0.0
    for p in range(n_updates + n_loss):
        final = p >= n_updates
        if batch_rows > 0:  # into X, XT, T, TT (the batch buffers); meta[0], hyper[3]: rows and scale
            c_call(gather, (data_X, data_T, order, bounds, X, XT, T, TT, hyper, meta, p))
        n = meta[0]  # rows this step: every sample (set before the call) or the batch's
        scale = hyper[3]
        Xc = X[:n]
        Tc = T[:n]
        for u in range(n_units):
            t0 = unit_t0[u]
            t1 = unit_t1[u]
            if unit_kind[u] == UNIT_BLAS:
                if blas is not None:
                    a_in = Xc if t0 == 0 else _stored(acts, act_off, sizes, t0 - 1, n)
                    Z = _stored(acts, act_off, sizes, t0, n)
                    np.dot(a_in, _weights(theta, w_off, sizes, t0), Z)
                    code = IDENTITY if t0 == last else codes[t0]
                    rows_bias_activation(Z, _bias(theta, w_off, sizes, t0), code)
            elif t1 < last:
                fused_unit(kernel, forward, t0, t1, sizes, codes, head, w_off, theta, grads, Xc, XT, TT,
                           acts, deltas, act_off, unit_chunks[u], unit_chunk_len[u], unit_bs[u],
                           scratch, pg, pg_off, scale)
        if unit_kind[n_units - 1] == UNIT_BLAS:
            if blas is not None:
                part = blas(head, _stored(acts, act_off, sizes, last, n), Tc,
                            _stored(deltas, act_off, sizes, last, n), scale, final)
                if final:
                    loss += part
                    continue
        elif final:
            u = n_units - 1
            loss += fused_unit(kernel, loss_pass, unit_t0[u], unit_t1[u], sizes, codes, head, w_off, theta, grads,
                               Xc, XT, TT, acts, deltas, act_off, unit_chunks[u], unit_chunk_len[u], unit_bs[u],
                               scratch, pg, pg_off, scale)
            continue
        for u in range(n_units - 1, -1, -1):
            t0 = unit_t0[u]
            t1 = unit_t1[u]
            if unit_kind[u] == UNIT_BLAS:
                if blas is not None:
                    D = _stored(deltas, act_off, sizes, t0, n)
                    a_in = Xc if t0 == 0 else _stored(acts, act_off, sizes, t0 - 1, n)
                    fan_in = sizes[t0]
                    fan_out = sizes[t0 + 1]
                    w0 = w_off[t0]
                    np.dot(a_in.T, D, grads[w0:w0 + fan_in * fan_out].reshape((fan_in, fan_out)))
                    column_sums(D, grads[b_off[t0]:b_off[t0] + fan_out])
                    if t0 > 0:
                        d_prev = _stored(deltas, act_off, sizes, t0 - 1, n)
                        np.dot(D, _weights(theta, w_off, sizes, t0).T, d_prev)
                        rows_grad_derivative(d_prev, _stored(acts, act_off, sizes, t0 - 1, n), codes[t0 - 1])
            else:
                mode = head_pass if t1 == last else backward
                fused_unit(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, grads, Xc, XT, TT,
                           acts, deltas, act_off, unit_chunks[u], unit_chunk_len[u], unit_bs[u],
                           scratch, pg, pg_off, scale)
        c_call(update, (theta, addresses, lrs[p], l2, step0 + p + 1))
    return loss


@njit(**_OPTS)
def _no_fused_runs(kernel, mode, t0, t1, sizes, codes, head, w_off, theta, grads, X, XT, TT, acts, deltas,
                   act_off, n_chunks, chunk_len, bs, scratch, pg, pg_off, scale):
    """The fused-run runner of networks that have none, so their entry point compiles no fused code."""
    return 0.0


@njit(**_OPTS)
def _no_blas_head(head, Z, T, D, scale, want_loss):
    """The BLAS loss head of networks whose output layer is in a fused run (never called: their
    fused kernel runs the head), so their entry point compiles no ``rows_head``."""
    return 0.0


# ------------------------------------------------------------- entry points
# Same arguments for all seven (see ``_train``): fused runs and BLAS layers (the output layer
# on BLAS, or in a fused run: ``_fused_head``), fused runs only, or BLAS layers only, the fused
# runs on this thread or chunked across threads (``_parallel``), so a network compiles only the
# code its layers run.
@njit(**_ENTRY)
def train_passes(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind, unit_t0, unit_t1,
                 unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts, deltas, scratch, pg, hyper,
                 batch, interval):
    return _train(fused_unit_serial, rows_head, n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off,
                  pg_off, unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T,
                  TT, acts, deltas, scratch, pg, hyper, batch, interval)


@njit(**_ENTRY)
def train_passes_parallel(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind, unit_t0,
                          unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts, deltas,
                          scratch, pg, hyper, batch, interval):
    return _train(fused_unit_parallel, rows_head, n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off,
                  pg_off, unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T,
                  TT, acts, deltas, scratch, pg, hyper, batch, interval)


@njit(**_ENTRY)
def train_passes_fused_head(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind,
                            unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts,
                            deltas, scratch, pg, hyper, batch, interval):
    return _train(fused_unit_serial, _no_blas_head, n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off,
                  pg_off, unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T,
                  TT, acts, deltas, scratch, pg, hyper, batch, interval)


@njit(**_ENTRY)
def train_passes_fused_head_parallel(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off,
                                     unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads,
                                     X, XT, T, TT, acts, deltas, scratch, pg, hyper, batch, interval):
    return _train(fused_unit_parallel, _no_blas_head, n_updates, want_loss, sizes, codes, head, w_off, b_off,
                  act_off, pg_off, unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X,
                  XT, T, TT, acts, deltas, scratch, pg, hyper, batch, interval)


@njit(**_ENTRY)
def train_passes_fused(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind, unit_t0,
                       unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts, deltas,
                       scratch, pg, hyper, batch, interval):
    return _train(fused_unit_serial, None, n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off,
                  pg_off, unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T,
                  TT, acts, deltas, scratch, pg, hyper, batch, interval)


@njit(**_ENTRY)
def train_passes_fused_parallel(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind,
                                unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT,
                                acts, deltas, scratch, pg, hyper, batch, interval):
    return _train(fused_unit_parallel, None, n_updates, want_loss, sizes, codes, head, w_off, b_off,
                  act_off, pg_off, unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X,
                  XT, T, TT, acts, deltas, scratch, pg, hyper, batch, interval)


@njit(**_ENTRY)
def train_passes_blas(n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off, unit_kind, unit_t0,
                      unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts, deltas, scratch,
                      pg, hyper, batch, interval):
    return _train(_no_fused_runs, rows_head, n_updates, want_loss, sizes, codes, head, w_off, b_off, act_off, pg_off,
                  unit_kind, unit_t0, unit_t1, unit_bs, unit_chunks, unit_chunk_len, theta, grads, X, XT, T, TT, acts,
                  deltas, scratch, pg, hyper, batch, interval)


# ------------------------------------------------------------ fused-run kernel
@functools.lru_cache(maxsize=None)
def _fused_signature(dtype: str):
    p, q, i = types.CPointer(DTYPES[dtype]), types.CPointer(types.int64), types.int64
    return types.float64(i, i, i, q, q, i, q, p, i, p, p, p, p, q, i, i, i, p, p, q, types.float64, i, i, i, i, i, i,
                         i)


# The fused-run kernels by name: one per loss head (``_fused_chunk_for``).
CHUNK_KERNELS = {f"fused_{head}": _fused_chunk_for(head) for head in ("softmax", "squared")}


def chunk_kernel(name: str, dtype: str, *, cached_only: bool = False):
    """The C-callable kernel ``name`` (``CHUNK_KERNELS``) for ``dtype`` that the fused runs call
    (compiled on first use, then loaded from the disk cache); with ``cached_only``, whether it
    is made or on disk."""
    return c_kernel(CHUNK_KERNELS[name], _fused_signature(dtype), cached_only=cached_only)


def late_callees(name: str, dtype: str, entry: str) -> list:
    """(function, argument types) for separately compiled functions chunk kernel ``name`` calls, in
    the types it calls them with: a fit compiles them, in this order, while a helper process
    compiles the kernel (``compile_aside``), which then finds them in the cache. First the
    activations' loops, which the kernel reaches after its own set-up and the BLAS layers' row
    helpers need too (without this, both processes compile them). Then, where ``entry`` runs
    fused layers only (``train_passes_fused``, serial or chunked; one with BLAS layers too is
    the longer compile of the two), the backward block, which the kernel reaches after its loss
    head (the fit could not have the head ready in time). The list is the same for both heads."""
    _, a1, a2 = value_types(dtype)
    i = types.int64
    callees = [(activate, (i, a2, i, i))]
    if entry in ("train_passes_fused", "train_passes_fused_parallel"):
        callees.append((backward_block, (a2, a2, a2, a2, a1, a2, i, types.boolean, i)))
    return callees


def row_helpers(dtype: str) -> None:
    """Compile (or load) the BLAS layers' loss head and backward row helpers for ``dtype``, as the
    entry points call them (every array C-contiguous, scalars in the parameters' dtype): the
    ones an entry point's compile reaches last, so a helper process compiling them beside it
    (``compile_aside``, for networks with no fused runs) has them in the cache in time."""
    f, _, a2 = value_types(dtype)
    rows_head.compile((types.int64, a2, a2, a2, f, types.boolean))
    rows_grad_derivative.compile((a2, a2, types.int64))


def compile_aside(name: str, dtype: str) -> None:
    """What a helper process compiles beside a fit's entry point: a chunk kernel, or ``"rows"``
    (``row_helpers``)."""
    if name == "rows":
        row_helpers(dtype)
    else:
        chunk_kernel(name, dtype)
