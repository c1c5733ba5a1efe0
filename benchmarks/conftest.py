"""Settings for the benchmark suites: which size set, how many threads.

``NNX_BENCH_SIZES`` picks the sizes: ``tiny`` (the default, so a plain
``pytest`` run, and CI, finishes in seconds), ``quick`` or ``full`` (the
figures in the README). Tiny sizes prove that every suite still runs; timing
them would be noise, so with tiny sizes nothing is timed (as with
``--benchmark-disable``) unless ``--benchmark-enable`` asks for it. ``NNX_BENCH_THREADS`` pins
BLAS/Numba/PyTorch threads (default: the usable cores); the count in force is
recorded in every benchmark's ``extra_info``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from nnx.bench.machine import pin_threads, usable_cores
from nnx.bench.runner import TIMING
from nnx.bench.workloads import SIZE_SETS

SIZES_ENV = "NNX_BENCH_SIZES"
THREADS_ENV = "NNX_BENCH_THREADS"


def size_set() -> str:
    """The size set named by ``NNX_BENCH_SIZES`` (default tiny); a typo fails loudly."""
    value = os.environ.get(SIZES_ENV, "tiny").strip().lower() or "tiny"
    if value not in SIZE_SETS:
        raise pytest.UsageError(f"{SIZES_ENV}={value!r}: expected one of {', '.join(SIZE_SETS)}")
    return value


@dataclass(frozen=True)
class BenchConfig:
    size_set: str
    min_time: float
    rounds: int
    threads: dict


@pytest.fixture(scope="session")
def bench_config() -> BenchConfig:
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw and (not raw.isdigit() or int(raw) < 1):
        raise pytest.UsageError(f"{THREADS_ENV}={raw!r}: expected a positive integer")
    threads = pin_threads(int(raw) if raw else usable_cores())
    sizes = size_set()
    min_time, rounds = TIMING[sizes]
    return BenchConfig(sizes, min_time, rounds, threads)


def pytest_configure(config) -> None:
    # Runs before pytest-benchmark reads its options (its pytest_configure is trylast).
    if size_set() == "tiny" and hasattr(config.option, "benchmark_disable") \
            and not config.getoption("benchmark_enable"):
        config.option.benchmark_disable = True


def pytest_report_header(config) -> str:
    return f"nnx benchmarks: size set {size_set()!r} ({SIZES_ENV}=tiny|quick|full)"
