"""The Dask executor on a real LocalCluster of 2 spawned workers: same records, thread caps, retries."""
from __future__ import annotations

import os
import sys

import pytest

from nnx.sweep import make_executor
from nnx.sweep.axes import Axes
from nnx.sweep.dask_pool import DaskPool
from nnx.sweep.executor import SchedulerUnavailableError, Task
from nnx.sweep.local_pool import LocalPool
from nnx.sweep.runner import plan, run_sweep
from test_sweep_local import (CRASH_ALWAYS, CRASH_TWICE, MARKERS, crashing_job, environment_job, results_of,
                              small)

pytest.importorskip("distributed", reason="Dask distributed is not installed: pip install 'nnx[dask]'")


def test_an_existing_cluster_by_address_gives_the_local_executors_records(tmp_path):
    """Plain gradient descent, and optimisers, minibatches, epochs and schedules as axes."""
    from distributed import LocalCluster

    sweeps = {"plain": small(hidden=[0, 1, 3, 5]),
              "new axes": Axes.of(backend="numpy", hidden=[1, 3], optimizer=["sgd:momentum=0.9", "rmsprop"],
                                  batch_size=[None, 50], epochs=2, schedule=[None, "step:step_size=1,gamma=0.5"])}
    local = {name: run_sweep(axes, LocalPool(2), out=tmp_path / f"local {name}") for name, axes in sweeps.items()}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = {}
        for name, axes in sweeps.items():
            pool = make_executor("dask", address=cluster.scheduler_address)
            assert not pool.local
            dask[name] = run_sweep(axes, pool, out=tmp_path / f"dask {name}")
        assert len(cluster.scheduler_info["workers"]) == 2  # the cluster outlives the sweep: nnx only connected
    for name in sweeps:
        assert results_of(dask[name]) == results_of(local[name])
        assert all(r["status"] == "ok" for r in dask[name])
    new = dask["new axes"]
    assert len(new) == 16 and len({r["loss"] for r in new}) == 16
    assert {(r["optimizer"], r["lr"], r["batch_size"], r["passes_done"]) for r in new} == {
        (o, 0.01, b, 2 * (1 if b is None else 4)) for o in ("sgd:momentum=0.9", "rmsprop") for b in (None, 50)}


def test_gpu_jobs_ask_for_a_gpu_only_where_the_cluster_declares_gpus():
    configs, datasets = plan(small(hidden=[1], backend=["auto", "cupy", "numpy", "numba"]))
    pool = DaskPool(workers=1)
    tasks = {c.backend: Task(c, datasets[c.data_sha256], False) for c in configs}
    assert all(pool._resources(t) is None for t in tasks.values())
    pool.gpus = 1
    assert {name: pool._resources(t) for name, t in tasks.items()} == {
        "auto": {"GPU": 1}, "cupy": {"GPU": 1}, "numpy": None, "numba": None}


def test_dask_workers_start_with_the_thread_caps_and_retries_of_two(tmp_path, monkeypatch):
    """One cluster for both checks (a LocalCluster takes seconds to start)."""
    monkeypatch.setenv(MARKERS, str(tmp_path))
    before = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    configs, datasets = plan(small(hidden=[1, CRASH_TWICE, CRASH_ALWAYS]))
    tasks = [Task(c, datasets[c.data_sha256], False) for c in configs]
    pool = DaskPool(workers=2, threads_per_worker=1)
    with pool:
        pool.start(tasks)
        assert pool.workers == 2 and pool.gpus == 0
        seen = []
        pool.run(tasks[:2], environment_job, lambda task, result: seen.append(result["record"]))
        for r in seen:
            assert set(r["caps"].values()) == {"1"} and r["numba"] == 1 and r["blas"] in ([1], [])
        assert os.getpid() not in {r["pid"] for r in seen}
        results = {}
        pool.run(tasks, crashing_job, lambda task, result: results.__setitem__(task.config.hidden, result["record"]))
    assert {k: os.environ.get(k) for k in before} == before
    attempts = {h: len(list(tmp_path.glob(f"{results[h]['key']}.*"))) for h in results}
    assert attempts == {1: 1, CRASH_TWICE: 3, CRASH_ALWAYS: 3}
    assert results[1]["status"] == results[CRASH_TWICE]["status"] == "ok"
    failed = results[CRASH_ALWAYS]
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert "the Dask worker running this job died, on each of 3 attempts" in failed["message"]


def test_without_dask_the_scheduler_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SchedulerUnavailableError, match=r"pip install 'nnx\[dask\]'"):
        make_executor("dask")
    make_executor("local")  # the default needs nothing more


def test_unreachable_scheduler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("nnx.sweep.dask_pool.CONNECT_TIMEOUT", "1s")
    pool = DaskPool(address="tcp://127.0.0.1:9")
    with pytest.raises(SchedulerUnavailableError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        pool.start()
