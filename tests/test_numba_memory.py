"""Memory of Numba fits with optimisers and minibatches: the estimate a fit is checked against
before it starts (``fit_bytes`` with the batch size and the optimiser's state arrays) bounds
the peak it really reaches, and minibatch buffers stay batch-sized.

Peaks are measured with ``tracemalloc``, which sees every NumPy array (NumPy reports its data
buffers to it), independently of how nnx computes its estimates (tests/test_memory.py's way).
"""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx.optim import SGD, Adam, AdamW, RMSprop
from memory_peaks import traced_peak

pytest.importorskip("numba", reason="numba is not installed")

LOOSEST = 4.0  # an estimate more than this many times the real peak would refuse fits that fit


# (layer sizes, hidden, samples, batch size, optimiser): large enough that the buffers dominate
CASES = {
    "one-hidden-adam-b64": ([2, 1024, 2], "tanh", 4096, 64, lambda: Adam(1e-3)),
    "fused-and-blas-adamw-amsgrad-b128": ([2, 256, 16, 2], "relu", 4096, 128, lambda: AdamW(1e-3, amsgrad=True)),
    "blas-rmsprop-b100": ([30, 200, 200, 5], "tanh", 2000, 100, lambda: RMSprop(1e-3, momentum=0.9, centered=True)),
    "full-batch-momentum": ([10, 200, 200, 5], "tanh", 2000, None, lambda: SGD(0.01, momentum=0.9)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_estimate_bounds_the_peak_of_optimiser_and_minibatch_fits(case):
    sizes, hidden, n, batch_size, optimizer = CASES[case]
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n, sizes[0])), rng.integers(0, sizes[-1], n)
    settings = dict(optimizer=optimizer(), batch_size=batch_size, verbose=0)
    with nnx.use_backend("numba") as backend:
        nnx.MLP(sizes, hidden=hidden).fit(X, y, passes=2, log_every=1, **settings)  # compiles first
        peak = traced_peak(lambda: nnx.MLP(sizes, hidden=hidden).fit(X, y, epochs=2, **settings))
        estimate = backend.fit_bytes(nnx.MLP(sizes).net, n, batch_size, len(settings["optimizer"].slots()))
    assert peak <= estimate, f"measured {peak} bytes, estimated {estimate}"
    assert estimate <= LOOSEST * peak, f"estimated {estimate}, measured only {peak}"


def test_minibatches_need_far_less_than_a_full_batch():
    """Batch-sized buffers: at N = 60,000 a batch of 128 needs a small part of the full batch's bytes."""
    from nnx.backends.numba_backend import NumbaBackend

    net = nnx.MLP([784, 256, 10], dtype="float32").net
    backend = NumbaBackend()
    data = 60_000 * (784 + 10) * 4 + 8 * 60_000 * 12  # the data and its validated targets, in any case
    full = backend.fit_bytes(net, 60_000, None, 2) - data
    batched = backend.fit_bytes(net, 60_000, 128, 2) - data
    assert batched < full / 20
