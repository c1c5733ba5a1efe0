"""The benchmark suite's own machinery: workloads, counts, timing, JSON, CLI, table, plot."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnx.backends.numpy_backend import NumpyBackend
from nnx.bench import command, peers, report, results
from nnx.bench.runner import FIRST_GUESS_MAX, Measurement, calibrate, measure, plan
from nnx.bench.targets import (ALL_TARGETS, BASELINE, BackendTarget, ProductsOnlyTarget, TutorialCodeTarget,
                               applies, available, make_data, make_target)
from nnx.errors import BackendUnavailableError
from nnx.bench.workloads import SIZE_SETS, WORKLOADS, Case, get_workload, scaled_lr
from nnx.initializers import initial_params
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ workloads
def test_workload_names_are_the_documented_stable_ones():
    assert list(WORKLOADS) == ["tutorial", "sweep", "large-hidden", "blas-bound", "xor", "crossover", "minibatch",
                              "mnist-shaped"]
    with pytest.raises(ValueError, match="tutorial"):
        get_workload("tutorail")


def test_tutorial_case_is_tutorial_003():
    (case,) = WORKLOADS["tutorial"].cases("full")
    assert (case.n_samples, case.layer_sizes, case.hidden, case.output) == (200, (2, 3, 2), "tanh", "softmax")
    assert (case.lr, case.l2, case.reduction, case.init, case.data) == (0.01, 0.01, "sum", "normal_fan_in", "moons")


def test_issue_sizes():
    sweep = WORKLOADS["sweep"].cases("full")
    assert [c.n_hidden for c in sweep] == [1, 2, 3, 4, 5, 20, 50, 100, 500]
    assert all(c.lr == 0.01 for c in sweep if c.n_hidden <= 50)  # the tutorial's own settings
    large = WORKLOADS["large-hidden"].cases("full")
    assert [(c.n_samples, c.n_hidden, c.gpu_only) for c in large] == [
        (4096, 1024, False), (4096, 4096, False), (4096, 16384, False), (4096, 65536, True)]
    for c in large:
        assert c.lr == pytest.approx(0.01 * (200 / 4096) * (3 / c.n_hidden))
    assert [c.n_hidden for c in WORKLOADS["large-hidden"].cases("full", gpu=False)] == [1024, 4096, 16384]
    (blas,) = WORKLOADS["blas-bound"].cases("full")
    assert (blas.n_samples, blas.layer_sizes, blas.data) == (8192, (784, 2048, 10), "random")
    (xor,) = WORKLOADS["xor"].cases("full")
    assert (xor.layer_sizes, xor.hidden, xor.output) == ((2, 2, 1), "sigmoid", "sigmoid")
    cross = WORKLOADS["crossover"].cases("full")
    work = [c.n_samples * c.n_hidden for c in cross]
    assert work == sorted(work) and len({c.layer_sizes[::2] for c in cross}) == 1  # one model shape, growing


@pytest.mark.parametrize("size_set", SIZE_SETS)
def test_case_ids_are_unique_and_tiny_is_tiny(size_set):
    for w in WORKLOADS.values():
        ids = [c.id for c in w.cases(size_set)]
        assert len(ids) == len(set(ids)) and ids
        if size_set == "tiny":
            assert all(c.flops_per_pass() < 1e6 and c.n_samples <= 256 for c in w.cases("tiny"))
    with pytest.raises(ValueError, match="size set"):
        WORKLOADS["xor"].cases("huge")


class CountingNumpy:
    """numpy, except that ``dot`` adds 2*m*k*n to ``flops``: an independent product count."""

    def __init__(self):
        self.flops = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def dot(self, a, b, out=None):
        (m, k), (k2, n) = np.shape(a), np.shape(b)
        assert k == k2
        self.flops += 2 * m * k * n
        return np.dot(a, b, out=out)


COUNT_CASES = [WORKLOADS["tutorial"].cases("tiny")[0], WORKLOADS["blas-bound"].cases("tiny")[0],
               WORKLOADS["xor"].cases("tiny")[0],
               Case("deep", 12, (5, 7, 6, 3), lr=0.01)]


@pytest.mark.parametrize("case", COUNT_CASES, ids=lambda c: c.id)
def test_flop_count_matches_the_products_a_pass_performs(case):
    backend = NumpyBackend()
    backend.xp = CountingNumpy()
    net = Network(case.layer_sizes, case.hidden, case.output)
    X, _, T = make_data(case) if case.workload != "deep" else (np.ones((12, 5)), None, np.eye(3)[np.arange(12) % 3])
    data = backend.prepare_data(net, X, T)
    state = TrainState(backend.prepare_params(net, initial_params(case.layer_sizes, case.init, 0)))
    backend.train(net, state, data, Objective(case.reduction, case.l2), SGD(case.lr), 3)
    assert backend.xp.flops == 3 * case.flops_per_pass()


def test_products_only_runs_exactly_the_counted_products(monkeypatch):
    case = WORKLOADS["blas-bound"].cases("tiny")[0]
    target = ProductsOnlyTarget("numpy/products-only", case, "float64")
    counter = CountingNumpy()
    monkeypatch.setattr(target.backend, "xp", counter)
    target.run(2)
    assert counter.flops == 2 * case.flops_per_pass()
    assert target.finite()


def test_byte_count_of_the_tutorial_network_by_hand():
    # N=200, 2-3-2. Head: 3*N*C = 1200 elements.
    # Layer 0 (2->3): forward 400+6+3+600, dW 400+600+6, db 600+3, update 18+9      = 2645.
    # Layer 1 (3->2): forward 600+6+2+400, dW 600+400+6, db 400+2,
    #                 delta back 400+6+600+600, update 18+6                          = 4046.
    case = WORKLOADS["tutorial"].cases("full")[0]
    assert case.bytes_per_pass(8) == (1200 + 2645 + 4046) * 8
    assert case.bytes_per_pass(4) == (1200 + 2645 + 4046) * 4
    assert case.bound() == "memory"
    assert WORKLOADS["blas-bound"].cases("full")[0].bound(4) == "compute"


def test_scaled_lr_is_tutorial_lr_at_tutorial_size():
    assert scaled_lr(200, 3) == pytest.approx(0.01)
    assert scaled_lr(400, 6) == pytest.approx(0.0025)


# -------------------------------------------------------------------- targets
@pytest.mark.parametrize("workload", ["tutorial", "sweep", "large-hidden", "blas-bound", "xor", "crossover"])
def test_baseline_and_numpy_backend_do_the_same_training(workload):
    """A speed-up only means something if both sides do the same work from the same start."""
    for case in WORKLOADS[workload].cases("tiny"):
        baseline = TutorialCodeTarget(case, "float64")
        baseline.run(3)
        nnx_numpy = BackendTarget("numpy", case, "float64")
        nnx_numpy.reset()
        nnx_numpy.run(3)
        got = nnx_numpy.backend.params_to_numpy(nnx_numpy.state.params)
        want = [(baseline.result["W1"], baseline.result["b1"]), (baseline.result["W2"], baseline.result["b2"])]
        for (W, b), (W0, b0) in zip(got, want):
            np.testing.assert_allclose(W, W0, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b, b0.ravel(), rtol=1e-9, atol=1e-12)


def test_minibatch_workloads_are_the_issues_fits():
    (mini,) = WORKLOADS["minibatch"].cases("full")
    assert (mini.n_samples, mini.layer_sizes, mini.optimizer, mini.batch_size, mini.epochs) == (200, (2, 3, 2), "adam",
                                                                                                32, 2000)
    assert mini.data == "moons" and mini.updates_per_pass == 7 and mini.id == "N200-2x3x2-adam-b32"
    (mnist,) = WORKLOADS["mnist-shaped"].cases("full")
    assert (mnist.n_samples, mnist.layer_sizes, mnist.optimizer, mnist.batch_size, mnist.epochs) == (
        60_000, (784, 256, 10), "adam", 128, 1)
    assert mnist.data == "random" and mnist.dtypes == ("float32",) and mnist.updates_per_pass == 469
    assert {job.dtype for job in plan([mnist], ["numpy"], ["float32", "float64"])} == {"float32"}
    assert not applies(BASELINE, WORKLOADS["minibatch"]) and applies(BASELINE, WORKLOADS["tutorial"])
    assert all(applies(p, WORKLOADS[w]) for p in peers.PEERS for w in ("minibatch", "mnist-shaped"))


def test_minibatch_targets_train_on_the_same_batches_as_a_fit():
    """Both backends and a hand-written loop over the same batches (Adam, mean loss) land together."""
    from nnx.bench.targets import minibatches

    case = WORKLOADS["minibatch"].cases("tiny")[0]
    batches = minibatches(case, 2)
    assert batches.updates == 2 * case.updates_per_pass and sorted(batches.order[:case.n_samples]) == list(
        range(case.n_samples))
    results = []
    for name in ("numpy", "numba") if available()["numba"] is None else ("numpy",):
        target = BackendTarget(name, case, "float64")
        target.reset()
        target.run(2)
        results.append(target.backend.params_to_numpy(target.state.params))
        assert target.state.step == batches.updates
    X, _, T = make_data(case)
    params = [list(pair) for pair in initial_params(case.layer_sizes, case.init, 0)]
    m = [[np.zeros_like(a) for a in pair] for pair in params]
    v = [[np.zeros_like(a) for a in pair] for pair in params]
    for u in range(batches.updates):  # the tutorial's tanh/softmax pass on each batch, Adam's formulas
        rows = batches.order[batches.bounds[u]:batches.bounds[u + 1]]
        x, t = X[rows], T[rows]
        (W1, b1), (W2, b2) = params
        h = np.tanh(x @ W1 + b1)
        z = h @ W2 + b2
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dz = (p - t) / len(rows)
        dh = dz @ W2.T * (1 - h * h)
        grads = [(x.T @ dh, dh.sum(axis=0)), (h.T @ dz, dz.sum(axis=0))]
        step = u + 1
        for layer in range(2):
            for k in range(2):
                g = grads[layer][k]
                m[layer][k] = 0.9 * m[layer][k] + 0.1 * g
                v[layer][k] = 0.999 * v[layer][k] + 0.001 * g * g
                denom = np.sqrt(v[layer][k]) / np.sqrt(1 - 0.999 ** step) + 1e-8
                params[layer][k] = params[layer][k] - case.lr / (1 - 0.9 ** step) * m[layer][k] / denom
    for got in results:
        for (W, b), (W0, b0) in zip(got, params):
            np.testing.assert_allclose(W, W0, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(b, b0, rtol=1e-9, atol=1e-12)


def test_reset_returns_to_the_initial_parameters():
    case = WORKLOADS["tutorial"].cases("tiny")[0]
    target = BackendTarget("numpy", case, "float32")
    target.reset()
    start = target.backend.params_to_numpy(target.state.params)
    target.run(2)
    assert not np.array_equal(target.backend.params_to_numpy(target.state.params)[0][0], start[0][0])
    target.reset()
    np.testing.assert_array_equal(target.backend.params_to_numpy(target.state.params)[0][0], start[0][0])


def test_variants_apply_only_to_their_workloads():
    assert applies("numpy/products-only", WORKLOADS["blas-bound"])
    assert not applies("numpy/products-only", WORKLOADS["tutorial"])
    assert all(applies(p, WORKLOADS[w]) for p in peers.PEERS for w in ("tutorial", "large-hidden", "blas-bound"))
    assert not any(applies(p, WORKLOADS[w]) for p in peers.PEERS for w in ("sweep", "xor", "crossover"))
    assert applies("cupy/no-graphs", WORKLOADS["tutorial"]) and applies("cupy/op-by-op", WORKLOADS["xor"])
    assert not applies("cupy/no-graphs", WORKLOADS["blas-bound"])
    status = available()
    assert set(status) == set(ALL_TARGETS) and status[BASELINE] is None and status["numpy"] is None


def test_gpu_variants_refuse_cleanly_without_a_gpu():
    reason = available()["cupy/no-graphs"]
    if reason is None:
        pytest.skip("CuPy runs here")
    assert reason == available()["cupy"]
    with pytest.raises(BackendUnavailableError):
        make_target("cupy/no-graphs", WORKLOADS["tutorial"].cases("tiny")[0], "float32")


def test_gpu_only_sizes_are_planned_for_gpu_targets_only():
    cases = WORKLOADS["large-hidden"].cases("full")
    jobs = plan(cases, ["tutorial-code", "numpy", "cupy"], ["float32"])
    assert {j.target for j in jobs if j.case.gpu_only} == {"cupy"}
    assert len([j for j in jobs if not j.case.gpu_only]) == 9


@pytest.mark.parametrize("peer", peers.PEERS)
def test_peers_skip_cleanly_or_match_nnx(peer):
    reason = peers.availability()[peer]
    if reason is not None:
        assert "pip install 'nnx[peers]'" in reason
        pytest.skip(reason)
    case = WORKLOADS["tutorial"].cases("tiny")[0]
    target = peers.make_target(peer, case, "float64", threads=1)
    target.warm_up()
    target.reset()
    target.run(3)
    assert target.finite()
    ref = BackendTarget("numpy", case, "float64")
    ref.reset()
    ref.run(3)
    W1 = ref.backend.params_to_numpy(ref.state.params)[0][0]
    got = (target.model[0].weight.detach().cpu().numpy().T if peer == "torch" else np.asarray(target.result[0][0]))
    np.testing.assert_allclose(got, W1, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------- timing
def test_calibrate_makes_rounds_last_min_time():
    import time

    def run(passes):
        end = time.perf_counter() + passes * 0.001
        while time.perf_counter() < end:
            pass
    passes = calibrate(run, lambda: None, 0.02, first_pass_s=0.001)
    assert 20 <= passes <= 60
    assert calibrate(run, lambda: None, 0.0, first_pass_s=0.001) == 1


def test_calibrate_survives_a_misleading_first_pass():
    import time
    asked = []

    def run(passes):
        asked.append(passes)
        end = time.perf_counter() + passes * 1e-6
        while time.perf_counter() < end:
            pass
    # A first pass that looked free must not commit a round to a million passes...
    assert calibrate(run, lambda: None, 0.005, first_pass_s=1e-12) <= FIRST_GUESS_MAX
    assert asked[0] == FIRST_GUESS_MAX
    # ...and one that looked slow (a compile inside it) still ends at rounds of min_time.
    asked.clear()
    passes = calibrate(run, lambda: None, 0.005, first_pass_s=10.0)
    assert asked[0] == 1 and passes * 1e-6 >= 0.005


def test_measure_records_everything_a_result_is_quoted_with():
    case = WORKLOADS["tutorial"].cases("tiny")[0]
    m = measure(case, "numpy", "float64", min_time=0.01, rounds=2)
    assert m.finite and m.passes >= 1 and len(m.round_s) == 2
    info = m.extra_info()
    for key in ("workload", "backend", "dtype", "sizes", "passes_per_s", "samples_per_s", "gflops", "gbps",
                "warmup_s", "compile_s", "bound", "flops_per_pass", "bytes_per_pass", "passes_per_round"):
        assert key in info
    assert info["samples_per_s"] == pytest.approx(200 * info["passes_per_s"])
    assert statistics.median(m.round_s) >= 0.001  # calibrated to ~0.01 s rounds; a loaded machine runs faster than it calibrated


class _LoggingTarget:
    """A stand-in target that logs its timed runs."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def warm_up(self):
        return {"first_pass_s": 0.001, "compile_s": None}

    def reset(self):
        pass

    def run(self, passes):
        self.log.append(self.name)

    def finite(self):
        return True

    def info(self):
        return {"device": "cpu"}


def test_rounds_of_a_case_are_interleaved_and_failures_kept_apart(monkeypatch):
    from nnx.bench import runner
    log = []

    def fake_make_target(name, case, dtype, threads=None):
        if name == "broken":
            raise RuntimeError("cannot build")
        return _LoggingTarget(name, log)
    monkeypatch.setattr(runner, "make_target", fake_make_target)
    failed = {}
    case = WORKLOADS["tutorial"].cases("tiny")[0]
    ms = runner.measure_together(case, "float64", ["a", "broken", "b"], min_time=0.0, rounds=3, failed=failed)
    assert [m.target for m in ms] == ["a", "b"] and all(len(m.round_s) == 3 for m in ms)
    assert log == ["a", "b"] * 3  # min_time 0: no calibration runs, then round by round
    assert list(failed) == ["broken"] and "cannot build" in str(failed["broken"])
    with pytest.raises(RuntimeError):
        runner.measure_together(case, "float64", ["broken"], min_time=0.0, rounds=1)


def _fake(case: Case, target: str, pass_s: float, dtype: str = "float64") -> Measurement:
    return Measurement(case, target, dtype, passes=10, round_s=[pass_s * 10] * 3, warmup_s=0.5, compile_s=None,
                       finite=True)


def test_rates_follow_from_the_round_times():
    case = WORKLOADS["blas-bound"].cases("full")[0]
    m = Measurement(case, "numpy", "float32", passes=4, round_s=[2.0, 1.0, 100.0], warmup_s=0, compile_s=None,
                    finite=True)
    assert m.passes_per_s == pytest.approx(2.0)  # median round 2 s / 4 passes
    assert m.gflops == pytest.approx(case.flops_per_pass() * 2 / 1e9)
    assert m.gbps == pytest.approx(case.bytes_per_pass(4) * 2 / 1e9)


# ---------------------------------------------------------------------- table
def test_table_quotes_speedups_over_baseline_and_numpy():
    case = WORKLOADS["tutorial"].cases("full")[0]
    ms = [_fake(case, "tutorial-code", 1e-3), _fake(case, "numpy", 2.5e-4), _fake(case, "numba", 5e-5)]
    text = report.table(ms)
    numba_row = next(line for line in text.splitlines() if " numba " in line)
    assert "20.00x" in numba_row and "5.00x" in numba_row  # over tutorial-code, over numpy
    assert "vs tutorial-code" in text.splitlines()[0]
    summary = report.summary(ms)
    assert "20.00x" in summary and "4.00x" in summary


def test_crossover_names_the_size_where_one_backend_overtakes():
    cases = WORKLOADS["crossover"].cases("full", gpu=False)
    ms = []
    for i, c in enumerate(cases):
        ms.append(_fake(c, "numpy", 1.0))
        ms.append(_fake(c, "cupy", 2.0 if i < 3 else 0.5))  # slower until the fourth size
    lines = report.crossovers(ms)
    assert lines == [f"crossover float64: cupy overtakes numpy from {cases[3].id} "
                     f"(N x H = {cases[3].n_samples * cases[3].n_hidden:,})"]


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    cases = WORKLOADS["sweep"].cases("quick")
    ms = [_fake(c, t, 1e-3 * (i + 1)) for i, c in enumerate(cases) for t in ("tutorial-code", "numpy")]
    path = report.plot(ms, tmp_path / "sub" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------ CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnx bench")
    command.add_arguments(parser)
    return parser


@pytest.mark.parametrize("argv, message", [
    (["--workload", "tutorail"], "Did you mean 'tutorial'?"),
    (["--backend", "numpi"], "Did you mean 'numpy'?"),
    (["--dtype", "float16"], "unknown dtype 'float16'"),
    (["--threads", "0"], "expected a positive number"),
    (["--quick", "--sizes", "full"], "not allowed with argument"),
])
def test_cli_argument_errors_are_clear(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_an_unavailable_backend(monkeypatch, capsys):
    status = dict(available(), cupy="no CUDA device here")
    monkeypatch.setattr(command, "available", lambda: status)
    args = _parser().parse_args(["--backend", "cupy", "--sizes", "tiny", "--no-save"])
    assert command.run(args) == 2
    assert "skipping cupy: no CUDA device here" in capsys.readouterr().err


def test_cli_run_prints_table_saves_json_and_compare_reads_it(tmp_path, capsys):
    paths = []
    for i in range(2):
        path = tmp_path / f"run{i}.json"
        plot = ["--plot", str(tmp_path / "p.png")] if importlib.util.find_spec("matplotlib") else []
        args = _parser().parse_args(["-w", "xor,tutorial", "-b", "numpy", "-d", "float64", "--sizes", "tiny",
                                     "--json", str(path), *plot])
        assert command.run(args) == 0
        paths.append(path)
    out = capsys.readouterr().out
    assert "vs tutorial-code" in out and "tutorial-code" in out and "N4-2x2x1" in out
    doc = json.loads(paths[0].read_text())
    assert {"machine_info", "commit_info", "benchmarks", "datetime", "version"} <= set(doc)
    names = {b["name"] for b in doc["benchmarks"]}
    assert "test_xor[tutorial-code-float64-N4-2x2x1]" in names and "test_tutorial[numpy-float64-N200-2x3x2]" in names
    for bench in doc["benchmarks"]:
        assert bench["stats"]["iterations"] == bench["extra_info"]["passes_per_round"]
        assert bench["extra_info"]["threads"]["requested"] >= 1
    # --report re-renders a saved run without measuring: same rates, Markdown on request.
    loaded = results.load(paths[0])
    assert [m.passes_per_s for m in loaded] == pytest.approx([b["extra_info"]["passes_per_s"]
                                                              for b in doc["benchmarks"]])
    assert command.run(_parser().parse_args(["--report", str(paths[0]), "--markdown"])) == 0
    assert "| workload | case | dtype | backend |" in capsys.readouterr().out
    assert command.run(_parser().parse_args(["--report", str(tmp_path / "missing.json")])) == 2
    pytest.importorskip("pytest_benchmark")
    from pytest_benchmark.storage.file import FileStorage
    from pytest_benchmark.logger import Logger
    storage = FileStorage(tmp_path, logger=Logger(Logger.QUIET))
    loaded = list(storage.load_benchmarks(*map(str, paths)))
    assert len(loaded) == 2 * len(doc["benchmarks"]) and all(b["ops"] > 0 for b in loaded)
    shown = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", "--group-by=group",
                            "--columns=min,median,ops", *map(str, paths)],
                           capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "test_xor[numpy-float64-N4-2x2x1]" in shown.stdout and "xor N4-2x2x1 float64" in shown.stdout


def test_nnx_bench_names_match_the_pytest_suite():
    pytest.importorskip("pytest_benchmark")
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                                str(REPO / "benchmarks" / "test_bench_workloads.py")],
                               capture_output=True, text=True, cwd=REPO, timeout=120,
                               env={**os.environ, "NNX_BENCH_SIZES": "tiny"})
    assert collected.returncode == 0, collected.stdout + collected.stderr
    case = WORKLOADS["blas-bound"].cases("tiny")[0]
    name = f"{results.test_name('blas-bound')}[{results.param_id('numpy/products-only', 'float32', case.id)}]"
    assert f"{results.SUITE_FILE}::{name}" in collected.stdout


def _run_suite(*args: str, sizes: str = "tiny") -> subprocess.CompletedProcess:
    # numpy and tutorial-code only: compiling Numba in three fresh processes would dominate.
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k",
                           "xor and (numpy or tutorial)", *args,
                           str(REPO / "benchmarks")], capture_output=True, text=True, cwd=REPO, timeout=300,
                          # outside xdist (CI's PYTEST_ADDOPTS and the worker's PYTEST_XDIST_* variables):
                          # pytest-benchmark times nothing under xdist
                          env={**{k: v for k, v in os.environ.items()
                                  if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")},
                               "NNX_BENCH_SIZES": sizes})


def test_tiny_suite_runs_untimed_unless_asked(tmp_path):
    pytest.importorskip("pytest_benchmark")
    plain = _run_suite()
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "passed" in plain.stdout and "benchmark 'xor" not in plain.stdout  # ran, nothing timed
    out = tmp_path / "timed.json"
    timed = _run_suite("--benchmark-enable", f"--benchmark-json={out}")
    assert timed.returncode == 0, timed.stdout + timed.stderr
    doc = json.loads(out.read_text())
    names = {b["name"] for b in doc["benchmarks"]}
    assert "test_xor[tutorial-code-float64-N4-2x2x1]" in names
    assert {b["group"] for b in doc["benchmarks"]} == {"xor N4-2x2x1 float32", "xor N4-2x2x1 float64"}
    for bench in doc["benchmarks"]:  # per-pass statistics, as nnx bench saves them
        assert bench["stats"]["iterations"] == bench["extra_info"]["passes_per_round"]
        assert bench["extra_info"]["passes_per_s"] > 0 and bench["extra_info"]["threads"]["requested"] >= 1
    bad = _run_suite(sizes="huge")
    assert bad.returncode != 0 and "NNX_BENCH_SIZES='huge'" in bad.stdout + bad.stderr


def test_pinning_threads_starts_numbas_pool_on_nnxs_layer_not_openmp():
    """A pool started on Numba's default layer (OpenMP) made PyTorch eager run 4-5x slower beside it."""
    if available()["numba"] is not None:
        pytest.skip(f"numba unavailable: {available()['numba']}")
    code = ("import numba\nfrom nnx.bench.machine import pin_threads\npin_threads(1)\n"
            "@numba.njit(parallel=True)\ndef f(n):\n    s = 0\n    for i in numba.prange(n):\n        s += i\n"
            "    return s\nf(4)\nprint(numba.threading_layer())")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["workqueue"]
