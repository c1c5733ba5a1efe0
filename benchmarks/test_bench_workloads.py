"""Every named workload, timed on every backend, dtype and size of the chosen size set
(a minibatch workload's pass is an epoch, and a round its fixed number of epochs).

Each benchmark also runs the ``tutorial-code`` baseline and, where installed,
the PyTorch/JAX peers as parameters of the same test, so one run holds every
figure a speed-up is quoted from. Statistics are per pass (``iterations`` =
passes per round), like ``nnx bench``'s, whose saved runs compare with these.
"""
from __future__ import annotations

import time

import pytest

from nnx.bench.runner import Measurement, passes_per_round
from nnx.bench.targets import ALL_TARGETS, GPU_TARGETS, applies, available, make_target, runs_case
from nnx.bench.workloads import WORKLOADS, Case

from conftest import size_set

pytest.importorskip("pytest_benchmark")
DTYPES = ("float32", "float64")


def _params(workload: str) -> list:
    status = available()
    params = []
    w = WORKLOADS[workload]
    for case in w.cases(size_set()):
        for dtype in DTYPES if case.dtypes is None else case.dtypes:
            for name in ALL_TARGETS:
                if not applies(name, w):
                    continue
                marks = [pytest.mark.gpu] if name in GPU_TARGETS else []
                if status[name] is not None:
                    if case.gpu_only and name not in GPU_TARGETS:
                        continue
                    marks.append(pytest.mark.skip(reason=status[name]))
                elif not runs_case(name, case):
                    continue
                params.append(pytest.param(name, dtype, case, id=f"{name}-{dtype}-{case.id}", marks=marks))
    return params


def _per_pass(benchmark, passes: int) -> list[float]:
    """Turn pytest-benchmark's per-round stats into per-pass stats; returns the round times.

    pedantic() times whole rounds (one ``run(passes)`` call each); dividing by
    the pass count is what ``iterations`` means in its JSON, so the saved
    statistics stay comparable between runs calibrated to different counts.
    """
    meta = benchmark.stats
    rounds = list(meta.stats.data)
    meta.stats.data[:] = [t / passes for t in rounds]
    meta.iterations = passes
    return rounds


def _bench(benchmark, bench_config, target_name: str, dtype: str, case: Case) -> None:
    target = make_target(target_name, case, dtype, bench_config.threads["requested"])
    start = time.perf_counter()
    warm = target.warm_up()  # compile and first touch, never timed
    passes = case.epochs or 1
    if not benchmark.disabled:
        passes = passes_per_round(case, target.run, target.reset, bench_config.min_time, warm["first_pass_s"])
    warmup_s = time.perf_counter() - start
    benchmark.group = f"{case.workload} {case.id} {dtype}"  # the same groups as nnx bench's saved runs
    benchmark.extra_info.update({"workload": case.workload, "case": case.id, "backend": target_name,
                                 "dtype": dtype, "sizes": case.sizes(), "size_set": bench_config.size_set,
                                 "threads": bench_config.threads, "warmup_s": warmup_s,
                                 "compile_s": warm["compile_s"]})
    benchmark.pedantic(target.run, args=(passes,), setup=target.reset, rounds=bench_config.rounds, iterations=1)
    assert target.finite(), f"{target_name} produced non-finite parameters on {case.id} {dtype}"
    if benchmark.disabled:
        return
    m = Measurement(case, target_name, dtype, passes, _per_pass(benchmark, passes), warmup_s,
                    warm["compile_s"], True, target.info())
    benchmark.extra_info.update(m.extra_info())


@pytest.mark.parametrize("target_name, dtype, case", _params("tutorial"))
def test_tutorial(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("sweep"))
def test_sweep(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("large-hidden"))
def test_large_hidden(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("blas-bound"))
def test_blas_bound(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("xor"))
def test_xor(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("crossover"))
def test_crossover(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("minibatch"))
def test_minibatch(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)


@pytest.mark.parametrize("target_name, dtype, case", _params("mnist-shaped"))
def test_mnist_shaped(benchmark, bench_config, target_name, dtype, case):
    _bench(benchmark, bench_config, target_name, dtype, case)
