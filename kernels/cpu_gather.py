"""Minibatch gathers: the rows of one batch copied, by index, from the data as given
(sample-major, never copied or permuted as a whole) into a fit's batch buffers.

Each is a C-callable function (``gatherer``), compiled on the first minibatch fit
of its dtype and cached on disk; the training kernels call it by address
(``cpu_ccall``) once per step ``p`` of an interval, so full-batch fits never compile
it and the kernels' own compile time stays that of a call. Step p < n_updates takes
update p's batch, ``order[bounds[p]:bounds[p + 1]]``; the steps after it take the
loss's ranges of all samples in data order, ``batch_rows`` at a time.

``meta`` (int64) carries the sizes, set once per call by the backend (``META``), and
the gather writes the step's row count (and columns) there and its loss scale to
``hyper[3]``; the kernel reads them back, so none of the batch arithmetic is
compiled into it.
"""
from __future__ import annotations

import functools

from numba import carray, njit, types

from .cpu_ccall import DTYPES, c_kernel, c_signature

# meta[i]: rows this step (written here; all samples for full batch), columns this step (the
# one-hidden-layer kernel's padded count), then what the backend sets for the whole call.
META = ("rows", "columns", "n_in", "n_out", "batch_rows", "n_data", "mean", "n_updates", "feature_major_x",
        "feature_major_t", "granule")
N_META = len(META)
_I64 = types.int64


@njit(inline="always", error_model="numpy")
def _batch(p, bounds_p, hyper, meta):
    """(start, size, shuffled) of step ``p``'s rows: update p's batch, or after the updates the
    loss's ranges of ``batch_rows``; the size goes to ``meta[0]``, the loss scale to ``hyper[3]``."""
    n_updates, batch_rows = meta[7], meta[4]
    if p < n_updates:
        bounds = carray(bounds_p, n_updates + 1)
        start = bounds[p]
        nb = bounds[p + 1] - start
    else:
        start = (p - n_updates) * batch_rows
        nb = min(batch_rows, meta[5] - start)
    meta[0] = nb
    hyper[3] = 1.0 / nb if meta[6] else 1.0  # stored in the parameters' dtype, as NumPy rounds it
    return start, nb, p < n_updates


def _columns(X_p, T_p, order_p, bounds_p, XT_p, TT_p, hyper_p, meta_p, p):
    """Step ``p``'s rows feature-major into the first columns of ``XT``/``TT`` (``batch_rows``
    plus padding long), padded to a whole number of ``granule`` columns with copies of the
    batch's first sample (the one-hidden-layer kernel gives padding exactly zero gradient);
    the number of columns goes to ``meta[1]``."""
    hyper, meta = carray(hyper_p, 4), carray(meta_p, N_META)
    start, nb, shuffled = _batch(p, bounds_p, hyper, meta)
    n_in, n_out, n_data, granule = meta[2], meta[3], meta[5], meta[10]
    stride = -(-meta[4] // granule) * granule
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


def _rows(X_p, T_p, order_p, bounds_p, bx_p, bxt_p, bt_p, btt_p, hyper_p, meta_p, p):
    """Step ``p``'s rows into the first rows of ``bx``/``bt`` (``batch_rows`` x features), and
    into the first columns of ``bxt``/``btt`` (features x ``batch_rows``) where a fused first
    layer or a fused head reads them feature-major."""
    hyper, meta = carray(hyper_p, 4), carray(meta_p, N_META)
    start, nb, shuffled = _batch(p, bounds_p, hyper, meta)
    n_in, n_out, rows, n_data = meta[2], meta[3], meta[4], meta[5]
    X, T, order = carray(X_p, (n_data, n_in)), carray(T_p, (n_data, n_out)), carray(order_p, start + nb)
    bx, bt = carray(bx_p, (rows, n_in)), carray(bt_p, (rows, n_out))
    for i in range(nb):
        r = order[start + i] if shuffled else start + i
        for k in range(n_in):
            bx[i, k] = X[r, k]
        for c in range(n_out):
            bt[i, c] = T[r, c]
    if meta[8]:
        bxt = carray(bxt_p, (n_in, rows))
        for i in range(nb):
            for k in range(n_in):
                bxt[k, i] = bx[i, k]
    if meta[9]:
        btt = carray(btt_p, (n_out, rows))
        for i in range(nb):
            for c in range(n_out):
                btt[c, i] = bt[i, c]


def _signature(name: str, dtype):
    a, i = types.Array(dtype, 2, "C"), types.Array(_I64, 1, "C")
    buffers = (a, a) if name == "columns" else (a, a, a, a)
    return c_signature(types.void, a, a, i, i, *buffers, a, i, _I64)


_SOURCES = {"columns": _columns, "rows": _rows}


@functools.lru_cache(maxsize=None)
def gatherer(name: str, dtype: str):
    """The compiled gather ``name`` ("columns" or "rows") for ``dtype``."""
    return c_kernel(_SOURCES[name], _signature(name, DTYPES[dtype]), fastmath=False)
