"""The Dask executor on a real LocalCluster of 2 spawned workers: same records, thread caps, retries."""
from __future__ import annotations

import os
import sys

import pytest

from nnx.sweep import make_executor
from nnx.sweep.dask_pool import DaskPool
from nnx.sweep.executor import SchedulerUnavailableError, Task
from nnx.sweep.local_pool import LocalPool
from nnx.sweep.runner import plan, run_sweep
from test_sweep_local import (CRASH_ALWAYS, CRASH_TWICE, MARKERS, crashing_job, environment_job, results_of,
                              small)

pytest.importorskip("distributed", reason="Dask distributed is not installed: pip install 'nnx[dask]'")


def test_an_existing_cluster_by_address_gives_the_local_executors_records(tmp_path):
    from distributed import LocalCluster

    axes = small(hidden=[0, 1, 3, 5])
    local = run_sweep(axes, LocalPool(2), out=tmp_path / "local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        pool = make_executor("dask", address=cluster.scheduler_address)
        assert not pool.local
        dask = run_sweep(axes, pool, out=tmp_path / "dask")
        assert len(cluster.scheduler_info["workers"]) == 2  # the cluster outlives the sweep: nnx only connected
    assert results_of(dask) == results_of(local)
    assert all(r["status"] == "ok" for r in dask)


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
