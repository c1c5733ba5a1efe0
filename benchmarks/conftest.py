"""Settings for the benchmark suites: which size set, how many threads.

``NNX_BENCH_SIZES`` picks the sizes: ``tiny`` (the default, so a plain
``pytest`` run finishes in seconds; CI runs it with ``--benchmark-disable``),
``quick`` or ``full`` (the figures in the README). ``NNX_BENCH_THREADS`` pins
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


def pytest_report_header(config) -> str:
    return f"nnx benchmarks: size set {size_set()!r} ({SIZES_ENV}=tiny|quick|full)"
