"""The CuPy backend: selection and errors anywhere, planning anywhere, the rest on a GPU.

Tests marked ``gpu`` need CuPy and a CUDA device and skip with the registry's
reason elsewhere; everything checkable without one (probe messages, memory
and launch planning) runs on every machine, with or without CuPy installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import types

import numpy as np
import pytest

import nnx
from nnx import backends
from nnx.backends import cuda_plan as plan
from nnx.errors import BackendUnavailableError
from nnx.batching import BatchStream
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD, Adam, AdamW, Cosine, RMSprop, learning_rates

CUPY_REASON = nnx.available_backends()["cupy"]
_needs_gpu = pytest.mark.skipif(CUPY_REASON is not None, reason=f"cupy backend unavailable here: {CUPY_REASON}")


def on_gpu(test):
    """Marked ``gpu`` and skipped, with the registry's reason, where the backend cannot run."""
    return pytest.mark.gpu(_needs_gpu(test))
INSTALL_HINT = "pip install 'nnx[cuda12]' (CUDA 12) or 'nnx[cuda13]' (CUDA 13)"


def _python(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"} | env
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=300)


# ------------------------------------------------------- selection, no GPU
def test_without_cupy_the_reason_names_the_install_command_and_auto_moves_on():
    code = ("import sys; sys.modules['cupy'] = None\n"
            "import nnx\n"
            "print(nnx.available_backends()['cupy'])\n"
            "print(nnx.explain_backend())\n"
            "try:\n    nnx.set_backend('cupy')\nexcept nnx.BackendUnavailableError as e:\n    print('raised', e)\n")
    run = _python(code)
    assert run.returncode == 0, run.stderr
    reason, explained, raised = run.stdout.splitlines()
    assert reason == f"cupy is not installed: {INSTALL_HINT}"
    assert explained.startswith("auto: cupy unavailable (cupy is not installed") and "picked" in explained
    assert raised.startswith("raised Backend 'cupy' is unavailable: cupy is not installed")


def test_import_nnx_neither_imports_cupy_nor_probes():
    run = _python("import sys, nnx, nnx.backends as b; "
                  "print('cupy' in sys.modules, b._status.cache_info().currsize)", NNX_BACKEND="cupy")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "0"]


class _FakeCudaError(RuntimeError):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status


class _FakeKernel:
    """A RawKernel stand-in: compiles (or raises like CuPy does) and runs ``kernel`` on NumPy arrays."""

    def __init__(self, compile_error, kernel):
        self.compile_error, self.body = compile_error, kernel
        self.compiled = []

    def __call__(self, code, name, options=()):
        if self.compile_error is not None:
            raise self.compile_error
        self.compiled.append((code, name, options))

        def launch(grid, block, args):
            assert grid == (1,) and block == (args[0].size,)
            args[0][...] = self.body(args[0])
        return launch


def _fake_cupy(*, count=1, count_error=None, context_error=None, nvrtc_error=None, compile_error=None,
               kernel=lambda x: np.tanh(x) + 1.0) -> types.ModuleType:
    """Just the CuPy surface that the probe touches; ``kernel`` is what the probe's kernel computes."""
    def raise_or(value, error):
        def call():
            if error is not None:
                raise error
            return value
        return call

    runtime = types.SimpleNamespace(CUDARuntimeError=_FakeCudaError, getDeviceCount=raise_or(count, count_error),
                                    memGetInfo=raise_or((1 << 30, 1 << 31), context_error))
    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=runtime, nvrtc=types.SimpleNamespace(
        getVersion=raise_or((13, 0), nvrtc_error)))
    fake.RawKernel = _FakeKernel(compile_error, kernel)
    fake.asarray = lambda a: np.array(a, dtype=np.float64)
    fake.asnumpy = lambda a: np.array(a)
    return fake


@pytest.fixture
def probe(monkeypatch):
    """Run the registry's probe against a fake ``cupy``; the real state returns afterwards."""
    name = "nnx.backends.cupy_backend"
    saved = sys.modules.pop(name, None)

    def run(fake):
        monkeypatch.setitem(sys.modules, "cupy", fake)
        monkeypatch.setitem(sys.modules, "cupy.cublas", types.ModuleType("cupy.cublas"))
        sys.modules.pop(name, None)
        backends._status.cache_clear()
        backends._instance.cache_clear()
        return backends.available_backends()["cupy"], backends._status("cupy")[2]

    yield run
    sys.modules.pop(name, None)
    if saved is not None:
        sys.modules[name] = saved
        monkeypatch.setattr(backends, "cupy_backend", saved, raising=False)
    backends._status.cache_clear()
    backends._instance.cache_clear()


def test_no_driver_is_reported_with_the_cuda_error_chained(probe):
    error = _FakeCudaError(35, "cudaErrorInsufficientDriver: CUDA driver version is insufficient")
    reason, exc = probe(_fake_cupy(count_error=error))
    assert reason == "no usable CUDA device (cudaErrorInsufficientDriver: CUDA driver version is insufficient)"
    assert isinstance(exc, BackendUnavailableError) and exc.__cause__ is error


def test_no_device_is_reported_as_such(probe):
    assert probe(_fake_cupy(count=0))[0] == "no CUDA device found"
    reason, exc = probe(_fake_cupy(count_error=_FakeCudaError(100, "cudaErrorNoDevice: no CUDA-capable device")))
    assert reason.startswith("no CUDA device found (cudaErrorNoDevice")
    assert exc.__cause__.status == 100


def test_unusable_device_and_missing_libraries_are_reported(probe):
    reason, _ = probe(_fake_cupy(context_error=_FakeCudaError(46, "cudaErrorDevicesUnavailable: busy")))
    assert reason == "CUDA device 0 is not usable (cudaErrorDevicesUnavailable: busy)"
    reason, exc = probe(_fake_cupy(nvrtc_error=OSError("libnvrtc.so.13 not found")))
    assert reason.startswith("CUDA libraries missing (libnvrtc.so.13 not found); install")
    assert "[ctk]" in reason and isinstance(exc.__cause__, OSError)


def test_the_probe_compiles_and_runs_a_kernel(probe):
    fake = _fake_cupy()
    assert probe(fake) == (None, None)
    (code, name, _), = fake.RawKernel.compiled
    assert name in code and "tanh" in code and "__global__" in code


def test_a_kernel_that_cannot_compile_is_the_reason(probe):
    missing = RuntimeError("Failed to find CUDA headers. Please install CUDA toolkit headers (e.g., pip install "
                           "cupy-cuda12x[ctk]) or specify CUDA_PATH environment variable.")
    reason, exc = probe(_fake_cupy(compile_error=missing))
    assert reason.startswith("CuPy cannot compile or run a CUDA kernel (RuntimeError: Failed to find CUDA headers")
    assert "[ctk]" in reason and exc.__cause__ is missing
    with pytest.raises(BackendUnavailableError, match="cannot compile or run a CUDA kernel"):
        backends._instance("cupy")


def test_a_kernel_that_computes_wrong_values_is_the_reason(probe):
    reason, _ = probe(_fake_cupy(kernel=lambda x: np.zeros_like(x)))
    assert reason.startswith("a test CUDA kernel ran but returned [0.0, 0.0] instead of [1.46")
    assert "not computing correctly" in reason


def test_probe_failure_never_escapes_and_auto_picks_the_next_backend(probe, monkeypatch):
    monkeypatch.delenv("NNX_BACKEND", raising=False)
    probe(_fake_cupy(count_error=_FakeCudaError(35, "no driver")))
    explained = nnx.explain_backend()
    assert explained.startswith("auto: cupy unavailable (no usable CUDA device (no driver))")
    assert nnx.get_backend().name in ("numba", "numpy")
    monkeypatch.setenv("NNX_BACKEND", "cupy")
    with pytest.raises(BackendUnavailableError, match="no usable CUDA device") as info:
        nnx.get_backend()
    assert isinstance(info.value.__cause__, BackendUnavailableError)


# ---------------------------------------------------------------- planning
def _net(sizes, dtype="float32"):
    return Network(tuple(sizes), "relu", "softmax", dtype)


def test_row_blocks_depend_on_the_network_only_and_are_powers_of_two():
    net = _net((784, 4096, 10))
    block = plan.block_rows(net)
    assert block & (block - 1) == 0
    assert block * plan.row_bytes(net) <= plan.BLOCK_BYTES < 2 * block * plan.row_bytes(net)
    assert plan.block_rows(_net((784, 4096, 10), "float64")) == block // 2
    small = plan.plan_chunks(net, 65536, 2 << 30)
    large = plan.plan_chunks(net, 65536, 80 << 30)
    assert small.block == large.block == block
    assert large.chunk >= 65536 and large.n_chunks == 1
    assert small.chunk % block == 0 and small.n_chunks > 1


def test_chunks_cover_the_batch_in_block_order():
    chunks = plan.ChunkPlan(n_samples=1000, block=128, chunk=384)
    flat = [b for chunk in chunks.chunks() for b in chunk]
    assert flat == chunks.blocks()
    assert flat[0] == (0, 128) and flat[-1] == (896, 1000) and chunks.n_blocks == 8
    assert [len(c) for c in chunks.chunks()] == [3, 3, 2] == [3, 3, chunks.n_blocks - 6]


def test_workspace_of_the_chosen_chunk_fits_the_free_memory():
    net = _net((784, 4096, 10))
    for free in (1 << 30, 3 << 30, 10 << 30):
        chunks = plan.plan_chunks(net, 65536, free)
        used = plan.HEADROOM_BYTES + plan.fixed_bytes(net, 65536) + chunks.chunk * plan.row_bytes(net)
        assert used <= free or chunks.chunk == chunks.block * chunks.n_blocks


def test_too_little_memory_is_a_clear_error_with_the_numbers():
    net = _net((784, 65536, 10), "float64")
    with pytest.raises(plan.GpuMemoryError) as info:
        plan.plan_chunks(net, 10_000, 300 << 20)
    message = str(info.value)
    assert isinstance(info.value, nnx.OutOfMemoryError) and isinstance(info.value, MemoryError)
    assert "needs" in message and "300.00 MiB available" in message and "float32" in message
    assert "784-65536-10 float64 network on 10000 samples" in message and "left as it was" in message
    assert info.value.needed > info.value.available


def test_tiny_plans_depend_on_shapes_only_and_fill_the_gpu():
    assert plan.is_tiny(_net((2, 16384, 2))) and plan.is_tiny(_net((8, 3, 8)))
    assert not plan.is_tiny(_net((2, 3, 4, 2))) and not plan.is_tiny(_net((784, 100, 2)))
    tutorial = plan.plan_tiny(200, 2, 3, 2)
    assert tutorial.one_block and tutorial.slices_h == 1 and tutorial.slices_n * 3 <= tutorial.threads
    assert tutorial.shared_bytes(8) <= plan.ONE_BLOCK_SMEM_BYTES and tutorial.width == 2
    # 2 x 200 inputs, 2 x 200 targets, 17 parameters, 3 x 200 activations, 2 x 200 deltas, 85 x 17 partials
    assert tutorial.one_block_elements() == 400 + 400 + 17 + 600 + 400 + 85 * 17
    moons = plan.plan_tiny(4096, 2, 16384, 2)
    assert not moons.one_block
    assert moons.slices_h * 4096 >= plan.TINY_TARGET_ITEMS and moons.slices_n * 16384 >= plan.TINY_TARGET_ITEMS
    assert plan.plan_tiny(4096, 2, 16384, 2) == moons
    assert moons.grad_size == 2 * 16384 + 16384 + 16384 * 2 + 2


@pytest.mark.parametrize("n,h", [(4096, 16384), (4096, 65536), (16384, 8192)])
def test_sliced_launches_give_a_132_sm_gpu_several_blocks_per_sm(n, h):
    moons = plan.plan_tiny(n, 2, h, 2, 4)
    for items in (moons.slices_h * n, moons.slices_n * h):
        assert plan.grid_for(items) >= 4 * 132


@pytest.mark.parametrize("sizes,n", [((2, 3, 2), 200), ((2, 20, 2), 200), ((2, 64, 2), 96), ((8, 8, 8), 512)])
def test_single_block_plans_fit_shared_memory_or_fall_back_to_slices(sizes, n):
    for itemsize in (4, 8):
        tiny = plan.plan_tiny(n, sizes[0], sizes[1], sizes[2], itemsize)
        if tiny.one_block:
            assert tiny.shared_bytes(itemsize) <= plan.ONE_BLOCK_SMEM_BYTES
            assert tiny.threads % 32 == 0 and tiny.threads % tiny.lanes == 0 and tiny.lanes & (tiny.lanes - 1) == 0
        else:
            assert n * sizes[1] > plan.ONE_BLOCK_MAX_WORK or plan.plan_one_block(n, *sizes, itemsize) is None


def test_graph_node_cap_limits_passes_per_graph():
    assert plan.passes_per_graph(19) == plan.GRAPH_PASSES
    assert plan.passes_per_graph(100) == plan.MAX_GRAPH_NODES // 100
    assert plan.passes_per_graph(plan.MAX_GRAPH_NODES + 1) == 0
    chunked = Network((784, 4096, 4096, 10), "relu", "softmax", "float32")
    n = 1 << 20  # many row blocks: one pass exceeds the node cap and is counted launch by launch
    assert plan.launches_per_pass(chunked, n) == plan.eager_launches_per_pass(chunked, n) > plan.MAX_GRAPH_NODES


@pytest.mark.parametrize("passes", [0, 1, 63, 64, 129, 20000])
def test_graph_blocks_cover_the_passes(passes):
    blocks = plan.graph_blocks(passes, 64)
    assert sum(n * k for n, k in blocks) == passes
    assert sum(k for _, k in blocks) <= passes // 64 + 1


def test_the_single_block_plan_takes_a_thread_count_within_its_launch_bounds():
    """The GPU check times the threads the plan did not choose (gpu_smoke.plans_section)."""
    chosen = plan.plan_one_block(200, 2, 3, 2, 8)
    wider = plan.plan_one_block(200, 2, 3, 2, 8, threads=384)
    assert chosen.threads == 256 and (wider.threads, wider.slices_n) == (384, 384 // 3)
    assert wider.lanes == 16 and wider.shared_bytes(8) <= plan.ONE_BLOCK_SMEM_BYTES
    for bad in (100, 0, 1024):  # not a multiple of 32, or beyond the W=2 kernel's 512
        with pytest.raises(ValueError, match="multiple of 32 from 32 to 512"):
            plan.plan_one_block(200, 2, 3, 2, 8, threads=bad)


def test_grid_is_bounded():
    assert plan.grid_for(0) == 1 and plan.grid_for(257) == 2
    assert plan.grid_for(10**12) == plan.MAX_BLOCKS


# --------------------------------------------------------------- on a GPU
def _problem(sizes, hidden="tanh", output="softmax", dtype="float64", n=300, seed=0):
    """Labels from a linear rule the network can learn: with random labels, 600 hidden units and
    lr 0.5 memorise noise, and a rounding difference grows to 1e-5 in 1,000 passes (NumPy against
    Numba too), which would hide a real kernel error under the tolerance."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, sizes[0]))
    y = np.argmax(X @ rng.normal(size=(sizes[0], sizes[-1])), axis=1)
    return nnx.MLP(sizes, hidden=hidden, output=output, dtype=dtype, seed=seed), X, y


def _fit(backend_name, sizes, passes, **kw):
    model, X, y = _problem(sizes, **kw)
    with nnx.use_backend(backend_name):
        model.fit(X, y, passes=passes, lr=0.5, l2=1e-3, log_every=max(passes, 1))
    return model.params


def _rel_err(a_params, b_params) -> float:
    return max(float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
               for pa, pb in zip(a_params, b_params) for a, b in zip(pa, pb))


SHAPES = [(2, 3, 3), (2, 600, 2), (6, 40, 30, 4)]  # one block, sliced fused kernels, cuBLAS path


@on_gpu
@pytest.mark.parametrize("sizes", SHAPES, ids=str)
@pytest.mark.parametrize("passes,tol", [(1, 1e-12), (1000, 1e-10)])
def test_float64_parity_with_numpy(sizes, passes, tol):
    assert _rel_err(_fit("numpy", sizes, passes), _fit("cupy", sizes, passes)) <= tol


@on_gpu
@pytest.mark.parametrize("sizes", SHAPES, ids=str)
def test_float32_parity_with_numpy(sizes):
    ref, got = _fit("numpy", sizes, 200, dtype="float32"), _fit("cupy", sizes, 200, dtype="float32")
    assert _rel_err(ref, got) <= 1e-4


@on_gpu
@pytest.mark.parametrize("sizes", SHAPES, ids=str)
def test_same_seed_gives_bit_identical_parameters(sizes):
    first, second = _fit("cupy", sizes, 300), _fit("cupy", sizes, 300)
    assert all(np.array_equal(a, b) for pa, pb in zip(first, second) for a, b in zip(pa, pb))


def _train_with(backend, sizes, passes, n=300, dtype="float64"):
    model, X, y = _problem(sizes, n=n, dtype=dtype)
    net = model.net
    T = np.eye(sizes[-1])[y]
    data = backend.prepare_data(net, X, T)
    state = TrainState(backend.prepare_params(net, model.params))
    backend.train(net, state, data, Objective("mean", 1e-3), SGD(0.5), passes)
    return state, backend.params_to_numpy(state.params)


def _cupy_backend(**kw):
    from nnx.backends.cupy_backend import CupyBackend

    return CupyBackend(**kw)


@on_gpu
@pytest.mark.parametrize("sizes", SHAPES, ids=str)
def test_graphs_change_launches_not_bits_and_reference_math_agrees(sizes):
    _, graphs = _train_with(_cupy_backend(), sizes, 200)
    _, eager = _train_with(_cupy_backend(graphs=False), sizes, 200)
    _, reference = _train_with(_cupy_backend(fused=False), sizes, 200)
    assert all(np.array_equal(a, b) for pa, pb in zip(graphs, eager) for a, b in zip(pa, pb))
    assert _rel_err(reference, graphs) <= 1e-10


@on_gpu
def test_chunked_batches_give_bit_identical_parameters(monkeypatch):
    sizes = (6, 64, 48, 4)
    monkeypatch.setattr(plan, "BLOCK_BYTES", 64 * plan.row_bytes(Network(sizes)))  # 64-row blocks
    _, whole = _train_with(_cupy_backend(), sizes, 50, n=1000)
    backend = _cupy_backend()
    one_block = plan.HEADROOM_BYTES + plan.fixed_bytes(Network(sizes), 1000) + 128 * plan.row_bytes(Network(sizes))
    monkeypatch.setattr(backend.device, "free_bytes", lambda: one_block)
    _, chunked = _train_with(backend, sizes, 50, n=1000)
    assert all(np.array_equal(a, b) for pa, pb in zip(whole, chunked) for a, b in zip(pa, pb))


@on_gpu
def test_out_of_memory_is_clear_and_leaves_the_model_as_it_was(monkeypatch):
    import cupy

    model, X, y = _problem((20, 4096, 4096, 10), n=2000)
    before = model.params
    with nnx.use_backend("cupy") as backend:
        monkeypatch.setattr(backend.device, "free_bytes", lambda: 200 << 20)
        with pytest.raises(plan.GpuMemoryError, match="not enough GPU memory for"):
            model.fit(X, y, passes=5)
        monkeypatch.undo()
        pool = cupy.get_default_memory_pool()
        limit = pool.get_limit()
        pool.set_limit(size=pool.used_bytes() + (1 << 20))
        try:
            with pytest.raises(plan.GpuMemoryError, match="the training data"):
                model.fit(np.zeros((100_000, 20)), np.zeros(100_000, dtype=int), passes=1)
        finally:
            pool.set_limit(size=limit)
    assert model.updates == 0
    assert all(np.array_equal(a, b) for pa, pb in zip(before, model.params) for a, b in zip(pa, pb))


@on_gpu
def test_predictions_come_back_as_numpy_unless_kept_on_the_device():
    import cupy

    model, X, _ = _problem((2, 3, 3))
    with nnx.use_backend("cupy"):
        proba = model.predict_proba(X)
        kept = model.predict_proba(X, keep_on_device=True)
    assert isinstance(proba, np.ndarray) and isinstance(kept, cupy.ndarray)
    np.testing.assert_array_equal(proba, cupy.asnumpy(kept))
    with nnx.use_backend("numpy"):
        np.testing.assert_allclose(model.predict_proba(X), proba, rtol=1e-12, atol=1e-15)


@on_gpu
def test_graph_replay_keeps_python_launches_per_pass_small():
    backend = _cupy_backend()
    calls = []
    for name in ("launch", "gemm"):
        original = getattr(backend.device, name)
        setattr(backend.device, name, lambda *a, _f=original, **k: (calls.append(1), _f(*a, **k)))
    _train_with(backend, (6, 40, 30, 4), 1000)
    eager = []
    probe = _cupy_backend(graphs=False)
    original = probe.device.launch, probe.device.gemm
    probe.device.launch = lambda *a, **k: (eager.append(1), original[0](*a, **k))
    probe.device.gemm = lambda *a, **k: (eager.append(1), original[1](*a, **k))
    _train_with(probe, (6, 40, 30, 4), 1)
    per_pass = len(eager)
    assert per_pass == 20  # the update's record, 3 layers: 6 + 3 products, 2 bias+activation, 2 back-activation,
    #                        the head, 3 updates
    assert len(calls) == per_pass * (1 + 64 + 1000 % 64)  # the warm-up, then two graphs captured once
    assert backend._replayer.captures == 2


@on_gpu
def test_dense_networks_replay_graphs_with_their_cublas_products(recwarn):
    from nnx.backends.cuda_program import GraphCaptureWarning

    backend = _cupy_backend()
    _, graphs = _train_with(backend, (6, 40, 30, 4), 200)
    net = Network((6, 40, 30, 4), "tanh", "softmax", "float64")
    assert backend.device.blas_unavailable is None and backend.graph_fallback(net) is None
    assert backend._replayer.captures == 2 and backend.launches_per_pass(net, 300) == 1 / plan.GRAPH_PASSES
    assert not [w for w in recwarn.list if issubclass(w.category, GraphCaptureWarning)]
    _, eager = _train_with(_cupy_backend(graphs=False), (6, 40, 30, 4), 200)
    assert all(np.array_equal(a, b) for pa, pb in zip(graphs, eager) for a, b in zip(pa, pb))


# Single-block plans on the GPU's own barriers and shuffles: hidden slices, 512 threads, width 8.
@on_gpu
@pytest.mark.parametrize("sizes,n", [((2, 4, 2), 16), ((2, 4, 2), 400), ((8, 6, 8), 64), ((2, 20, 2), 200)])
def test_single_block_plans_match_numpy(sizes, n):
    model, X, y = _problem(sizes, n=n)
    assert plan.plan_tiny_net(model.net, n).one_block
    for passes, tol in ((1, 1e-12), (300, 1e-10)):
        ref = _fit("numpy", sizes, passes, n=n)
        assert _rel_err(ref, _fit("cupy", sizes, passes, n=n)) <= tol


@on_gpu
def test_every_kernel_instance_compiles_with_nvrtc():
    from nnx.backends.cupy_backend import CupyDevice
    from nnx.kernels import cuda_sources as src

    device = CupyDevice()
    for source in src.SOURCES:
        for kernel in source.kernels:
            for dtype in ("float32", "float64"):
                for width in kernel.widths or (None,):
                    fn = device.function(kernel.name, np.dtype(dtype), width)
                    assert fn.num_regs > 0 and fn.local_size_bytes == 0


# ------------------------------------------- optimisers, minibatches, schedules on a GPU
def _train_intervals(backend, sizes, optimizer, batch_size, intervals, n=200, dtype="float64"):
    """Intervals of updates at the seam, as the training driver runs them: a cosine schedule's
    learning rates and the epochs' shuffled batches, one interval after another."""
    model, X, y = _problem(sizes, n=n, dtype=dtype)
    net = model.net
    data = backend.prepare_data(net, X, np.eye(sizes[-1])[y])
    state = TrainState(backend.prepare_params(net, model.params), slots={  # fresh zeros per state array
        name: backend.prepare_params(net, [(np.zeros_like(W), np.zeros_like(b)) for W, b in model.params])
        for name in optimizer.slots()})
    stream = None if batch_size is None else BatchStream(np.random.default_rng(1), n, batch_size, True)
    per_epoch = 1 if batch_size is None else -(-n // batch_size)
    for count in intervals:
        lrs = learning_rates(Cosine(T_max=30), optimizer.lr, state.step, count, per_epoch)
        backend.train(net, state, data, Objective("mean", 1e-3), optimizer, lrs,
                      None if stream is None else stream.take(count))
    backend.synchronize()
    slots = {name: backend.params_to_numpy(pairs) for name, pairs in state.slots.items()}
    return backend.params_to_numpy(state.params), slots


def _same_bits(a, b) -> bool:
    return all(np.array_equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


GPU_OPTIMIZERS = [SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), Adam(0.01, amsgrad=True),
                  AdamW(0.01), RMSprop(0.005, momentum=0.5, centered=True)]


@on_gpu
@pytest.mark.parametrize("batch_size", [None, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("sizes", SHAPES, ids=str)
def test_optimisers_match_numpy_and_graphs_change_launches_not_bits(sizes, batch_size):
    """Each optimiser for ten intervals of one epoch (five updates at full batch) under a cosine
    schedule: NumPy's numbers to 1e-10, and the same bits with and without CUDA graphs."""
    from nnx.backends.numpy_backend import NumpyBackend

    intervals = [5 if batch_size is None else -(-200 // batch_size)] * 10
    for optimizer in GPU_OPTIMIZERS:
        want, want_slots = _train_intervals(NumpyBackend(), sizes, optimizer, batch_size, intervals)
        graphs, graphs_slots = _train_intervals(_cupy_backend(), sizes, optimizer, batch_size, intervals)
        eager, eager_slots = _train_intervals(_cupy_backend(graphs=False), sizes, optimizer, batch_size, intervals)
        assert _rel_err(want, graphs) <= 1e-10, optimizer
        for name in want_slots:
            assert _rel_err(want_slots[name], graphs_slots[name]) <= 1e-10, (optimizer, name)
            assert _same_bits(graphs_slots[name], eager_slots[name]), (optimizer, name)
        assert _same_bits(graphs, eager), optimizer


@on_gpu
@pytest.mark.parametrize("sizes", SHAPES[1:], ids=str)
def test_one_capture_serves_every_step_and_interval(sizes):
    """Ten intervals of an epoch of minibatches under Adam and a schedule: one graph captured
    (the epoch's 7 updates), replayed ten times."""
    backend = _cupy_backend()
    _train_intervals(backend, sizes, Adam(0.01), 32, [7] * 10)
    assert backend._replayer.captures == 1
    net = Network(tuple(sizes), "tanh", "softmax", "float64")
    assert backend.graph_fallback(net) is None
    assert backend.launches_per_pass(net, 200, batch_size=32, n_slots=2) == 1 / plan.GRAPH_PASSES


@on_gpu
def test_the_tutorial_net_runs_every_optimiser_and_minibatch_in_the_single_block_kernel():
    backend = _cupy_backend()
    calls = []
    original = backend.device.launch
    backend.device.launch = lambda name, *a, **k: (calls.append(name), original(name, *a, **k))
    for optimizer in GPU_OPTIMIZERS:
        _train_intervals(backend, (2, 3, 2), optimizer, 32, [7] * 3)
    assert set(calls) == {"nnx_tiny_train"} and len(calls) == 3 * len(GPU_OPTIMIZERS)


@on_gpu
def test_the_backend_compiles_exactly_the_optimisers_the_kernels_implement():
    class Tuned(Adam):
        pass

    backend = _cupy_backend()
    assert all(backend.compiles(opt) for opt in GPU_OPTIMIZERS + [SGD(0.1)])
    assert not backend.compiles(Tuned()) and not _cupy_backend(fused=False).compiles(Adam())
