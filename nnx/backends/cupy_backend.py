"""The CuPy backend: the whole training loop on an NVIDIA GPU.

Data moves to the device once per ``fit``; parameters and the optimiser's
state (``TrainState.slots``) stay there. Matrix products go to cuBLAS; the
elementwise work runs in the fused kernels of ``nnx/kernels/*.cu`` (compiled
once by NVRTC through ``cupy.RawModule``, cached by CuPy); networks with one
hidden layer and narrow ends use fused kernels that never store the N x H
activations. Every optimiser the kernels implement (``compiles``: an exact
class of ``cuda_sources.COMPILED_OPTIMIZERS``) runs on the device, on full
batches or minibatches; any other runs the base reference loop. Each update
reads its learning rate, batch and step from device memory
(``cuda_program.UpdateRecord``), so launch overhead stays a small constant
per update: tiny networks run whole intervals inside one thread block,
everything else replays CUDA graphs of ``cuda_plan.GRAPH_PASSES`` updates,
captured once per fit and reused across steps, schedules and intervals,
cuBLAS products included (``cuda_blas``: nnx's own handle, because CuPy's
cuBLAS calls refuse stream capture). Reductions are fixed-order (no atomics),
so a seed gives the same bits run to run. Op-level methods not overridden
here run the base reference math unchanged on ``cupy``.

NVRTC contracts multiply-adds into FMAs (its default, kept for speed and
accuracy); the CPU emulation of the kernels in the tests does not, so the two
agree within the parity tolerances, not bit for bit.
"""
from __future__ import annotations

import contextlib
import importlib
import itertools
import threading
import time
import weakref
from collections.abc import Iterator

import cupy
import numpy as np

from ..errors import BackendUnavailableError
from ..kernels import cuda_sources as src
from ..batching import Batches
from ..network import ACTIVATION_CODES, Network, Objective, TrainState
from ..optim import Optimizer
from . import cuda_blas
from . import cuda_plan as plan
from .base import Backend, Data, l2_penalty, learning_rates
from .cuda_program import PassReplayer, Trainer, build_program, kernel_args, program_bytes
from .cuda_program import compiles as kernels_implement

_CUDA_ERROR_NO_DEVICE = 100  # cudaErrorNoDevice; no driver at all reads as cudaErrorInsufficientDriver (35)
_CUDA_LIBS_HINT = ("install the CUDA 12/13 runtime libraries, e.g. pip install 'cupy-cuda12x[ctk]' or "
                   "'cupy-cuda13x[ctk]', or a CUDA toolkit")
# The probe's kernel: NVRTC, the CUDA headers CuPy adds to every compile, the math library and a launch.
_PROBE_SOURCE = r"""
extern "C" __global__ void nnx_probe(double* x) {
    x[threadIdx.x] = tanh(x[threadIdx.x]) + 1.0;
}
"""
_PROBE_INPUT = (0.5, -0.25)


def _probe_kernel() -> None:
    """Compile and run a trivial kernel: what every fit needs, checked before a backend is offered."""
    try:
        kernel = cupy.RawKernel(_PROBE_SOURCE, "nnx_probe", options=("--std=c++17",))
        x = cupy.asarray(np.array(_PROBE_INPUT))
        kernel((1,), (len(_PROBE_INPUT),), (x,))
        got = np.asarray(cupy.asnumpy(x))
    except Exception as exc:  # noqa: BLE001 - NVRTC, the header search and the driver raise several types
        raise BackendUnavailableError(
            f"CuPy cannot compile or run a CUDA kernel ({type(exc).__name__}: {exc}); {_CUDA_LIBS_HINT}") from exc
    expected = np.tanh(np.array(_PROBE_INPUT)) + 1.0
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-12, atol=0):
        raise BackendUnavailableError(f"a test CUDA kernel ran but returned {got.tolist()} instead of "
                                      f"{expected.tolist()}: the GPU or its driver is not computing correctly")


def check() -> None:
    """Raise BackendUnavailableError (cause chained) unless a device, cuBLAS, NVRTC and a kernel work."""
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        if getattr(exc, "status", None) == _CUDA_ERROR_NO_DEVICE:
            raise BackendUnavailableError(f"no CUDA device found ({exc})") from exc
        raise BackendUnavailableError(f"no usable CUDA device ({exc})") from exc
    if count == 0:
        raise BackendUnavailableError("no CUDA device found")
    try:
        cupy.cuda.runtime.memGetInfo()  # creates the context: fails on a busy or prohibited device
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailableError(f"CUDA device 0 is not usable ({exc})") from exc
    try:
        importlib.import_module("cupy.cublas")  # loads libcublas
        cupy.cuda.nvrtc.getVersion()
    except Exception as exc:  # noqa: BLE001 - the library loaders raise several types
        raise BackendUnavailableError(f"CUDA libraries missing ({exc}); {_CUDA_LIBS_HINT}") from exc
    _probe_kernel()


def create() -> Backend:
    return CupyBackend()



_MODULES: dict[str, cupy.RawModule] = {}


def _module(source: src.CudaSource) -> cupy.RawModule:
    """One RawModule per source with every named instance; NVRTC runs on first use only."""
    module = _MODULES.get(source.filename)
    if module is None:
        module = cupy.RawModule(code=source.code(), options=("--std=c++17",),
                                name_expressions=source.name_expressions())
        _MODULES[source.filename] = module
    return module


def capture_errors() -> tuple[type[BaseException], ...]:
    """What a refused stream capture raises: CUDA runtime and driver errors, nnx's cuBLAS
    errors, and CuPy's NotImplementedError for its own cuBLAS calls."""
    return (cupy.cuda.runtime.CUDARuntimeError, cupy.cuda.driver.CUDADriverError, cuda_blas.CublasError,
            NotImplementedError)


class CupyDevice:
    """The ``cuda_program`` device interface on CuPy: RawModule kernels and cuBLAS.

    ``bind(stream)`` gives the device its own cuBLAS handle on that stream; the
    programs' products then go through it and can be captured. Where that
    handle cannot be had, ``blas_unavailable`` says why and products go through
    CuPy's cuBLAS, which runs eagerly only.
    """

    xp = cupy

    def __init__(self) -> None:
        self._functions: dict[tuple[str, str, int | None], object] = {}
        self._blas: cuda_blas.OwnedHandle | None = None
        self._workspace = None
        self.blas_unavailable: str | None = None

    def empty(self, shape, dtype):
        return cupy.empty(shape, dtype=dtype)

    def upload(self, dst, values: np.ndarray) -> None:
        """Host values into an existing device buffer, on the current stream (never captured)."""
        dst.set(np.ascontiguousarray(values, dtype=dst.dtype))

    def ptr(self, a) -> int:
        return int(a.data.ptr)

    def bind(self, stream: cupy.cuda.Stream) -> None:
        """Create nnx's cuBLAS handle for ``stream`` with its own workspace (never during a capture)."""
        try:
            importlib.import_module("cupy.cublas")  # CuPy loads libcublas (through cuda-pathfinder if need be)
            major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
            library = cuda_blas.CublasLibrary(cuda_blas.loaded_library((major, 13, 12, 11)))
            workspace = cupy.empty(cuda_blas.WORKSPACE_BYTES, dtype=cupy.uint8)
            self._blas = cuda_blas.OwnedHandle(library, stream.ptr, workspace.data.ptr, workspace.nbytes)
        except (ImportError, OSError, AttributeError, cuda_blas.CublasError) as exc:
            self.blas_unavailable = (f"nnx cannot call cuBLAS directly ({type(exc).__name__}: {exc}) and CuPy's "
                                     "cuBLAS calls refuse stream capture")
            return
        self._workspace = workspace
        # Destroyed with the device; at interpreter exit the process takes it (CUDA may be torn down first).
        weakref.finalize(self, _close_quietly, self._blas).atexit = False

    def blas_version(self) -> int | None:
        """cuBLAS's version number as the bound handle reports it (None before ``bind``)."""
        return None if self._blas is None else self._blas.library.version(self._blas.handle)

    def gemm(self, transa: str, transb: str, a, b, out, beta: float) -> None:
        """out = op(a) @ op(b) + beta * out for C-contiguous operands (row slices, reshapes)."""
        for x in (a, b, out):
            if not x.flags.c_contiguous:
                raise ValueError("gemm: operands must be C-contiguous")
        if self._blas is None:
            importlib.import_module("cupy.cublas").gemm(transa, transb, a, b, out=out, alpha=1.0, beta=beta)
            return
        if cupy.cuda.get_current_stream().ptr != self._blas.stream_ptr:
            raise RuntimeError("nnx's cuBLAS handle is bound to the backend's stream; run programs inside it")
        self._blas.gemm(out.dtype, transa, transb, (a.data.ptr, a.shape), (b.data.ptr, b.shape),
                        (out.data.ptr, out.shape), beta)

    def function(self, name: str, dtype: np.dtype, width: int | None = None):
        """The compiled ``RawKernel`` of instance ``name<T>`` (``name<T, width>``)."""
        ctype = src.ELEMENT_TYPES[np.dtype(dtype).name]
        fn = self._functions.get((name, ctype, width))
        if fn is None:
            source, spec = src.kernel(name)
            fn = _module(source).get_function(spec.instance(ctype, width))
            self._functions[(name, ctype, width)] = fn
        return fn

    def launch(self, name: str, dtype, n_items: int, args: tuple, *, width: int | None = None,
               one_block: bool = False, threads: int = plan.THREADS, shared_mem: int = 0) -> None:
        args = kernel_args(name, np.dtype(dtype), args)
        for a in args:
            if isinstance(a, cupy.ndarray) and not a.flags.c_contiguous:
                raise ValueError(f"{name}: kernels read arrays as flat C-contiguous buffers")
        grid = 1 if one_block else plan.grid_for(n_items)
        self.function(name, dtype, width)((grid,), (threads,), args, shared_mem=shared_mem)

    def free_bytes(self) -> int:
        """Free device memory plus what CuPy's pool holds unused."""
        return int(cupy.cuda.runtime.memGetInfo()[0]) + int(cupy.get_default_memory_pool().free_bytes())


def _close_quietly(handle: cuda_blas.OwnedHandle) -> None:
    """Finalizer: a failure to destroy a handle is no reason to raise during garbage collection."""
    try:
        handle.close()
    except cuda_blas.CublasError:
        pass


class CupyBackend(Backend):
    """Fused GPU training; ``fused=False`` runs the base reference math op by op on CuPy.

    ``graphs=False`` launches every kernel of every pass (no CUDA graphs); both
    switches exist for benchmarks and diagnosis and do not change results
    beyond rounding (``fused``) or at all (``graphs``).
    """

    name = "cupy"
    xp = cupy

    def __init__(self, *, fused: bool = True, graphs: bool = True, per_graph: int = plan.GRAPH_PASSES):
        self.fused, self.graphs = fused, graphs
        self.device = CupyDevice()
        self._per_graph = per_graph
        self._stream: cupy.cuda.Stream | None = None
        self._replayer: PassReplayer | None = None
        self._programs: dict[int, tuple[tuple, int, object]] = {}
        self._serial = itertools.count()
        # One stream per backend: threads sharing the backend take turns on it, since a pass being
        # captured into a graph must not see another thread's work or events on its stream.
        self._lock = threading.RLock()

    # ------------------------------------------------------- bench hooks
    def warm_up(self, net: Network, n_samples: int) -> float:
        """Compile and load every kernel for the network's dtype; seconds taken (NVRTC, or CuPy's cache)."""
        start = time.perf_counter()
        for source in src.SOURCES:
            for kernel in source.kernels:
                for width in kernel.widths or (None,):
                    self.device.function(kernel.name, net.np_dtype, width)
        self._ensure_stream()
        cupy.cuda.get_current_stream().synchronize()
        return time.perf_counter() - start

    def launches_per_pass(self, net: Network, n_samples: int, batch_size: int | None = None,
                          n_slots: int = 0) -> float:
        """Host-side launches per update in a long run (graphs and single-block updates count fractions),
        for minibatches of ``batch_size`` (None: full batch) and an optimiser with ``n_slots`` state arrays.

        Counts every launch where graphs are off, where this network's updates
        could not be captured (``graph_fallback`` says why) or where one update
        exceeds the graph node cap.
        """
        if not self.fused:
            raise NotImplementedError("the reference math issues one launch per array operation")
        graphs = self.graphs and self.graph_fallback(net) is None
        rows = None if batch_size is None else min(batch_size, n_samples)
        return plan.launches_per_pass(net, n_samples, graphs=graphs, per_graph=self._per_graph, batch_rows=rows,
                                      slots=n_slots)

    def graph_fallback(self, net: Network) -> str | None:
        """Why this network's passes launch every kernel instead of replaying graphs, or None."""
        if plan.is_tiny(net):
            return None if self._replayer is None else self._replayer.eager_reasons.get(net)
        self._ensure_stream()  # binding the cuBLAS handle decides whether products can be captured
        return self.device.blas_unavailable or self._replayer.eager_reasons.get(net)

    # ------------------------------------------------------------------ data
    def to_numpy(self, a) -> np.ndarray:
        return cupy.asnumpy(a)

    def synchronize(self) -> None:
        cupy.cuda.get_current_stream().synchronize()
        if self._stream is not None:
            self._stream.synchronize()

    def prepare_data(self, net: Network, X: np.ndarray, T: np.ndarray) -> Data:
        with self._out_of_memory("the training data", plan.data_bytes(net, X.shape[0])):
            return super().prepare_data(net, X, T)

    def prepare_params(self, net: Network, params) -> list[tuple[object, object]]:
        n_params = sum(i * o + o for i, o in net.layer_shapes())
        with self._out_of_memory("the parameters", n_params * net.np_dtype.itemsize):
            return super().prepare_params(net, params)

    @contextlib.contextmanager
    def _out_of_memory(self, what: str, needed: int) -> Iterator[None]:
        try:
            yield
        except cupy.cuda.memory.OutOfMemoryError as exc:
            raise plan.GpuMemoryError(what, needed, self.device.free_bytes(),
                                      "Use dtype='float32', fewer samples or fewer hidden units, or free GPU "
                                      f"memory held by other arrays or processes ({exc}).") from exc

    def _ensure_stream(self) -> cupy.cuda.Stream:
        """The backend's own non-blocking stream (graphs need one), its cuBLAS handle and replayer."""
        with self._lock:
            if self._stream is None:
                self._stream = cupy.cuda.Stream(non_blocking=True)
                self.device.bind(self._stream)
                self._replayer = PassReplayer(self._stream, self._per_graph, capture_errors=capture_errors())
            return self._stream

    @contextlib.contextmanager
    def _side_stream(self) -> Iterator[cupy.cuda.Stream]:
        """Run on the backend's own stream, ordered after and before the caller's current stream,
        one thread at a time."""
        with self._lock:
            self._ensure_stream()
            current = cupy.cuda.get_current_stream()
            self._stream.wait_event(current.record())
            try:
                with self._stream:
                    yield self._stream
            finally:
                current.wait_event(self._stream.record())

    # ---------------------------------------------------------------- memory
    def fit_bytes(self, net: Network, n_samples: int, batch_size: int | None = None, n_slots: int = 0) -> int:
        """The least a fit needs on the device: the data; the parameters and the optimiser's state,
        twice (the driver snapshots them per interval); the program that computes the loss over
        all samples and, for minibatches or a single-block plan that the state reshapes, the
        program that trains (a dense program's chunks grow to what is free); an epoch's sample
        order; and the headroom left for cuBLAS and the CUDA context."""
        n_params = sum((i + 1) * o for i, o in net.layer_shapes())
        itemsize = net.np_dtype.itemsize
        rows = None if batch_size is None else min(batch_size, n_samples)
        need = (plan.data_bytes(net, n_samples) + 2 * (1 + n_slots) * n_params * itemsize + plan.HEADROOM_BYTES
                + program_bytes(net, n_samples))
        if rows is not None:
            need += program_bytes(net, n_samples, rows, n_slots) + 8 * n_samples
        elif plan.is_tiny(net) and plan.plan_tiny_net(net, n_samples, None, n_slots) != plan.plan_tiny_net(
                net, n_samples):
            need += program_bytes(net, n_samples, None, n_slots)
        return need

    def predict_bytes(self, net: Network, n_samples: int) -> int:
        return self.fit_bytes(net, n_samples)

    def available_bytes(self) -> int | None:
        return self.device.free_bytes()

    def out_of_memory_error(self, what: str, needed: int, available: int, advice: str) -> Exception:
        return plan.GpuMemoryError(what, needed, available, advice)

    # -------------------------------------------------------------- programs
    def _build(self, net: Network, params, X, T, what: str, rows: int | None = None, slots: int = 0, reuse=None):
        """``cuda_program.build_program`` with CuPy's out-of-memory error turned into nnx's."""
        with self._out_of_memory(what, program_bytes(net, int(X.shape[0]), rows, slots)):
            return build_program(self.device, net, params, X, T, free_bytes=self.device.free_bytes(), what=what,
                                 rows=rows, slots=slots, reuse=reuse)

    def _fit(self, net: Network, params, data: Data, what: str):
        """(serial, program, trainer) bound to these data and parameter arrays, built once and reused.

        The program computes losses and gradients over all samples; the trainer
        runs updates (and builds the programs they need on first use). Cached per
        Data object (dropped when it is collected); a different set of parameter
        arrays (a restored snapshot, say) builds a new program and trainer.
        """
        key = (net, self.device.ptr(data.X), self.device.ptr(data.T),
               tuple(self.device.ptr(a) for pair in params for a in pair))
        entry = self._programs.get(id(data))
        if entry is not None and entry[0] == key:
            return entry[1:]
        if entry is None:
            weakref.finalize(data, self._programs.pop, id(data), None)
        self._programs.pop(id(data), None)  # free the old workspace before building the new one
        program = self._build(net, params, data.X, data.T, what)

        def build(rows: int | None, slots: int):
            batches = "" if rows is None else f" in minibatches of {rows}"
            return self._build(net, params, data.X, data.T, f"training on {data.n_samples} samples{batches}", rows,
                               slots, reuse=program)

        with self._out_of_memory("the update record", 1 << 12):
            trainer = Trainer(self.device, net, data.X, build)
        self._programs[id(data)] = (key, next(self._serial), program, trainer)
        return self._programs[id(data)][1:]

    # ------------------------------------------------------------ overrides
    def compiles(self, optimizer: Optimizer) -> bool:
        """Whether ``optimizer`` runs in the fused kernels: its exact class is one the kernels
        implement (``cuda_sources.COMPILED_OPTIMIZERS``; a subclass is another optimiser)."""
        return self.fused and kernels_implement(optimizer)

    def train(self, net: Network, state: TrainState, data: Data, objective: Objective, optimizer: Optimizer,
              lrs, batches: Batches | None = None) -> None:
        lrs = learning_rates(optimizer, lrs)
        if not self.compiles(optimizer):
            return super().train(net, state, data, objective, optimizer, lrs, batches)
        passes = int(lrs.size)
        if passes <= 0:
            return None
        serial, _, trainer = self._fit(net, state.params, data, f"training on {data.n_samples} samples")
        with self._side_stream():
            trainer.train(state.slots, optimizer, lrs, batches, state.step, objective.l2,
                          objective.reduction == "mean", replayer=self._replayer if self.graphs else None,
                          key=serial, tag=net, blas_unavailable=self.device.blas_unavailable)
        state.updates += passes
        state.step += passes
        return None

    def _row_losses(self, net: Network, params, data: Data) -> float:
        if not self.fused:
            logits = self.forward(net, params, data.X, logits=True)[-1]
            return self.head_loss_sum(net.output, logits, data.T)
        _, program, _ = self._fit(net, params, data, f"the loss on {data.n_samples} samples")
        n = data.n_samples
        with self._out_of_memory("the loss", n * (net.n_outputs + 1) * net.np_dtype.itemsize):
            out, loss = cupy.empty((n, net.n_outputs), net.np_dtype), cupy.empty(n, net.np_dtype)
        with self._side_stream():
            program.head_rows(src.MODE_LOSS, out, loss)
            total = loss.sum()
        return float(total)

    def objective_value(self, net: Network, params, data: Data, objective: Objective) -> float:
        total = self._row_losses(net, params, data)
        total += l2_penalty([W for W, _ in params], objective.l2)
        return total / data.n_samples

    def data_loss(self, net: Network, params, data: Data) -> float:
        return self._row_losses(net, params, data) / data.n_samples

    def predict_output(self, net: Network, params, X):
        if not self.fused:
            return super().predict_output(net, params, X)
        n = int(X.shape[0])
        program = self._build(net, params, X, None, f"prediction on {n} samples")
        with self._out_of_memory("the predictions", n * (net.n_outputs + 1) * net.np_dtype.itemsize):
            out, scratch = cupy.empty((n, net.n_outputs), net.np_dtype), cupy.empty(n, net.np_dtype)
        with self._side_stream():
            program.head_rows(src.MODE_OUTPUT, out, scratch)
        return out

    def gradients(self, net: Network, params, data: Data, objective: Objective):
        if not self.fused:
            return super().gradients(net, params, data, objective)
        _, program, _ = self._fit(net, params, data, f"gradients on {data.n_samples} samples")
        scale = 1.0 if objective.reduction == "sum" else 1.0 / data.n_samples
        with self._side_stream():
            return program.gradients(scale, objective.l2)

    # Op level: the fused kernels where the arrays suit them, else the reference math.
    def dense_forward(self, x, W, b, kind: str, out):
        if not (self.fused and _flat(x, W, b, out) and out.shape == (x.shape[0], W.shape[1])):
            return super().dense_forward(x, W, b, kind, out)
        importlib.import_module("cupy.cublas").gemm("N", "N", x, W, out=out, alpha=1.0, beta=0.0)
        self.device.launch("nnx_bias_activation", out.dtype, out.size,
                           (out, b, out.shape[0], out.shape[1], ACTIVATION_CODES[kind]))
        return out

    def activation_backward(self, kind: str, grad, a, scratch):
        if not (self.fused and kind in ACTIVATION_CODES and _flat(grad, a) and grad.shape == a.shape):
            return super().activation_backward(kind, grad, a, scratch)
        self.device.launch("nnx_activation_backward", grad.dtype, grad.size,
                           (grad, a, grad.size, ACTIVATION_CODES[kind]))
        return grad


def _flat(*arrays) -> bool:
    """Same float dtype, C-contiguous CuPy arrays: what the kernels can take."""
    dtype = arrays[0].dtype
    return (dtype.name in src.ELEMENT_TYPES
            and all(isinstance(a, cupy.ndarray) and a.dtype == dtype and a.flags.c_contiguous for a in arrays))
