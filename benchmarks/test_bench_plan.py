"""The Numba backend's plan choices, each timed against the choice it replaced, side by side.

* Small deep layers: layers at most 16 wide on both sides join their neighbours' fused run,
  against the same network with those layers on BLAS, the paths they took before that rule
  (fused only with a side of at most 8): ``NumbaBackend(fused_max_dim=5)``, fused up to 5 on
  the smaller side or 10 on both, gives exactly those paths for these networks (checked here).
* Few samples: one-hidden-layer fits with at most 8 samples run the sample-by-sample kernel,
  more run the block kernel; each case is timed on both (the other one by setting
  ``TINY_MAX_SAMPLES`` for its run), so the figures show where one overtakes the other.

Each round times the default plan once and the other right before it, so both see the same
load; ``extra_info`` holds both best times per pass and ``other_over_default`` (above 1: the
default plan is faster). Tiny sizes (CI) run each case once, untimed.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import nnx
from nnx.network import Objective, TrainState
from nnx.optim import SGD

from conftest import size_set

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.skipif(nnx.available_backends()["numba"] is not None, reason="numba unavailable here")

# (layer sizes, samples, dtype)
SMALL_LAYERS = [((2, 16, 16, 2), 200, "float64"), ((2, 16, 16, 2), 5000, "float64"), ((4, 16, 16, 3), 150, "float64"),
                ((10, 16, 3), 1000, "float64"), ((2, 12, 12, 12, 2), 500, "float32"),
                ((784, 16, 10), 2000, "float32")]
BLAS_FOR_SMALL = 5
FEW_SAMPLES = [((2, 2, 1), 4, "float64"), ((2, 2, 1), 8, "float64"), ((2, 2, 1), 12, "float64"),
               ((2, 8, 1), 8, "float64"), ((2, 8, 1), 16, "float64"), ((2, 8, 1), 32, "float64"),
               ((2, 3, 2), 20, "float32"), ((2, 16, 1), 16, "float32")]  # samples x hidden within TINY_MAX_WORK: both kernels apply


def _trainer(backend, sizes, n: int, dtype: str, tiny_max_samples: int | None = None):
    """A function running ``passes`` updates of a fresh fit (its plan made in the call, as a fit's
    is), with the backend module's ``TINY_MAX_SAMPLES`` set to ``tiny_max_samples`` meanwhile."""
    from nnx.backends import numba_backend

    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, sizes[0]))
    labels = rng.integers(0, max(2, sizes[-1]), n)
    T = labels[:, None].astype(float) if sizes[-1] == 1 else np.eye(sizes[-1])[labels]
    # sigmoid hidden units: a 2-H-2 tanh/softmax network takes its own kernel whatever the samples
    model = nnx.MLP(list(sizes), hidden="sigmoid", output="sigmoid" if sizes[-1] == 1 else "softmax", dtype=dtype,
                    seed=0)
    data = backend.prepare_data(model.net, X, T)
    objective, optimizer = Objective("mean", 0.0), SGD(0.01)

    def run(passes: int) -> None:
        default = numba_backend.TINY_MAX_SAMPLES
        if tiny_max_samples is not None:
            numba_backend.TINY_MAX_SAMPLES = tiny_max_samples
        try:
            state = TrainState(backend.prepare_params(model.net, model.params))
            backend.train(model.net, state, data, objective, optimizer, passes)
        finally:
            numba_backend.TINY_MAX_SAMPLES = default
    return model.net, run


def _side_by_side(benchmark, run_default, run_other, passes: int) -> dict:
    """Time ``run_default`` through pytest-benchmark, ``run_other`` right before each of its rounds."""
    run_default(1)
    run_other(1)
    other_times: list[float] = []

    def timed_other() -> None:
        start = time.perf_counter()
        run_other(passes)
        other_times.append(time.perf_counter() - start)

    rounds = {"tiny": 1, "quick": 5, "full": 9}[size_set()]
    benchmark.pedantic(run_default, args=(passes,), setup=None if benchmark.disabled else timed_other,
                       rounds=rounds, iterations=1)
    if benchmark.disabled:
        return {}
    default_s, other_s = benchmark.stats.stats.min / passes, min(other_times) / passes
    return dict(passes=passes, default_us_per_pass=round(default_s * 1e6, 2),
                other_us_per_pass=round(other_s * 1e6, 2), other_over_default=round(other_s / default_s, 2))


def _passes(work: int) -> int:
    return 2 if size_set() == "tiny" else max(3, 30_000_000 // work)


def _case_id(case) -> str:
    return f"{'-'.join(map(str, case[0]))}-N{case[1]}-{case[2]}"


@pytest.mark.parametrize("case", SMALL_LAYERS, ids=_case_id)
def test_small_layers_fused_against_blas(benchmark, case):
    from nnx.backends.numba_backend import NumbaBackend, layer_paths

    sizes, n, dtype = case
    net, run_default = _trainer(NumbaBackend(), sizes, n, dtype)
    _, run_blas = _trainer(NumbaBackend(BLAS_FOR_SMALL), sizes, n, dtype)
    paths = {"default": layer_paths(net), "other": layer_paths(net, BLAS_FOR_SMALL)}
    assert paths["other"] == ["fused" if min(shape) <= 8 else "blas" for shape in net.layer_shapes()]
    assert paths["default"] != paths["other"]
    work = n * sum(a * b for a, b in zip(sizes, sizes[1:]))
    benchmark.extra_info.update(paths=paths, **_side_by_side(benchmark, run_default, run_blas, _passes(work)))


@pytest.mark.parametrize("case", FEW_SAMPLES, ids=_case_id)
def test_few_samples_sample_by_sample_against_blocks(benchmark, case):
    from nnx.backends.numba_backend import TINY_MAX_SAMPLES, TINY_MAX_WORK, NumbaBackend, make_plan

    sizes, n, dtype = case
    tiny = n <= TINY_MAX_SAMPLES
    other = n - 1 if tiny else n  # the other kernel: blocks for a tiny fit, sample by sample otherwise
    net, run_default = _trainer(NumbaBackend(), sizes, n, dtype)
    _, run_other = _trainer(NumbaBackend(), sizes, n, dtype, tiny_max_samples=other)
    assert make_plan(net, n).kernel.startswith("train_tiny") == tiny
    assert n * sizes[1] <= TINY_MAX_WORK
    kernels = {"default": "train_tiny" if tiny else "train", "other": "train" if tiny else "train_tiny"}
    work = max(n, 16) * sum(a * b for a, b in zip(sizes, sizes[1:]))
    benchmark.extra_info.update(kernels=kernels, **_side_by_side(benchmark, run_default, run_other,
                                                                 _passes(work) * 10))
