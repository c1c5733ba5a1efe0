"""Which path a small deep layer should take on the Numba backend: the default plan, where layers
at most 16 wide on both sides join their neighbours' fused run, against the same network with
those layers on BLAS, the paths they took before that rule (fused only with a side of at most
8): ``NumbaBackend(fused_max_dim=5)``, fused up to 5 on the smaller side or 10 on both, gives
exactly those paths for these networks (checked here).

Each round times the default plan once and the BLAS plan right after it, so both see the same
load; ``extra_info`` holds both best times per pass and ``blas_over_default`` (above 1: the
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
CASES = [((2, 16, 16, 2), 200, "float64"), ((2, 16, 16, 2), 5000, "float64"), ((4, 16, 16, 3), 150, "float64"),
         ((10, 16, 3), 1000, "float64"), ((2, 12, 12, 12, 2), 500, "float32"), ((784, 16, 10), 2000, "float32")]
BLAS_FOR_SMALL = 5


def _trainer(backend, sizes, n: int, dtype: str):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    model = nnx.MLP(list(sizes), dtype=dtype, seed=0)
    data = backend.prepare_data(model.net, X, T)
    objective, optimizer = Objective("mean", 0.0), SGD(0.01)

    def run(passes: int) -> None:
        state = TrainState(backend.prepare_params(model.net, model.params))
        backend.train(model.net, state, data, objective, optimizer, passes)
    return run


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'-'.join(map(str, c[0]))}-N{c[1]}-{c[2]}")
def test_small_layers_fused_against_blas(benchmark, bench_config, case):
    from nnx.backends.numba_backend import NumbaBackend, layer_paths

    sizes, n, dtype = case
    default, blas = NumbaBackend(), NumbaBackend(BLAS_FOR_SMALL)
    net = nnx.MLP(list(sizes)).net
    paths = {"default": layer_paths(net), "blas": layer_paths(net, BLAS_FOR_SMALL)}
    assert paths["blas"] == ["fused" if min(shape) <= 8 else "blas" for shape in net.layer_shapes()]
    assert paths["default"] != paths["blas"]
    run_default, run_blas = _trainer(default, sizes, n, dtype), _trainer(blas, sizes, n, dtype)
    work = n * sum(a * b for a, b in zip(sizes, sizes[1:]))
    passes = 2 if size_set() == "tiny" else max(3, 30_000_000 // work)
    run_default(1)
    run_blas(1)
    blas_times: list[float] = []

    def timed_blas() -> None:  # right before each default round: both see the same load
        start = time.perf_counter()
        run_blas(passes)
        blas_times.append(time.perf_counter() - start)

    rounds = {"tiny": 1, "quick": 5, "full": 9}[size_set()]
    benchmark.pedantic(run_default, args=(passes,), setup=None if benchmark.disabled else timed_blas,
                       rounds=rounds, iterations=1)
    if benchmark.disabled:
        return
    default_s, blas_s = benchmark.stats.stats.min / passes, min(blas_times) / passes
    benchmark.extra_info.update(paths=paths, passes=passes, default_us_per_pass=round(default_s * 1e6, 1),
                                blas_us_per_pass=round(blas_s * 1e6, 1), blas_over_default=round(blas_s / default_s, 2),
                                threads=bench_config.threads)
