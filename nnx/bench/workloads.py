"""The named benchmark workloads, their size sets and their work counts.

Workload names and case ids are stable: saved runs are compared by name, so
renaming one breaks every comparison against older results.

Work counts are stated here once, for every backend alike:

* FLOPs count the matrix products only, 2*m*k*n each: per layer one forward
  product and one weight-gradient product, plus one delta product for every
  layer but the first. Elementwise work (bias, activation, softmax, update) is
  a few flops per element and is counted as memory traffic instead.
* Bytes are the minimal traffic of the tutorial's algorithm: every array an op
  needs is read once and every array it produces is written once (no cache
  reuse between ops). ``effective GB/s`` is that traffic over the measured time.

A case is ``compute``-bound when its FLOPs per byte reach ``COMPUTE_BOUND_INTENSITY``
and ``memory``-bound otherwise; the report quotes GFLOP/s or GB/s accordingly.
"""
from __future__ import annotations

from dataclasses import dataclass

SIZE_SETS = ("tiny", "quick", "full")
# FLOPs per byte above which a pass is limited by arithmetic rather than traffic;
# a modern core sustains roughly 10 flops for every byte it streams from memory.
COMPUTE_BOUND_INTENSITY = 8.0


def scaled_lr(n_samples: int, hidden: int) -> float:
    """Tutorial 003's lr 0.01 scaled down as the summed gradient grows with N and H."""
    return 0.01 * (200 / n_samples) * (3 / hidden)


@dataclass(frozen=True)
class Case:
    """One size of one workload: the network, its data and its training settings."""

    workload: str
    n_samples: int
    layer_sizes: tuple[int, ...]
    lr: float
    hidden: str = "tanh"
    output: str = "softmax"
    init: str = "normal_fan_in"
    l2: float = 0.01
    reduction: str = "sum"
    data: str = "moons"  # moons | xor | random (seeded Gaussian inputs, uniform labels)
    gpu_only: bool = False
    # Minibatch workloads: the optimiser (a name in nnx.optim.OPTIMIZERS, at ``lr``), the
    # batch size, the epochs one round times (a "pass" is then an epoch: ceil(N / batch)
    # updates), and the dtypes they run in (None: every dtype asked for).
    optimizer: str = "sgd"
    batch_size: int | None = None
    epochs: int | None = None
    dtypes: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        """Stable id, e.g. ``N200-2x3x2`` (``N200-2x3x2-adam-b32`` with minibatches)."""
        base = f"N{self.n_samples}-" + "x".join(str(w) for w in self.layer_sizes)
        return base if self.batch_size is None else f"{base}-{self.optimizer}-b{self.batch_size}"

    @property
    def updates_per_pass(self) -> int:
        """Updates in one timed pass: 1 full-batch update, or an epoch of minibatches."""
        return 1 if self.batch_size is None else -(-self.n_samples // self.batch_size)

    @property
    def n_hidden(self) -> int:
        return self.layer_sizes[1]

    @property
    def n_classes(self) -> int:
        return self.layer_sizes[-1]

    def sizes(self) -> dict[str, int]:
        return {"N": self.n_samples, "inputs": self.layer_sizes[0], "H": self.n_hidden,
                "outputs": self.n_classes}

    def flops_per_pass(self) -> int:
        """Matrix-product FLOPs of one full-batch pass, or one epoch of minibatches: the same
        products over the same N samples (see the module docstring)."""
        n = self.n_samples
        total = 0
        for layer, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            products = 2 if layer == 0 else 3  # forward, dW, and the delta sent back
            total += products * 2 * n * fan_in * fan_out
        return total

    def bytes_per_pass(self, itemsize: int) -> int:
        """Minimal memory traffic of one pass in bytes (see the module docstring)."""
        n = self.n_samples
        c = self.n_classes
        elements = 3 * n * c  # head delta: read outputs and targets, write delta
        for layer, (fan_in, fan_out) in enumerate(zip(self.layer_sizes[:-1], self.layer_sizes[1:])):
            w = fan_in * fan_out
            elements += n * fan_in + w + fan_out + n * fan_out  # forward: x, W, b in; a out
            elements += n * fan_in + n * fan_out + w  # dW = x.T @ delta
            elements += n * fan_out + fan_out  # db = sum(delta)
            if layer > 0:  # delta_prev = (delta @ W.T) * f'(a_prev)
                elements += n * fan_out + w + n * fan_in + n * fan_in
            elements += 3 * w + 3 * fan_out  # W -= lr * (dW + l2 W); b -= lr * db
        return elements * itemsize

    def bound(self, itemsize: int = 8) -> str:
        intensity = self.flops_per_pass() / self.bytes_per_pass(itemsize)
        return "compute" if intensity >= COMPUTE_BOUND_INTENSITY else "memory"


@dataclass(frozen=True)
class Workload:
    """A named family of cases; ``peers`` says whether PyTorch/JAX versions run too,
    ``products_only`` whether the bare-products ceiling is timed, ``launch_bound`` whether
    the GPU's launch variants (no graphs, op by op) are timed to show launch costs."""

    name: str
    summary: str
    sizes: dict[str, tuple[Case, ...]]
    peers: bool = False
    products_only: bool = False
    launch_bound: bool = False

    def cases(self, size_set: str, *, gpu: bool = True) -> tuple[Case, ...]:
        if size_set not in SIZE_SETS:
            raise ValueError(f"unknown size set {size_set!r}; expected one of {SIZE_SETS}")
        return tuple(c for c in self.sizes[size_set] if gpu or not c.gpu_only)


def _moons(n: int, hidden: int, lr: float | None = None, **kw) -> Case:
    return Case(kw.pop("workload"), n, (2, hidden, 2), scaled_lr(n, hidden) if lr is None else lr, **kw)


def _tutorial() -> Workload:
    case = _moons(200, 3, lr=0.01, workload="tutorial")
    return Workload("tutorial", "tutorial 003: moons N=200, 2-3-2 tanh/softmax, lr 0.01, L2 0.01, summed loss",
                    {"tiny": (case,), "quick": (case,), "full": (case,)}, peers=True, launch_bound=True)


def _sweep() -> Workload:
    def cases(hs):
        # The tutorial's sizes keep its lr 0.01; the added 100 and 500 would overflow its
        # unshifted softmax in float32 at that lr, so they take the large-hidden scaling.
        return tuple(_moons(200, h, lr=0.01 if h <= 50 else scaled_lr(200, h), workload="sweep") for h in hs)
    return Workload("sweep", "tutorial 003's hidden-size sweep on moons N=200 (1-5, 20, 50 at lr 0.01; "
                             "plus 100, 500 at lr 0.01 (3/H))",
                    {"tiny": cases((1, 3)), "quick": cases((1, 3, 50, 500)),
                     "full": cases((1, 2, 3, 4, 5, 20, 50, 100, 500))}, launch_bound=True)


def _large_hidden() -> Workload:
    def case(n, h, gpu_only=False):
        return _moons(n, h, workload="large-hidden", gpu_only=gpu_only)
    full = (case(4096, 1024), case(4096, 4096), case(4096, 16384), case(4096, 65536, gpu_only=True))
    return Workload("large-hidden", "moons N=4,096 with wide hidden layers, lr = 0.01 (200/N) (3/H)",
                    {"tiny": (case(64, 16),), "quick": (case(4096, 1024), case(4096, 4096)), "full": full},
                    peers=True)


def _blas_bound() -> Workload:
    def case(n, inputs, hidden, classes):
        return Case("blas-bound", n, (inputs, hidden, classes), scaled_lr(n, hidden), data="random")
    return Workload("blas-bound", "N=8,192, 784 inputs, 2,048 hidden, 10 classes: seeded Gaussian inputs, "
                                  "uniform random labels; the products dominate",
                    {"tiny": (case(32, 16, 32, 10),), "quick": (case(2048, 784, 2048, 10),),
                     "full": (case(8192, 784, 2048, 10),)},
                    peers=True, products_only=True)


def _xor() -> Workload:
    case = Case("xor", 4, (2, 2, 1), lr=1.0, hidden="sigmoid", output="sigmoid", init="uniform", l2=0.0,
                reduction="sum", data="xor")
    return Workload("xor", "tutorial 001: the 2-2-1 sigmoid XOR network, uniform init, lr 1, summed squared error",
                    {"tiny": (case,), "quick": (case,), "full": (case,)}, launch_bound=True)


# (N, H) pairs growing together so N*H (the work per pass) grows ~4x per step.
_CROSSOVER_FULL = ((128, 8), (256, 32), (512, 128), (1024, 512), (2048, 1024), (4096, 2048), (8192, 4096))


def _crossover() -> Workload:
    def cases(pairs, gpu_only=False):
        return tuple(_moons(n, h, workload="crossover", gpu_only=gpu_only) for n, h in pairs)
    full = cases(_CROSSOVER_FULL) + cases(((16384, 8192),), gpu_only=True)
    return Workload("crossover", "one 2-H-2 moons model over growing N x H: where each backend overtakes the others",
                    {"tiny": cases(((16, 4), (32, 8))), "quick": cases(_CROSSOVER_FULL[:5]), "full": full},
                    launch_bound=True)


def _minibatch() -> Workload:
    def case(epochs):
        return Case("minibatch", 200, (2, 3, 2), lr=0.01, l2=0.0, reduction="mean", optimizer="adam", batch_size=32,
                    epochs=epochs)
    return Workload("minibatch", "moons N=200, 2-3-2 tanh/softmax, Adam (lr 0.01), batches of 32 (7 updates an "
                                 "epoch), mean loss: 2,000 epochs a round; a pass is an epoch",
                    {"tiny": (case(5),), "quick": (case(2000),), "full": (case(2000),)}, peers=True)


def _mnist_shaped() -> Workload:
    def case(n, epochs, sizes=(784, 256, 10)):
        return Case("mnist-shaped", n, sizes, lr=1e-3, l2=0.0, reduction="mean", data="random",
                    optimizer="adam", batch_size=128, epochs=epochs, dtypes=("float32",))
    return Workload("mnist-shaped", "N=60,000 seeded Gaussian inputs, 784-256-10 tanh/softmax, float32, Adam "
                                    "(lr 1e-3), batches of 128 (469 updates), mean loss: one epoch a round",
                    {"tiny": (case(256, 1, (32, 16, 10)),), "quick": (case(60_000, 1),), "full": (case(60_000, 1),)},
                    peers=True)


WORKLOADS: dict[str, Workload] = {w.name: w for w in
                                  (_tutorial(), _sweep(), _large_hidden(), _blas_bound(), _xor(), _crossover(),
                                   _minibatch(), _mnist_shaped())}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}") from None
