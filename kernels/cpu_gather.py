"""Minibatch gathers: the rows of one batch copied, by index, from the data as given
(sample-major, never copied or permuted as a whole) into a fit's batch buffers.

Each is a C-callable function (``gatherer``), compiled on the first minibatch fit
of its dtype and cached on disk; the training kernels call it by address
(``cpu_ccall``) once per step ``p`` of an interval, so full-batch fits never compile
it and the kernels' own compile time stays that of a call. Step p < n_updates takes
update p's batch, ``order[bounds[p]:bounds[p + 1]]``; the steps after it take the
loss's ranges of all samples in data order, ``batch_rows`` at a time. The gather
also writes the step's row count (``meta``) and loss scale (``hyper[3]``), which the
kernel reads back, so nothing of the batch arithmetic is compiled into it.
"""
from __future__ import annotations

import functools

from numba import carray, cfunc, njit, types

from .cpu_ccall import c_signature
from .cpu_math import CACHE

_DTYPES = {"float32": types.float32, "float64": types.float64}
_I64 = types.int64


@njit(inline="always", error_model="numpy")
def _batch(p, n_updates, batch_rows, bounds_p, n_data, mean, hyper, meta):
    """(start, size) of step ``p``'s rows: update p's batch, or after the updates the loss's
    ranges of ``batch_rows``; the batch's size and loss scale go to ``meta[0]``, ``hyper[3]``."""
    if p < n_updates:
        bounds = carray(bounds_p, n_updates + 1)
        start = bounds[p]
        nb = bounds[p + 1] - start
    else:
        start = (p - n_updates) * batch_rows
        nb = min(batch_rows, n_data - start)
    meta[0] = nb
    hyper[3] = 1.0 / nb if mean else 1.0  # stored in the parameters' dtype, as NumPy rounds it
    return start, nb


def _columns(X_p, T_p, order_p, bounds_p, XT_p, TT_p, hyper_p, meta_p, n_in, n_out, stride, p, n_updates,
             batch_rows, granule, n_data, mean):
    """Step ``p``'s rows feature-major into the first columns of ``XT``/``TT`` (rows ``stride``
    long), padded to a whole number of ``granule`` columns with copies of the batch's first
    sample (the one-hidden-layer kernel gives padding exactly zero gradient); the number of
    columns goes to ``meta[1]``."""
    hyper, meta = carray(hyper_p, 4), carray(meta_p, 2)
    start, nb = _batch(p, n_updates, batch_rows, bounds_p, n_data, mean, hyper, meta)
    shuffled = p < n_updates
    X, T, order = carray(X_p, (n_data, n_in)), carray(T_p, (n_data, n_out)), carray(order_p, start + nb)
    XT, TT = carray(XT_p, (n_in, stride)), carray(TT_p, (n_out, stride))
    cols = -(-nb // granule) * granule
    for i in range(cols):
        j = start + (i if i < nb else 0)
        r = order[j] if shuffled else j
        for k in range(n_in):
            XT[k, i] = X[r, k]
        for c in range(n_out):
            TT[c, i] = T[r, c]
    meta[1] = cols


def _rows(X_p, T_p, order_p, bounds_p, bx_p, bxt_p, bt_p, btt_p, hyper_p, meta_p, n_in, n_out, p, n_updates,
          batch_rows, feature_major_x, feature_major_t, n_data, mean):
    """Step ``p``'s rows sample-major into ``bx``/``bt``, and feature-major into ``bxt``/``btt``
    where a fused first layer or a fused head reads them."""
    hyper, meta = carray(hyper_p, 4), carray(meta_p, 2)
    start, nb = _batch(p, n_updates, batch_rows, bounds_p, n_data, mean, hyper, meta)
    shuffled = p < n_updates
    X, T, order = carray(X_p, (n_data, n_in)), carray(T_p, (n_data, n_out)), carray(order_p, start + nb)
    bx, bt = carray(bx_p, (nb, n_in)), carray(bt_p, (nb, n_out))
    for i in range(nb):
        r = order[start + i] if shuffled else start + i
        for k in range(n_in):
            bx[i, k] = X[r, k]
        for c in range(n_out):
            bt[i, c] = T[r, c]
    if feature_major_x:
        bxt = carray(bxt_p, (n_in, nb))
        for i in range(nb):
            for k in range(n_in):
                bxt[k, i] = bx[i, k]
    if feature_major_t:
        btt = carray(btt_p, (n_out, nb))
        for i in range(nb):
            for c in range(n_out):
                btt[c, i] = bt[i, c]


def _signature(name: str, dtype):
    a, i = types.Array(dtype, 2, "C"), types.Array(_I64, 1, "C")
    if name == "columns":
        return c_signature(types.void, a, a, i, i, a, a, a, i, *[_I64] * 9)
    return c_signature(types.void, a, a, i, i, a, a, a, a, a, i, *[_I64] * 9)


_SOURCES = {"columns": _columns, "rows": _rows}


@functools.lru_cache(maxsize=None)
def gatherer(name: str, dtype: str):
    """The compiled gather ``name`` ("columns" or "rows") for ``dtype``."""
    return cfunc(_signature(name, _DTYPES[dtype]), cache=CACHE, error_model="numpy")(_SOURCES[name])
