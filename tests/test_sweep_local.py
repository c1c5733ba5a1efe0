"""The local executor for real: spawned workers, thread caps, crashes, divergence, resume.

The fault-injecting job functions live at module level here, so spawned workers
import them by name, as they import ``nnx.sweep.job.run_job``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import nnx
from nnx.sweep.axes import Axes
from nnx.sweep.executor import Task
from nnx.sweep.job import run_job
from nnx.sweep.local_pool import LocalPool
from nnx.sweep.runner import SweepInterrupted, plan, run_sweep

# What describes a run rather than its result: the only fields allowed to differ between reruns.
RUN_FIELDS = {"seconds", "compile_seconds", "passes_per_s", "attempts", "host"}
MARKERS = "NNX_SWEEP_TEST_MARKERS"      # folder where the fault jobs count their attempts
CRASH_TWICE, CRASH_ALWAYS = 3, 5        # hidden sizes whose workers die


def results_of(records) -> dict:
    return {r["key"]: {k: v for k, v in r.items() if k not in RUN_FIELDS} for r in records}


def crashing_job(config, data, keep_model):
    """Dies mid-job with ``os._exit(3)``: twice for hidden 3, on every attempt for hidden 5."""
    folder = Path(os.environ[MARKERS])
    attempt = len(list(folder.glob(f"{config.key}.*"))) + 1
    (folder / f"{config.key}.{attempt}").touch()
    if config.hidden == CRASH_ALWAYS or (config.hidden == CRASH_TWICE and attempt <= 2):
        nnx.MLP([2, 8, 2]).fit(*nnx.datasets.moons(50), passes=50)  # some work, then the worker dies
        os._exit(3)
    return run_job(config, data, keep_model)


def raising_job(config, data, keep_model):
    if config.hidden == 2:
        raise RuntimeError("a bug in the job")
    return run_job(config, data, keep_model)


def environment_job(config, data, keep_model):
    """Reports the thread limits the worker process started with."""
    import numba
    import threadpoolctl

    blas = sorted({p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"})
    caps = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS")}
    return {"record": {"caps": caps, "numba": numba.config.NUMBA_NUM_THREADS, "blas": blas, "pid": os.getpid()},
            "model": None}


SLOW = "the numpy backend took a slower path (a test's note)"


def noted_job(config, data, keep_model):
    """A job whose fit took a slower path: its record carries the note."""
    result = run_job(config, data, keep_model)
    result["record"]["notes"] = [SLOW]
    return result


def small(**settings):
    return Axes.of(**{"backend": "numpy", "passes": 300, **settings})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted sweep with models kept: the records every other run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    records = run_sweep(small(hidden=[0, 1, 2, 3, 4, 5]), LocalPool(2), out=out, keep_models=True)
    return out, records


def test_local_sweep_writes_one_json_per_job_and_the_summary(reference):
    out, records = reference
    assert [r["hidden"] for r in records] == [0, 1, 2, 3, 4, 5]
    assert all(r["status"] == "ok" and r["backend_used"] == "numpy" for r in records)
    for r in records:
        stored = json.loads((out / "jobs" / f"{r['key']}.json").read_text())
        assert stored == r
        model = nnx.load(out / "jobs" / f"{r['key']}.npz")
        assert model.updates == 300
        X, y = nnx.datasets.moons(200, 0.2, 0)
        assert model.accuracy(X, y) == r["train_accuracy"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["records"] == list(records) and summary["counts"] == {"ok": 6}
    lines = (out / "summary.csv").read_text().splitlines()
    assert len(lines) == 7 and lines[0].startswith("key,dataset,samples,")


def test_a_job_is_a_pure_function_of_its_configuration(reference):
    """The same configuration in this process gives the worker's result, to the bit."""
    out, records = reference
    configs, datasets = plan(small(hidden=[0, 1, 2, 3, 4, 5]))
    here = [run_job(c, datasets[c.data_sha256], True) for c in configs[:2]]
    assert results_of([h["record"] for h in here]) == results_of(records[:2])
    for h, r in zip(here, records):
        stored = nnx.load(out / "jobs" / f"{r['key']}.npz")
        for (W, b), (W2, b2) in zip(h["model"].params, stored.params):
            np.testing.assert_array_equal(W, W2)
            np.testing.assert_array_equal(b, b2)


def test_rerun_skips_finished_jobs(reference, tmp_path, monkeypatch):
    out, records = reference
    monkeypatch.setenv(MARKERS, str(tmp_path))  # crashing_job would leave a marker if it ran
    again = run_sweep(small(hidden=[0, 1, 2, 3, 4, 5]), LocalPool(2), out=out, keep_models=True, job=crashing_job)
    assert again.reused == 6 and list(again) == list(records)
    assert not list(tmp_path.iterdir())


def test_workers_start_with_the_thread_caps():
    configs, datasets = plan(small(hidden=[1, 2]))
    before = {k: os.environ.get(k) for k in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    seen = []
    pool = LocalPool(workers=2, threads_per_worker=1)
    pool.run([Task(c, datasets[c.data_sha256], False) for c in configs], environment_job,
             lambda task, result: seen.append(result["record"]))
    assert len({r["pid"] for r in seen}) == 2 and os.getpid() not in {r["pid"] for r in seen}
    for r in seen:
        assert r["caps"] == dict.fromkeys(("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS"), "1")
        assert r["numba"] == 1 and r["blas"] in ([1], [])
    assert {k: os.environ.get(k) for k in before} == before  # this process's environment is untouched


def test_a_dead_worker_is_retried_twice_then_recorded_failed(reference, tmp_path, monkeypatch):
    _, records = reference
    monkeypatch.setenv(MARKERS, str(tmp_path))
    out = tmp_path / "out"
    axes = small(hidden=[1, CRASH_TWICE, CRASH_ALWAYS])
    got = run_sweep(axes, LocalPool(2), out=out, keep_models=True, job=crashing_job)
    by_hidden = {r["hidden"]: r for r in got}
    attempts = {h: len(list(tmp_path.glob(f"{by_hidden[h]['key']}.*"))) for h in by_hidden}
    assert attempts == {1: 1, CRASH_TWICE: 3, CRASH_ALWAYS: 3}
    # Hidden 3 died twice and then finished: its result is the uninterrupted one.
    wanted = results_of(records)
    survivor = by_hidden[CRASH_TWICE]
    assert survivor["status"] == "ok" and survivor["attempts"] == 3
    assert results_of([survivor])[survivor["key"]] == wanted[survivor["key"]]
    failed = by_hidden[CRASH_ALWAYS]
    assert failed["status"] == "failed" and failed["attempts"] == 3
    assert "exited with code 3, on each of 3 attempts" in failed["message"]
    assert got.failed == [failed]
    # The summary is written whatever failed; a failed job is not reused by a rerun.
    assert json.loads((out / "summary.json").read_text())["counts"] == {"ok": 2, "failed": 1}
    assert not (out / "jobs" / f"{failed['key']}.npz").exists()
    rerun = run_sweep(axes, LocalPool(2), out=out, keep_models=True)
    assert rerun.reused == 2
    assert results_of(rerun) == {r["key"]: wanted[r["key"]] for r in rerun}


def test_an_exception_in_a_job_is_recorded_without_retry(tmp_path):
    got = run_sweep(small(hidden=[1, 2]), LocalPool(1), out=tmp_path, job=raising_job)
    assert [r["status"] for r in got] == ["ok", "failed"]
    assert got[1]["message"] == "RuntimeError: a bug in the job" and got[1]["attempts"] == 1


def test_a_diverging_configuration_is_recorded_and_the_sweep_goes_on(tmp_path):
    got = run_sweep(small(hidden=5, lr=[0.01, 1e4], passes=200), LocalPool(2), out=tmp_path)
    ok, diverged = got
    assert ok["status"] == "ok" and ok["passes_done"] == 200
    assert diverged["status"] == "diverged" and diverged["train_accuracy"] is None
    assert "the loss became non-finite at pass" in diverged["message"]
    bad_pass = int(diverged["message"].split("at pass ")[1].split()[0])
    assert diverged["passes_done"] == bad_pass - 1 < 200
    # A diverged result is a result: the rerun reuses it.
    assert run_sweep(small(hidden=5, lr=[0.01, 1e4], passes=200), LocalPool(2), out=tmp_path).reused == 2


def _ctrl_c_after(count: int, seen: list):
    """A sweep progress callback that notes each record's key in ``seen`` and presses Ctrl-C once
    ``count`` records are in."""
    def progress(record, done, total):
        seen.append(record["key"])
        if len(seen) == count:
            raise KeyboardInterrupt
    return progress


def test_interrupted_sweep_resumes_to_identical_records(reference, tmp_path):
    _, records = reference
    out = tmp_path / "out"
    seen = []
    stop_after_two = _ctrl_c_after(2, seen)
    with pytest.raises(SweepInterrupted) as stopped:
        run_sweep(small(hidden=[0, 1, 2, 3, 4, 5]), LocalPool(2), out=out, keep_models=True,
                  progress=stop_after_two)
    statuses = [r["status"] for r in stopped.value.records]
    assert statuses.count("pending") == 4 and "2 of 6 configurations finished" in str(stopped.value)
    assert sorted(p.stem for p in (out / "jobs").glob("*.json")) == sorted(seen)
    assert json.loads((out / "summary.json").read_text())["counts"] == {"ok": 2, "pending": 4}
    resumed = run_sweep(small(hidden=[0, 1, 2, 3, 4, 5]), LocalPool(2), out=out, keep_models=True)
    assert resumed.reused == 2
    assert results_of(resumed) == results_of(records)
    for r in records:
        first, second = nnx.load(reference[0] / "jobs" / f"{r['key']}.npz"), resumed.models[r["key"]]
        for (W, b), (W2, b2) in zip(first.params, second.params):
            np.testing.assert_array_equal(W, W2)
            np.testing.assert_array_equal(b, b2)


def test_ctrl_c_on_the_command_keeps_results_and_says_how_to_resume(tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "nnx", "sweep", "--backend", "numpy", "--passes", "1500",
            "--hidden", "1,2,3,4,5,6,7,8", "--workers", "1", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("jobs/*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    finished = len(list(out.glob("jobs/*.json")))
    assert 1 <= finished < 8
    assert f"{finished} of 8 configurations finished, kept in {out}" in stderr
    assert "run again: nnx sweep --backend numpy" in stderr
    assert json.loads((out / "summary.json").read_text())["counts"]["pending"] == 8 - finished
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{finished} finished earlier" in done.stderr
    assert json.loads((out / "summary.json").read_text())["counts"] == {"ok": 8}


def test_pool_holds_back_jobs_that_do_not_fit_beside_the_running_ones():
    from collections import deque

    configs, datasets = plan(small(hidden=[1, 2, 3, 4]))
    big, gpu, small_job, other_gpu = (Task(c, datasets[c.data_sha256], False) for c in configs)
    big.memory, small_job.memory = 70, 20
    gpu.gpu = other_gpu.gpu = True
    pool = LocalPool(workers=4, memory_budget=100, gpu_slots=1)
    queue = deque([big, other_gpu, small_job])
    assert pool._next(queue, []) is big                 # nothing runs: the head always starts
    assert pool._next(queue, [gpu]) is small_job         # the second GPU job waits for the GPU
    half = Task(configs[0], datasets[configs[0].data_sha256], False, memory=50)
    assert pool._next(deque([big, small_job]), [half]) is small_job  # 50 + 70 > 100, 50 + 20 fits
    assert pool._next(deque([big]), [half]) is None
    assert pool._next(deque([big]), [small_job, gpu]) is big         # 20 + 70 fits


def test_configurations_too_large_are_refused_by_name_before_any_job(tmp_path, monkeypatch):
    monkeypatch.setenv(MARKERS, str(tmp_path))
    wide, samples = 1 << 22, 1 << 14
    axes = small(hidden=[3, wide, 2 * wide], samples=samples)
    with pytest.raises(nnx.OutOfMemoryError) as refused:
        run_sweep(axes, LocalPool(2), out=tmp_path / "out", job=crashing_job)
    message = str(refused.value)
    assert message.startswith("2 configuration(s) of this sweep cannot fit in memory:")
    lines = message.splitlines()[1:3]
    for line, hidden in zip(lines, (wide, 2 * wide)):
        assert line.startswith(f"  hidden {hidden}: needs ") and line.endswith("available (backend numpy)")
        need = float(line.split("needs ")[1].split(" GiB")[0]) * 2**30
        assert need >= samples * hidden * 8  # at least its N x H float64 activations
    assert "hidden 3:" not in message and "Nothing was run." in message
    assert refused.value.needed >= samples * 2 * wide * 8
    assert not list(tmp_path.glob("*.*"))  # no job started: crashing_job leaves a marker per attempt
    assert not list((tmp_path / "out").glob("jobs/*.json"))


# Optimisers, minibatches, epochs and schedules as axes: 3 x 2 x 2 fits of 3 epochs.
NEW_AXES = dict(hidden=3, optimizer=["sgd", "adam:lr=0.01", "sgd:momentum=0.9"], batch_size=[None, 32],
                schedule=[None, "cosine:T_max=10"], epochs=3)
OPTIMIZERS = {"sgd": nnx.optim.SGD(0.01), "adam": nnx.optim.Adam(lr=0.01),
              "sgd:momentum=0.9": nnx.optim.SGD(0.01, momentum=0.9)}


def new_axes():
    return Axes.of(backend="numpy", **NEW_AXES)


@pytest.fixture(scope="module")
def new_axes_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("new-axes")
    return out, run_sweep(new_axes(), LocalPool(2), out=out, keep_models=True)


def test_new_axes_are_honoured_by_the_workers_and_recorded(new_axes_reference):
    """Each job is the fit its settings describe, written out by hand here, to the bit."""
    out, records = new_axes_reference
    assert [(r["optimizer"], r["schedule"], r["batch_size"]) for r in records] == [
        (o, s, b) for o in OPTIMIZERS for s in (None, "cosine:T_max=10") for b in (None, 32)]
    X, y = nnx.datasets.moons(200, 0.2, 0)
    for r in records:
        updates = 3 * (1 if r["batch_size"] is None else 7)  # ceil(200 / 32) = 7 batches an epoch
        assert r["status"] == "ok" and (r["epochs"], r["passes"], r["passes_done"]) == (3, None, updates)
        assert r["lr"] == 0.01
        model = nnx.MLP([2, 3, 2], hidden="tanh", output="softmax", seed=0)
        schedule = None if r["schedule"] is None else nnx.optim.Cosine(T_max=10)
        with nnx.use_backend("numpy"):  # the sweep's backend
            model.fit(X, y, epochs=3, optimizer=OPTIMIZERS[r["optimizer"]], batch_size=r["batch_size"],
                      schedule=schedule, l2=0.01, reduction="sum", log_every=updates, verbose=0)
            assert r["loss"] == model.history[updates] and r["train_accuracy"] == model.accuracy(X, y)
        swept = nnx.load(out / "jobs" / f"{r['key']}.npz")
        for (W, b), (W2, b2) in zip(model.params, swept.params):
            np.testing.assert_array_equal(W, W2)
            np.testing.assert_array_equal(b, b2)
        stored = json.loads((out / "jobs" / f"{r['key']}.json").read_text())
        assert {k: stored[k] for k in ("optimizer", "lr", "batch_size", "epochs", "schedule")} == \
            {k: r[k] for k in ("optimizer", "lr", "batch_size", "epochs", "schedule")}
    assert len({r["loss"] for r in records}) == len(records)  # every setting changed the result
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"epochs", "batch_size", "optimizer", "schedule"} <= set(header)


def test_interrupted_sweep_with_new_axes_resumes_to_identical_records(new_axes_reference, tmp_path):
    _, records = new_axes_reference
    out = tmp_path / "out"
    seen = []
    stop_after_two = _ctrl_c_after(2, seen)
    with pytest.raises(SweepInterrupted):
        run_sweep(new_axes(), LocalPool(2), out=out, keep_models=True, progress=stop_after_two)
    resumed = run_sweep(new_axes(), LocalPool(2), out=out, keep_models=True)
    assert resumed.reused == 2
    assert results_of(resumed) == results_of(records)
    for r in records:
        first, second = nnx.load(new_axes_reference[0] / "jobs" / f"{r['key']}.npz"), resumed.models[r["key"]]
        for (W, b), (W2, b2) in zip(first.params, second.params):
            np.testing.assert_array_equal(W, W2)
            np.testing.assert_array_equal(b, b2)
    # A wider sweep over the same folder runs only what is new.
    wider = run_sweep(Axes.of(backend="numpy", **{**NEW_AXES, "batch_size": [None, 32, 64]}), LocalPool(2), out=out)
    assert wider.reused == len(records) and len(wider) == len(records) * 3 // 2


def test_results_written_before_the_new_axes_resume_as_plain_gradient_descent(reference, tmp_path, monkeypatch):
    """Records without the optimiser, batch-size, epochs and schedule fields (as earlier versions wrote
    them) are found again by key and read as full-batch gradient descent."""
    source, records = reference
    out = tmp_path / "old"
    shutil.copytree(source, out)
    for path in (out / "jobs").glob("*.json"):
        record = json.loads(path.read_text())
        for name in ("epochs", "batch_size", "optimizer", "schedule"):
            del record[name]
        path.write_text(json.dumps(record))
    monkeypatch.setenv(MARKERS, str(tmp_path))  # crashing_job would leave a marker if it ran
    again = run_sweep(small(hidden=[0, 1, 2, 3, 4, 5]), LocalPool(2), out=out, keep_models=True, job=crashing_job)
    assert again.reused == 6 and list(again) == list(records)
    assert all((r["optimizer"], r["batch_size"], r["epochs"], r["schedule"]) == ("sgd", None, None, None)
               for r in again)
    assert not list(tmp_path.glob("*.*"))
    both = run_sweep(small(hidden=[0, 1, 2, 3, 4, 5], optimizer=["sgd", "adam"]), LocalPool(2), out=out)
    assert both.reused == 6 and [r["optimizer"] for r in both] == ["sgd"] * 6 + ["adam"] * 6
    assert results_of(both[:6]) == results_of(records)


def test_a_slower_path_is_recorded_by_the_job_and_said_once_by_the_sweep(monkeypatch):
    """A fit's PerformanceWarning (a backend without a compiled loop for the optimiser) becomes a note
    in the record instead of a line on the worker's stderr; the sweep warns once per note."""
    with nnx.use_backend("numpy") as numpy_backend:
        monkeypatch.setattr(type(numpy_backend), "compiles", lambda self, optimizer: False)
    monkeypatch.setattr("nnx.model._SLOW_WARNED", set())
    configs, datasets = plan(Axes.of(backend="numpy", hidden=3, optimizer="adam", epochs=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", nnx.PerformanceWarning)  # none escapes the job
        record = run_job(configs[0], datasets[configs[0].data_sha256])["record"]
    assert record["status"] == "ok" and len(record["notes"]) == 1
    assert record["notes"][0].startswith("the numpy backend has no compiled loop for Adam")
    with pytest.warns(nnx.PerformanceWarning) as caught:
        records = run_sweep(small(hidden=[1, 2, 3]), LocalPool(2), job=noted_job)
    assert [str(w.message) for w in caught if w.category is nnx.PerformanceWarning] == [SLOW]
    assert all(r["notes"] == [SLOW] for r in records)
