"""What gets timed: one workload case on one implementation ("target").

Every target splits its work the same way, so all are timed alike:
``warm_up()`` (compilation, first touch; never timed), ``reset()`` (back to the
initial parameters; never timed) and ``run(passes)`` (the timed part: that many
full-batch updates, with the device synchronised before it returns).

Targets: ``tutorial-code`` (the tutorials' plain NumPy, the baseline), the nnx
backends (``numpy``, ``numba``, ``cupy``, timed at the loop-level seam
``backend.train``), ``cupy/no-graphs`` and ``cupy/op-by-op`` (the GPU backend
with its launch savings off), ``<backend>/products-only`` (the bare matrix
products of a pass, the BLAS/cuBLAS ceiling) and the PyTorch/JAX peers (``peers.py``).
"""
from __future__ import annotations

import time

import numpy as np

from .. import datasets
from ..backends import available_backends, use_backend
from ..initializers import initial_params
from ..network import Network, Objective, TrainState
from ..optim import SGD
from . import peers
from .tutorial_code import moons_tutorial, xor_tutorial
from .workloads import Case, Workload

BASELINE = "tutorial-code"
REFERENCE = "numpy"
BACKENDS = ("numpy", "numba", "cupy")
PRODUCTS_ONLY = ("numpy/products-only", "cupy/products-only")
# The CuPy backend with its launch-saving switched off, to show what launches per pass cost:
# no CUDA graphs (every kernel of every pass launched from the host), and the op-by-op
# reference math (one launch per array operation, no fused kernels).
LAUNCH_VARIANTS = {"cupy/no-graphs": {"graphs": False}, "cupy/op-by-op": {"fused": False}}
ALL_TARGETS = (BASELINE, *BACKENDS, *LAUNCH_VARIANTS, *PRODUCTS_ONLY, *peers.PEERS)
GPU_TARGETS = ("cupy", *LAUNCH_VARIANTS, "cupy/products-only")


def make_data(case: Case) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 inputs, integer labels and float targets (one-hot for softmax) for a case.

    ``random`` data (blas-bound) is ``RandomState(0)``: standard-normal inputs,
    then uniform labels; the values only need to keep the math finite.
    """
    if case.data == "moons":
        X, y = datasets.moons(case.n_samples, noise=0.2, seed=0)
    elif case.data == "xor":
        X, y = datasets.xor()
    elif case.data == "random":
        rs = np.random.RandomState(0)
        X = rs.randn(case.n_samples, case.layer_sizes[0])
        y = rs.randint(case.n_classes, size=case.n_samples)
    else:
        raise ValueError(f"unknown data kind {case.data!r}")
    if case.output == "softmax":
        T = np.zeros((len(y), case.n_classes))
        T[np.arange(len(y)), y] = 1.0
    else:
        T = y.reshape(-1, 1).astype(np.float64)
    return X, y, T


class Target:
    """Base: the three timing hooks plus facts for the record."""

    label = "target"
    device = "cpu"

    def warm_up(self) -> dict:
        """Untimed first run: ``first_pass_s`` (its time, compilation excluded) and ``compile_s``
        (None where nothing compiles)."""
        self.reset()
        start = time.perf_counter()
        self.run(1)
        return {"first_pass_s": time.perf_counter() - start, "compile_s": None}

    def reset(self) -> None:
        """Back to the initial parameters (outside the timed part)."""

    def run(self, passes: int) -> None:
        raise NotImplementedError

    def finite(self) -> bool:
        """Whether the parameters after the last ``run`` are all finite."""
        raise NotImplementedError

    def info(self) -> dict:
        return {"device": self.device}


class TutorialCodeTarget(Target):
    """The baseline: tutorial 003 (or 001 for xor) as plain NumPy, generalised in N, H, dtype.

    Each call draws its initial weights as the tutorial's ``build_model`` does;
    that draw is part of the timed call (under 2% of a blas-bound round).
    """

    label = BASELINE

    def __init__(self, case: Case, dtype: str):
        if len(case.layer_sizes) != 3:
            raise ValueError("tutorial-code has exactly one hidden layer")
        X, y, T = make_data(case)
        self.case, self.dtype = case, np.dtype(dtype)
        self.X, self.y, self.T = X.astype(self.dtype), y, T.astype(self.dtype)
        if case.data == "xor":
            if (case.hidden, case.output, case.lr, case.l2, case.reduction) != ("sigmoid", "sigmoid", 1.0, 0.0, "sum"):
                raise ValueError("tutorial 001's XOR code has sigmoid layers, lr 1, no L2, summed error")
        elif (case.hidden, case.output, case.reduction, case.init) != ("tanh", "softmax", "sum", "normal_fan_in"):
            raise ValueError("tutorial 003's code has tanh/softmax, a summed loss and randn/sqrt(fan_in) weights")
        self.result: dict | None = None

    def run(self, passes: int) -> None:
        case = self.case
        if case.data == "xor":
            self.result = xor_tutorial(self.X, self.T, hidden=case.n_hidden, epochs=passes, seed=0, dtype=self.dtype)
        else:
            self.result = moons_tutorial(self.X, self.y, case.n_hidden, passes, lr=case.lr, l2=case.l2, seed=0,
                                         dtype=self.dtype, n_classes=case.n_classes)

    def finite(self) -> bool:
        return self.result is not None and all(np.isfinite(self.result[k]).all() for k in ("W1", "b1", "W2", "b2"))


def _backend(name: str):
    """The registry's backend object, or a fresh CuPy backend with a launch variant's switches."""
    if name in LAUNCH_VARIANTS:
        _backend("cupy")  # raises BackendUnavailableError with the reason when CuPy cannot run
        from ..backends.cupy_backend import CupyBackend
        return CupyBackend(**LAUNCH_VARIANTS[name])
    with use_backend(name) as backend:
        return backend


class BackendTarget(Target):
    """An nnx backend at its loop-level seam: data and parameters prepared once, outside timing."""

    def __init__(self, name: str, case: Case, dtype: str):
        self.label = name
        self.device = "gpu" if name in GPU_TARGETS else "cpu"
        self.backend = _backend(name)
        self.net = Network(case.layer_sizes, case.hidden, case.output, dtype)
        X, _, T = make_data(case)
        params = [(W.astype(dtype), b.astype(dtype)) for W, b in initial_params(case.layer_sizes, case.init, 0)]
        self.params0 = self.backend.prepare_params(self.net, params)
        self.data = self.backend.prepare_data(self.net, X, T)
        self.objective = Objective(case.reduction, case.l2)
        self.optimizer = SGD(case.lr)
        self.state = TrainState(self.backend.copy_params(self.params0))

    def warm_up(self) -> dict:
        compile_s = None
        warm = getattr(self.backend, "warm_up", None)
        if warm is not None:
            compile_s = float(warm(self.net, self.data.n_samples))
        record = super().warm_up()
        record["compile_s"] = compile_s
        return record

    def reset(self) -> None:
        """The initial parameters copied into the same arrays: a backend that binds its work
        to the arrays (the CuPy backend's programs and captured graphs, keyed by pointer)
        reuses it in every round instead of rebuilding it inside the timing."""
        for (W, b), (W0, b0) in zip(self.state.params, self.params0):
            W[...] = W0
            b[...] = b0
        self.state = TrainState(self.state.params)
        self.backend.synchronize()

    def run(self, passes: int) -> None:
        self.backend.train(self.net, self.state, self.data, self.objective, self.optimizer, passes)
        self.backend.synchronize()

    def finite(self) -> bool:
        return all(np.isfinite(W).all() and np.isfinite(b).all()
                   for W, b in self.backend.params_to_numpy(self.state.params))

    def info(self) -> dict:
        info = super().info()
        launches = getattr(self.backend, "launches_per_pass", None)
        if callable(launches):
            try:
                info["launches_per_pass"] = launches(self.net, self.data.n_samples)
            except NotImplementedError:  # op-by-op math: one launch per array operation, uncounted
                pass
        return info


class ProductsOnlyTarget(Target):
    """Only the matrix products of a pass (forward, dW, delta), on a backend's array library.

    This is the ceiling BLAS or cuBLAS sets for the workload: the same products
    in the same shapes, with none of the elementwise work between them.
    """

    def __init__(self, name: str, case: Case, dtype: str):
        base = name.split("/")[0]
        self.label = name
        self.device = "gpu" if base == "cupy" else "cpu"
        self.backend = _backend(base)
        xp = self.backend.xp
        net = Network(case.layer_sizes, case.hidden, case.output, dtype)
        X, _, T = make_data(case)
        self.X = self.backend.prepare_data(net, X, T).X
        params = [(W.astype(dtype), b) for W, b in initial_params(case.layer_sizes, case.init, 0)]
        self.Ws = [W for W, _ in self.backend.prepare_params(net, params)]
        n = case.n_samples
        self.acts = [xp.empty((n, w), dtype=dtype) for w in case.layer_sizes[1:]]
        # Deltas hold small constants: values do not change a product's speed, but
        # uninitialised memory could hold denormals, which do on some CPUs.
        self.deltas = [xp.full((n, w), 0.01, dtype=dtype) for w in case.layer_sizes[1:]]
        self.grads = [xp.empty_like(W) for W in self.Ws]

    def run(self, passes: int) -> None:
        xp = self.backend.xp
        last = len(self.Ws) - 1
        for _ in range(passes):
            a = self.X
            for W, out in zip(self.Ws, self.acts):
                a = xp.dot(a, W, out=out)
            for layer in range(last, -1, -1):
                a_prev = self.X if layer == 0 else self.acts[layer - 1]
                xp.dot(a_prev.T, self.deltas[layer], out=self.grads[layer])
                if layer > 0:
                    xp.dot(self.deltas[layer], self.Ws[layer].T, out=self.deltas[layer - 1])
        self.backend.synchronize()

    def finite(self) -> bool:
        return all(bool(self.backend.xp.isfinite(g).all()) for g in self.grads)


def available() -> dict[str, str | None]:
    """Every target name mapped to None when it can run here, else a one-line reason."""
    backends = available_backends()
    out: dict[str, str | None] = {BASELINE: None, **backends}
    for name in (*PRODUCTS_ONLY, *LAUNCH_VARIANTS):
        out[name] = backends[name.split("/")[0]]
    out.update(peers.availability())
    return out


def applies(name: str, workload: Workload) -> bool:
    """Products-only variants belong to blas-bound, launch variants to the launch-bound
    workloads, peers to tutorial, large-hidden and blas-bound."""
    if name in PRODUCTS_ONLY:
        return workload.products_only
    if name in LAUNCH_VARIANTS:
        return workload.launch_bound
    if name in peers.PEERS:
        return workload.peers
    return True


def target_device(name: str) -> str:
    """``gpu`` or ``cpu``: where a target runs (peers: their framework's default device)."""
    if name in GPU_TARGETS:
        return "gpu"
    if name in peers.PEERS:
        return peers.device(name)
    return "cpu"


def runs_case(name: str, case: Case) -> bool:
    """GPU-only sizes (H=65,536 and the like) run on GPU targets only."""
    return not case.gpu_only or target_device(name) == "gpu"


def make_target(name: str, case: Case, dtype: str, threads: int | None = None) -> Target:
    if name == BASELINE:
        return TutorialCodeTarget(case, dtype)
    if name in BACKENDS or name in LAUNCH_VARIANTS:
        return BackendTarget(name, case, dtype)
    if name in PRODUCTS_ONLY:
        return ProductsOnlyTarget(name, case, dtype)
    if name in peers.PEERS:
        return peers.make_target(name, case, dtype, threads)
    raise ValueError(f"unknown target {name!r}; expected one of {', '.join(ALL_TARGETS)}")
