"""The CuPy backend class itself, run on the CPU: NumPy in CuPy's place, the emulated device in the GPU's.

``nnx.backends.cupy_backend`` is imported against a stand-in ``cupy`` module
(NumPy arrays; streams that record launches while capturing and replay them
as graphs), and its device is the kernel emulation of ``cuda_emulation``. So
``MLP.fit`` on ``"cupy"`` runs the backend's own code: its program and
trainer cache, the training driver's snapshots and restores (new parameter
arrays), interval uploads, graph capture and replay, losses and predictions,
with the real kernel sources. What only a GPU can check (CuPy, NVRTC, cuBLAS,
real graphs) is left to the ``gpu`` tests.
"""
from __future__ import annotations

import importlib
import shutil
import sys
import threading
import types

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.backends import cuda_plan as plan
from nnx.errors import PerformanceWarning
from nnx.optim import Adam, Cosine
from optimizer_cases import NETS, OPTIMIZERS
from tolerances import params_error

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the kernel emulation")
MODULE = "nnx.backends.cupy_backend"


def _fake_cupy():
    """The CuPy surface the backend uses, on NumPy: arrays, streams and their events, errors."""
    import cuda_emulation

    class Stream(cuda_emulation.EmulatedStream):
        current: "Stream | None" = None

        def __init__(self, non_blocking: bool = False):
            super().__init__()
            self.ptr = id(self)
            self._outer: list = []

        def record(self):
            return object()

        def wait_event(self, event) -> None:
            pass

        def synchronize(self) -> None:
            assert self.recording is None, "synchronising a capturing stream"

        def __enter__(self):
            self._outer.append(Stream.current)
            Stream.current = self
            return self

        def __exit__(self, *exc):
            Stream.current = self._outer.pop()

    null = Stream()
    fake = types.ModuleType("cupy")
    fake.__getattr__ = lambda name: getattr(np, name)  # empty, asarray, ascontiguousarray, float32, ...
    fake.ndarray = np.ndarray
    fake.asnumpy = np.asarray
    errors = type("CUDARuntimeError", (RuntimeError,), {}), type("CUDADriverError", (RuntimeError,), {})
    fake.cuda = types.SimpleNamespace(
        Stream=Stream, get_current_stream=lambda: Stream.current or null,
        memory=types.SimpleNamespace(OutOfMemoryError=type("OutOfMemoryError", (MemoryError,), {})),
        runtime=types.SimpleNamespace(CUDARuntimeError=errors[0], memGetInfo=lambda: (1 << 40, 1 << 41)),
        driver=types.SimpleNamespace(CUDADriverError=errors[1]))
    fake.get_default_memory_pool = lambda: types.SimpleNamespace(free_bytes=lambda: 0)
    return fake


def _fake_cublas():
    """``cupy.cublas.gemm`` on NumPy (the op-level products of the reference loop)."""
    def gemm(transa, transb, a, b, out, alpha=1.0, beta=0.0):
        prod = alpha * ((a.T if transa == "T" else a) @ (b.T if transb == "T" else b))
        out[...] = prod if beta == 0 else prod + beta * out
    module = types.ModuleType("cupy.cublas")
    module.gemm = gemm
    return module


@pytest.fixture
def emulated_cupy(lib, monkeypatch):
    """``make(**switches)``: CupyBackend objects on the emulated device; ``"cupy"`` names the first one."""
    import cuda_emulation

    class Device(cuda_emulation.EmulatedDevice):
        """The emulated device with the binding the backend gives its own stream."""

        blas_unavailable = None

        def bind(self, stream) -> None:
            self.stream = stream

    saved_module, saved_attr = sys.modules.pop(MODULE, None), getattr(backends, "cupy_backend", None)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setitem(sys.modules, "cupy.cublas", _fake_cublas())
    module = importlib.import_module(MODULE)

    def make(**switches):
        backend = module.CupyBackend(**switches)
        backend.device = Device(lib)
        return backend

    active = make()
    original = backends._instance
    monkeypatch.setattr(backends, "_instance", lambda name: active if name == "cupy" else original(name))
    yield make, active
    sys.modules.pop(MODULE, None)
    if saved_module is not None:
        sys.modules[MODULE] = saved_module
    if saved_attr is not None:
        backends.cupy_backend = saved_attr
    elif hasattr(backends, "cupy_backend"):
        del backends.cupy_backend




@pytest.fixture(scope="module")
def moons():
    return nnx.datasets.moons(200, 0.2, 0)


def _fit(backend_name, moons, net, optimizer, batch_size, epochs, **extra):
    sizes, hidden = NETS[net]
    model = nnx.MLP(sizes, hidden=hidden, seed=3)
    settings = dict(l2=0.01, log_every=10 ** 6, verbose=0) | extra
    with nnx.use_backend(backend_name):
        model.fit(*moons, epochs=epochs, optimizer=OPTIMIZERS[optimizer](), batch_size=batch_size, **settings)
    return model


@pytest.mark.parametrize("batch_size", [None, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_fit_on_the_cupy_backend_trains_like_numpy(emulated_cupy, moons, optimizer, net, batch_size):
    """Ten epochs through MLP.fit, logging every epoch and every third: parameters, updates, history."""
    _, backend = emulated_cupy
    per_epoch = 1 if batch_size is None else 7
    for log_every in (per_epoch, 3):
        got = _fit("cupy", moons, net, optimizer, batch_size, 10, log_every=log_every)
        want = _fit("numpy", moons, net, optimizer, batch_size, 10, log_every=log_every)
        assert got.updates == want.updates == 10 * per_epoch
        assert params_error(got.params, want.params) <= 1e-10
        assert list(got.history) == list(want.history)
        assert np.allclose(list(got.history.values()), list(want.history.values()), rtol=1e-10, atol=0)
    assert backend.compiles(OPTIMIZERS[optimizer]())


def test_graphs_are_captured_once_for_a_whole_fit(emulated_cupy, moons):
    """relu3 (cuBLAS products) on batches of 32 under Adam and a cosine schedule, logging every
    epoch: the first interval captures the epoch's updates, every later one replays them."""
    _, backend = emulated_cupy
    _fit("cupy", moons, "relu3", "adam", 32, 12, log_every=7, schedule=Cosine(T_max=50))
    stream = backend._stream
    assert backend._replayer.captures == stream.captures == 1 and stream.replays == 12
    net = nnx.MLP(NETS["relu3"][0], hidden="relu").net
    assert backend.graph_fallback(net) is None
    assert backend.launches_per_pass(net, 200, batch_size=32, n_slots=2) == 1 / plan.GRAPH_PASSES


def test_a_fit_continued_or_resumed_from_a_file_equals_one_fit_bit_for_bit(emulated_cupy, moons, tmp_path):
    for net, optimizer in (("relu3", "adamw"), ("tutorial003", "rmsprop")):
        whole = _fit("cupy", moons, net, optimizer, 32, 10, log_every=5)
        half = _fit("cupy", moons, net, optimizer, 32, 5, log_every=5)
        with nnx.use_backend("cupy"):
            path = half.save(tmp_path / f"{net}.npz")
            half.fit(*moons, epochs=5, optimizer=OPTIMIZERS[optimizer](), batch_size=32, l2=0.01, log_every=5,
                     verbose=0)
            loaded = nnx.load(path)
            loaded.fit(*moons, epochs=5, optimizer=OPTIMIZERS[optimizer](), batch_size=32, l2=0.01, log_every=5,
                       verbose=0)
        for other in (half, loaded):
            assert other.updates == whole.updates
            assert all(np.array_equal(a, b) for pa, pb in zip(whole.params, other.params) for a, b in zip(pa, pb))


def test_threads_take_turns_on_the_backends_stream(emulated_cupy):
    """A second thread's work waits while a first one runs (and may be capturing a graph) on the
    backend's one stream: on an H200, two threads capturing on it at once failed with
    cudaErrorStreamCaptureImplicit and cudaErrorIllegalState."""
    _, backend = emulated_cupy
    first_inside, second_inside, release = threading.Event(), threading.Event(), threading.Event()

    def first():
        with backend._side_stream():
            first_inside.set()
            release.wait(10)

    def second():
        first_inside.wait(10)
        with backend._side_stream():
            second_inside.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    assert first_inside.wait(10)
    assert not second_inside.wait(0.3), "the second thread ran on the stream while the first held it"
    release.set()
    for t in threads:
        t.join(10)
    assert second_inside.is_set()


def test_graphs_switched_off_give_the_same_bits(emulated_cupy, moons):
    make, backend = emulated_cupy
    with_graphs = _fit("cupy", moons, "relu3", "rmsprop", 32, 4, log_every=7)
    eager = make(graphs=False)
    backend.__dict__.update(eager.__dict__)  # the active backend, graphs off
    without = _fit("cupy", moons, "relu3", "rmsprop", 32, 4, log_every=7)
    assert backend._replayer is None or backend._replayer.captures == 0
    assert all(np.array_equal(a, b) for pa, pb in zip(with_graphs.params, without.params) for a, b in zip(pa, pb))


def test_an_optimiser_the_kernels_do_not_implement_runs_on_the_reference_loop(emulated_cupy, moons):
    class Tuned(Adam):
        pass

    _, backend = emulated_cupy
    assert not backend.compiles(Tuned(0.01))
    with nnx.use_backend("cupy"), pytest.warns(PerformanceWarning, match="no compiled loop for Tuned"):
        model = nnx.MLP([2, 3, 2], seed=3)
        model.fit(*moons, epochs=3, optimizer=Tuned(0.01), batch_size=32, l2=0.01, verbose=0)
    launched = set(backend.device.launches)
    assert "nnx_tiny_train" not in launched and "nnx_dense_update" not in launched  # the reference loop's ops
    assert "nnx_bias_activation" in launched
    reference = _fit("numpy", moons, "tutorial003", "adam", 32, 3)
    assert params_error(model.params, reference.params) <= 1e-12


def test_the_fit_memory_estimate_covers_the_state_and_the_batch_programs(emulated_cupy):
    _, backend = emulated_cupy
    net = nnx.MLP([784, 256, 10], hidden="relu", dtype="float32").net
    full = backend.fit_bytes(net, 60000)
    adam = backend.fit_bytes(net, 60000, n_slots=2)
    batched = backend.fit_bytes(net, 60000, batch_size=128, n_slots=2)
    n_params = 784 * 256 + 256 + 256 * 10 + 10
    assert adam - full == 2 * 2 * n_params * 4  # the state and its snapshot
    assert batched > adam  # the batch program's buffers and an epoch's order
