"""Sweeps end to end: ``nnx sweep`` as a user runs it, against what its jobs cost one at a time.

* tutorial: ``nnx sweep`` with no arguments (tutorial 003's 8 configurations x
  20,000 passes), the whole command from process start to the summary written,
  with the kernel cache warm (one untimed run first).
* optimisers: ``nnx sweep --hidden 3 20 --optimizer sgd adam 'sgd:momentum=0.9'
  --batch-size full 32 --epochs 2000`` (12 minibatch and full-batch fits with
  optimiser state), end to end, warm, against the sum of its jobs' own fit times.
* large: ``nnx sweep --hidden 1024,4096,16384 --samples 4096 --passes 100``,
  the whole command, against the sum of the same fits run one at a time in
  this process (warm, fit time only), on the same cores. Recorded both ways a
  sweep can use two cores: the default (a worker per core, one thread each;
  compared with single runs on one thread) and ``--workers 1
  --threads-per-worker N`` (compared with single runs on all N threads).

With the tiny size set (the default, CI) the same commands run with few passes
and small sizes, untimed, to prove they work.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import nnx
from nnx.bench.machine import pin_threads, usable_cores
from nnx.sweep.axes import Axes
from nnx.sweep.job import build_model, fit_arguments
from nnx.sweep.runner import plan

from conftest import size_set

pytest.importorskip("pytest_benchmark")

TUTORIAL_ARGS = {"tiny": ["--passes", "200", "--backend", "numpy"], "quick": [], "full": []}
OPTIMISER_ARGS = {
    "tiny": ["--hidden", "3", "--optimizer", "sgd", "adam", "--batch-size", "full", "32", "--epochs", "5",
             "--backend", "numpy"],
    "quick": ["--hidden", "3", "20", "--optimizer", "sgd", "adam", "sgd:momentum=0.9", "--batch-size", "full", "32",
              "--epochs", "200"],
    "full": ["--hidden", "3", "20", "--optimizer", "sgd", "adam", "sgd:momentum=0.9", "--batch-size", "full", "32",
             "--epochs", "2000"]}
LARGE = {"tiny": dict(hidden=[16, 32, 64], samples=256, passes=10),
         "quick": dict(hidden=[1024, 4096], samples=4096, passes=20),
         "full": dict(hidden=[1024, 4096, 16384], samples=4096, passes=100)}


def nnx_sweep(args: list[str], out, job_seconds: list | None = None) -> float:
    """Wall seconds of one ``nnx sweep`` run into a fresh folder (no result reused).

    ``job_seconds`` receives each job's own fit time, as its worker measured it.
    """
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nnx", "sweep", *args, "--out", str(out)], capture_output=True,
                          text=True, timeout=3600)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    records = json.loads((out / "summary.json").read_text())["records"]
    assert all(r["status"] == "ok" for r in records), done.stdout
    if job_seconds is not None:
        job_seconds[:] = [r["seconds"] for r in records]
    return elapsed


def tutorial_code_seconds(passes: int) -> float:
    """Tutorial 003's own NumPy code for the same 8 fits (hidden 0 as its loop without the hidden layer)."""
    from nnx.bench.tutorial_code import moons_tutorial

    X, y = nnx.datasets.moons(200, 0.2, 0)
    start = time.perf_counter()
    for hidden in (1, 2, 3, 4, 5, 20, 50):
        moons_tutorial(X, y, hidden, passes)
    return time.perf_counter() - start


def _rounds(benchmark, fn, rounds: int) -> None:
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def test_bench_tutorial_sweep_end_to_end(benchmark, bench_config, tmp_path):
    args = TUTORIAL_ARGS[size_set()]
    if not benchmark.disabled:
        nnx_sweep(args, tmp_path / "warm")  # compiles or loads the kernels once: the cache is warm after it
    runs = iter(range(1_000))
    benchmark.group = "sweep tutorial-003"
    jobs: list[float] = []
    benchmark.extra_info.update({"command": "nnx sweep " + " ".join(args), "configurations": 8,
                                 "usable_cores": usable_cores(), "size_set": bench_config.size_set})
    _rounds(benchmark, lambda: nnx_sweep(args, tmp_path / f"run{next(runs)}", jobs), max(3, bench_config.rounds))
    benchmark.extra_info["job_seconds_last_round"] = jobs
    if not benchmark.disabled:
        # The 7 hidden-layer fits in the tutorial's own code (it has no hidden-size-0 network).
        benchmark.extra_info["tutorial_code_seconds_7_fits"] = tutorial_code_seconds(20_000)


def test_bench_optimiser_sweep_end_to_end(benchmark, bench_config, tmp_path):
    args = OPTIMISER_ARGS[size_set()]
    if not benchmark.disabled:
        nnx_sweep(args, tmp_path / "warm")
    runs = iter(range(1_000))
    benchmark.group = "sweep optimisers"
    jobs: list[float] = []
    _rounds(benchmark, lambda: nnx_sweep(args, tmp_path / f"run{next(runs)}", jobs), max(3, bench_config.rounds))
    benchmark.extra_info.update({"command": "nnx sweep " + " ".join(args), "configurations": len(jobs),
                                 "job_seconds_last_round": jobs, "sum_of_job_seconds": sum(jobs),
                                 "usable_cores": usable_cores(), "size_set": bench_config.size_set})


def _single_runs(settings: dict, threads: int) -> list[float]:
    """Each configuration's fit alone, here, on ``threads`` threads: seconds of the fit (kernels warm)."""
    pin_threads(threads)
    configs, datasets = plan(Axes.of(backend="numba" if nnx.available_backends()["numba"] is None else "numpy",
                                     **settings))
    seconds = []
    for config in configs:
        data = datasets[config.data_sha256]
        with nnx.use_backend(config.backend) as backend:
            model = build_model(config, data)
            if hasattr(backend, "warm_up"):
                backend.warm_up(model.net)
            start = time.perf_counter()
            model.fit(data.X, data.y, **fit_arguments(config, data.n_samples))
            seconds.append(time.perf_counter() - start)
    return seconds


@pytest.mark.parametrize("layout", ["worker-per-core", "one-worker-all-threads"])
def test_bench_large_sweep_against_single_runs(benchmark, bench_config, tmp_path, layout):
    settings = LARGE[size_set()]
    cores = usable_cores()
    threads = 1 if layout == "worker-per-core" else cores
    args = ["--hidden", ",".join(map(str, settings["hidden"])), "--samples", str(settings["samples"]),
            "--passes", str(settings["passes"])]
    if nnx.available_backends()["numba"] is not None:
        args += ["--backend", "numpy"]
    if layout == "one-worker-all-threads":
        args += ["--workers", "1", "--threads-per-worker", str(cores)]
    singles = _single_runs(settings, threads)
    pin_threads(bench_config.threads["requested"])
    runs = iter(range(1_000))
    benchmark.group = f"sweep large {layout}"
    jobs: list[float] = []
    benchmark.pedantic(lambda: nnx_sweep(args, tmp_path / f"run{next(runs)}", jobs),
                       rounds=1 if size_set() == "full" else bench_config.rounds, iterations=1)
    info = {"command": "nnx sweep " + " ".join(args), "single_run_threads": threads, "job_seconds_in_sweep": jobs,
            "single_run_seconds": singles, "sum_of_single_runs": sum(singles), "usable_cores": cores,
            "size_set": bench_config.size_set}
    if not benchmark.disabled:
        info["sweep_over_sum_of_single_runs"] = benchmark.stats.stats.min / sum(singles)
    benchmark.extra_info.update(info)
