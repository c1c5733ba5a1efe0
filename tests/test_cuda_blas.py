"""nnx's direct cuBLAS calls, checked on the CPU against a reference cuBLAS.

``cuda_emulation.REFERENCE_CUBLAS`` implements the cuBLAS entry points nnx
calls from the BLAS definition of gemm (column-major, leading dimensions
checked as cuBLAS checks them). Loaded through ``cuda_blas.CublasLibrary`` it
takes the same pointers, operations and leading dimensions a GPU would, so the
row-major to column-major translation and the ctypes prototypes are checked
against NumPy's products, and the dense programs run through it end to end.
"""
from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest

from nnx.backends import cuda_blas
from nnx.backends import cuda_plan as plan
from nnx.backends.cuda_program import Trainer, build_program
from nnx.backends.numpy_backend import NumpyBackend
from nnx.batching import BatchStream
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD, Adam

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the reference cuBLAS")
REF = NumpyBackend()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    import cuda_emulation

    return cuda_blas.CublasLibrary(cuda_emulation.build_reference_cublas(tmp_path_factory.mktemp("blas")))


@pytest.fixture
def handle(reference):
    stream, workspace = ctypes.c_int(0), np.zeros(64, np.uint8)
    owned = cuda_blas.OwnedHandle(reference, ctypes.addressof(stream), workspace.ctypes.data, workspace.nbytes)
    yield owned
    owned.close()


def _ptr(a: np.ndarray) -> tuple[int, tuple]:
    assert a.flags.c_contiguous
    return a.ctypes.data, a.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transa,transb", [("N", "N"), ("T", "N"), ("N", "T"), ("T", "T")])
@pytest.mark.parametrize("m,k,n", [(5, 3, 4), (1, 7, 2), (6, 1, 1), (3, 4, 1)])
def test_row_major_products_match_numpy(handle, dtype, transa, transb, m, k, n):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(m, k) if transa == "N" else (k, m)).astype(dtype)
    b = rng.normal(size=(k, n) if transb == "N" else (n, k)).astype(dtype)
    want = (a.T if transa == "T" else a).astype(np.float64) @ (b.T if transb == "T" else b).astype(np.float64)
    out = np.full((m, n), np.nan, dtype)  # beta = 0: what was there is never read
    handle.gemm(np.dtype(dtype), transa, transb, _ptr(a), _ptr(b), _ptr(out), 0.0)
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)
    handle.gemm(np.dtype(dtype), transa, transb, _ptr(a), _ptr(b), _ptr(out), 1.0)  # beta = 1 accumulates
    np.testing.assert_allclose(out, 2 * want, rtol=1e-5 if dtype == np.float32 else 1e-13, atol=1e-6)


def test_gemm_call_follows_the_column_major_rules():
    call = cuda_blas.gemm_call("T", "N", (7, 5), (7, 3), (5, 3))  # out = a.T @ b
    assert (call.op_first, call.op_second) == (0, 1)  # b first, as given; then a, transposed
    assert (call.m, call.n, call.k) == (3, 5, 7)
    assert (call.ld_first, call.ld_second, call.ldc) == (3, 5, 3)


def test_mismatched_shapes_are_refused_before_any_call(handle):
    a, b, out = np.zeros((4, 3)), np.zeros((2, 5)), np.zeros((4, 5))
    with pytest.raises(ValueError, match=r"op\(a\) 4x3 @ op\(b\) 2x5"):
        handle.gemm(np.dtype(np.float64), "N", "N", _ptr(a), _ptr(b), _ptr(out), 0.0)
    with pytest.raises(ValueError, match="'N' or 'T'"):
        cuda_blas.gemm_call("C", "N", (2, 2), (2, 2), (2, 2))
    with pytest.raises(TypeError, match="float32 or float64"):
        handle.gemm(np.dtype(np.int32), "N", "N", _ptr(a), _ptr(a.T.copy()), _ptr(np.zeros((4, 4))), 0.0)


def test_a_cublas_error_status_is_raised_with_its_name(reference, handle):
    bad = cuda_blas.GemmCall(0, 0, m=4, n=4, k=4, ld_first=1, ld_second=4, ldc=4)  # lda < m
    x = np.zeros(16)
    with pytest.raises(cuda_blas.CublasError, match=r"CUBLAS_STATUS_INVALID_VALUE \(7\)") as info:
        reference.gemm(handle.handle, np.dtype(np.float64), bad, 1.0, x.ctypes.data, x.ctypes.data, 0.0,
                       x.ctypes.data)
    assert info.value.status == 7
    assert reference.version(handle.handle) == 130000 and handle.own_workspace


@pytest.mark.parametrize("batch", [None, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("sizes,hidden,output,block", [((4, 7, 5, 3), "tanh", "softmax", None),
                                                        ((6, 9, 2), "relu", "sigmoid", 16)])
def test_dense_programs_through_the_cublas_calls_match_numpy(lib, handle, monkeypatch, sizes, hidden, output,
                                                             block, batch):
    """Plain SGD on all rows, and Adam on minibatches (products over the batch buffer, its last,
    smaller batch padded), through nnx's cuBLAS argument translation."""
    import cuda_emulation

    device = cuda_emulation.EmulatedDevice(lib, blas=handle)
    rng = np.random.default_rng(3)
    net = Network(sizes, hidden, output, "float64")
    n, updates = 100, 50
    X = rng.normal(size=(n, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)] if output == "softmax" else rng.uniform(size=(n, 2))
    params = [(rng.normal(size=(i, o)) / np.sqrt(i), rng.normal(size=o) * 0.1) for i, o in net.layer_shapes()]
    data = REF.prepare_data(net, X, T)
    if block is not None:
        monkeypatch.setattr(plan, "BLOCK_BYTES", block * plan.row_bytes(net))
    monkeypatch.setattr(plan, "is_tiny", lambda net: False)  # cuBLAS products, even for a small network
    optimizer = SGD(0.5) if batch is None else Adam(0.01)
    batches = None if batch is None else BatchStream(np.random.default_rng(4), n, batch, True).take(updates)
    lrs = np.full(updates, optimizer.lr)

    def fresh():
        return TrainState([(W.copy(), b.copy()) for W, b in params], slots={
            name: [(np.zeros_like(W), np.zeros_like(b)) for W, b in params] for name in optimizer.slots()})

    state = fresh()
    trainer = Trainer(device, net, data.X, lambda rows, slots: build_program(
        device, net, state.params, data.X, data.T, free_bytes=1 << 40, what="a test", rows=rows, slots=slots))
    trainer.train(state.slots, optimizer, lrs, batches, 0, 1e-3, True)
    want = fresh()
    REF.train(net, want, data, Objective("mean", 1e-3), optimizer, lrs, batches)
    for (W, b), (W2, b2) in zip(want.params, state.params):
        assert np.max(np.abs(W - W2)) <= 1e-10 * np.max(np.abs(W)) and np.max(np.abs(b - b2)) <= 1e-10 * np.max(
            np.abs(b))
    # per row block: L forward products, dW and db per layer, a delta product per hidden layer
    program = trainer.program(batch, len(optimizer.slots()))
    assert device.launches.count("gemm") == updates * (4 * net.n_layers - 1) * program.plan.n_blocks
    assert device.guards_intact()


def test_the_loaded_library_is_found_and_a_missing_one_is_reported(tmp_path):
    import cuda_emulation

    with pytest.raises(OSError, match="no libcublas is loaded in this process"):
        cuda_blas.loaded_library((97,))
    built = cuda_emulation.build_reference_cublas(tmp_path, soname="libcublas.so.97")
    found = cuda_blas.loaded_library((97,))
    assert ctypes.cast(found.cublasSgemm_v2, ctypes.c_void_p).value == \
        ctypes.cast(built.cublasSgemm_v2, ctypes.c_void_p).value
