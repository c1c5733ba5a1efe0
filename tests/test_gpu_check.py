"""The one-shot GPU check, tested on the CPU as far as it goes without a GPU.

``benchmarks/gpu_check.sh``: its steps, their order and time limits (dry run),
and a real run where CuPy is missing, which must stop after the probe with a
clear message and leave at most 8 files. ``benchmarks/gpu_smoke.py``: its
sections run with the NumPy backend standing in for CuPy (the script's own
logic; the GPU figures come on a GPU). ``benchmarks/gpu_results.py``: RESULTS.md
from a synthetic output folder, every figure traced back to the input files.
Also the two ``nnx bench`` changes the check relies on: parameters reset in
place (the CuPy backend's programs and graphs are keyed by array pointers) and
``--no-references``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnx.backends.numpy_backend import NumpyBackend
from nnx.bench import command, results, runner, targets
from nnx.bench.runner import Measurement
from nnx.bench.workloads import WORKLOADS, Case

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
MAX_FILES = 8
SLOT_SECONDS = 360
needs_bash = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="the GPU check is a bash script using coreutils' timeout")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------ nnx bench
def test_reset_restores_the_parameters_into_the_same_arrays():
    case = WORKLOADS["tutorial"].cases("full")[0]
    target = targets.BackendTarget("numpy", case, "float64")
    target.reset()
    arrays = [a for pair in target.state.params for a in pair]
    start = [a.copy() for a in arrays]
    target.run(5)
    first = [a.copy() for a in arrays]
    assert not np.array_equal(first[0], start[0])
    target.reset()
    assert [a for pair in target.state.params for a in pair] == arrays  # the very same array objects
    assert all(np.array_equal(a, s) for a, s in zip(arrays, start)) and target.state.updates == 0
    target.run(5)
    assert all(np.array_equal(a, f) for a, f in zip(arrays, first))


class _PointerRecordingBackend(NumpyBackend):
    """Records the parameter pointers each ``train`` sees, as the CuPy backend's program cache keys them."""

    def __init__(self):
        self.keys: set[tuple[int, ...]] = set()

    def train(self, net, state, data, objective, optimizer, lrs, batches=None):
        self.keys.add(tuple(a.ctypes.data for pair in state.params for a in pair))
        return super().train(net, state, data, objective, optimizer, lrs, batches)


def test_every_timed_round_trains_the_same_parameter_arrays(monkeypatch):
    backend = _PointerRecordingBackend()
    monkeypatch.setattr(targets, "_backend", lambda name: backend)
    m = runner.measure(WORKLOADS["xor"].cases("full")[0], "numpy", "float64", min_time=0.005, rounds=4)
    assert len(m.round_s) == 4 and m.finite
    assert len(backend.keys) == 1  # warm-up, calibration and every round: one program would serve them all


def _select(argv: list[str]):
    parser = command.argparse.ArgumentParser()
    command.add_arguments(parser)
    return command._select(parser.parse_args(argv))


def test_no_references_times_only_the_chosen_backends():
    jobs, _ = _select(["-w", "tutorial", "-b", "numpy", "--sizes", "tiny"])
    assert {j.target for j in jobs} == {targets.BASELINE, "numpy"}
    jobs, _ = _select(["-w", "tutorial", "-b", "numpy", "--sizes", "tiny", "--no-references"])
    assert {j.target for j in jobs} == {"numpy"}
    jobs, _ = _select(["-w", "xor", "--sizes", "tiny", "--no-references"])
    assert targets.BASELINE not in {j.target for j in jobs} and "numpy" not in {j.target for j in jobs}


def test_no_references_on_the_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "nnx", "bench", "-w", "xor", "--sizes", "tiny", "-b", "numpy",
                          "--no-references", "--json", str(tmp_path / "run.json")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    saved = json.loads((tmp_path / "run.json").read_text())
    assert [b["params"]["backend"] for b in saved["benchmarks"]] == ["numpy", "numpy"]  # float32, float64
    rows = [line.split() for line in run.stdout.splitlines() if line.startswith("xor ")]
    assert [row[3] for row in rows] == ["numpy", "numpy"]  # no tutorial-code row in the table


# ------------------------------------------------------------ the script
def _run_check(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    full = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    full.update(OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path), **env)
    run = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full, cwd=REPO, timeout=300)
    return run, out


@needs_bash
def test_steps_run_in_order_each_under_a_limit_that_fits_the_slot(tmp_path):
    run, out = _run_check(tmp_path, NNX_GPU_CHECK_DRY_RUN="1")
    assert run.returncode == 0, run.stderr
    steps = re.findall(r"^step (\S+) (\d+): (.*)$", run.stdout, re.MULTILINE)
    assert [s[0] for s in steps] == ["install", "probe", "smoke", "tests", "bench-gpu", "bench-cpu", "results"]
    text = SCRIPT.read_text()
    grace = int(re.search(r"^KILL_GRACE=(\d+)", text, re.MULTILINE).group(1))
    assert sum(int(limit) + grace for _, limit, _ in steps) <= SLOT_SECONDS
    background = re.search(r"^background prewarm-numba (\d+):", run.stdout, re.MULTILINE)
    assert background and int(background.group(1)) < SLOT_SECONDS - 60  # done before bench-cpu at worst
    commands = {name: cmd for name, _, cmd in steps}
    assert "--no-references" in commands["bench-gpu"] and "--no-references" in commands["bench-cpu"]
    gpu_backends = re.search(r"-b (\S+)", commands["bench-gpu"]).group(1).split(",")
    assert set(gpu_backends) == set(targets.GPU_TARGETS)
    assert re.search(r"-w tutorial,crossover\S* -b numba ", commands["bench-cpu"])
    assert "-m gpu" in commands["tests"] and "--junitxml" in commands["tests"]
    assert re.search(r"^export PYTHONUNBUFFERED=1$", text, re.MULTILINE)
    written = json.loads((out / "steps.json").read_text())
    assert written["dry_run"] and [s["status"] for s in written["steps"]] == ["dry-run"] * 7
    assert len(list(out.iterdir())) <= MAX_FILES


@needs_bash
def test_without_cupy_the_check_stops_after_the_probe_and_says_why(tmp_path):
    hidden = tmp_path / "hide"
    (hidden / "cupy").mkdir(parents=True)
    (hidden / "cupy" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'cupy'\", name='cupy')\n")
    run, out = _run_check(tmp_path, NNX_GPU_CHECK_INSTALL="0", PYTHONPATH=f"{hidden}{os.pathsep}{REPO}")
    assert run.returncode == 3, run.stdout + run.stderr
    assert "stopping early" in run.stderr and "cupy is not installed" in run.stderr
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_FILES and {"environment.json", "steps.json", "logs.tar.gz"} <= set(files)
    steps = json.loads((out / "steps.json").read_text())
    assert steps["stopped_early"] and [s["name"] for s in steps["steps"]] == ["probe"]
    assert steps["steps"][0]["status"] == "failed (3)"
    env = json.loads((out / "environment.json").read_text())
    assert env["cupy_unavailable"].startswith("cupy is not installed") and env["cores"] >= 1
    assert not list(tmp_path.glob("nnx-gpu-check.*"))  # its working folder is removed


# ------------------------------------------------------------ the smoke script on the CPU
class _StandIn(NumpyBackend):
    """The NumPy backend in the CuPy backend's place: takes its switches, reports no graph fallback."""

    def __init__(self, **switches):
        self.switches = switches

    def launches_per_pass(self, net, n_samples, batch_size=None, n_slots=0):
        return float(len(self.switches))

    def graph_fallback(self, net):
        return None


def _wall_seconds(run) -> float:
    import time

    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def test_smoke_paths_section_compares_bits_and_errors():
    smoke = _load("gpu_smoke")
    rows = smoke.paths_section(_StandIn, passes=3)
    assert [(r["path"], r["dtype"]) for r in rows] == [(p[0], d) for p in smoke.PATHS for d in ("float32", "float64")]
    for row in rows:  # the NumPy backend against itself: same bits, no error
        assert row["ok"] and row["graphs_equal_eager"] and row["repeat_equal"] and row["rel_err_vs_numpy"] == 0.0
        assert row["passes"] == 3 and json.dumps(row)


def test_smoke_optimizers_section_runs_every_path_and_optimiser():
    smoke = _load("gpu_smoke")
    rows = smoke.optimizers_section(_StandIn, intervals=2)
    assert [(r["path"], r["optimizer"], r["batch_size"], r["dtype"]) for r in rows] == [
        (p[0], o[0], o[2], o[3]) for p in smoke.OPTIMIZER_PATHS for o in smoke.OPTIMIZER_RUNS]
    for row in rows:  # the NumPy backend against itself: same bits, no error, the planned path
        assert row["ok"] and row["path_taken"] == row["path"] and row["rel_err_vs_numpy"] == 0.0, row
        per = smoke.FULL_BATCH_INTERVAL if row["batch_size"] is None else -(-row["n"] // row["batch_size"])
        assert row["updates"] == 2 * per and json.dumps(row)


def _small_fits():
    smoke = _load("gpu_smoke")
    return tuple((Case(c.workload, min(c.n_samples, 300), c.layer_sizes, c.lr, hidden=c.hidden, reduction=c.reduction,
                       l2=c.l2, data=c.data), dtype, batch, 2) for c, dtype, batch, _ in smoke.FITS)


def _small_cases() -> tuple[Case, Case, Case]:
    tutorial = WORKLOADS["tutorial"].cases("full")[0]
    moons = WORKLOADS["large-hidden"].cases("tiny")[0]
    blas = WORKLOADS["blas-bound"].cases("tiny")[0]
    return tutorial, moons, blas


def test_smoke_timings_section_times_each_case_and_saves_as_it_goes():
    smoke = _load("gpu_smoke")
    saved = []
    out = smoke.timings_section(lambda partial: saved.append(json.loads(json.dumps(partial))), _StandIn,
                                _wall_seconds, np, _small_cases(), (20, 5, 3, 2), _small_fits())
    tutorial, moons, blas = _small_cases()
    (minibatch, *_), (mnist, *_) = _small_fits()
    assert list(out) == ["tutorial float64", "tutorial float32", f"moons {moons.id} float32",
                         f"moons {moons.id} float64", f"blas-bound {blas.id} float32",
                         f"minibatch {minibatch.id} float64", f"mnist-shaped {mnist.id} float32"]
    assert len(saved) == 7 and list(saved[-1]) == list(out)
    fit = out[f"mnist-shaped {mnist.id} float32"]["cupy"]
    assert fit["optimizer"] == "Adam" and fit["batch_size"] == 128 and fit["passes"] == 2 * 3  # 300 rows / 128
    assert out[f"minibatch {minibatch.id} float64"]["cupy"]["passes"] == 2 * 7
    assert out["tutorial float64"]["cupy"]["passes"] == 20 and out["tutorial float64"]["cupy/op-by-op"]["passes"] == 5
    row = out[f"blas-bound {blas.id} float32"]
    assert row["share_of_products"] == pytest.approx(row["cupy/products-only"]["us_per_pass"] /
                                                     row["cupy"]["us_per_pass"])
    assert all(r["finite"] for entry in out.values() for r in entry.values() if isinstance(r, dict) and "finite" in r)


def test_smoke_plans_section_times_each_setting_in_force_and_restores_the_plan():
    from nnx.backends import cuda_plan

    smoke = _load("gpu_smoke")
    seen = []

    class Recording(_StandIn):
        def prepare_data(self, net, X, T):  # the plan as the CuPy backend would read it for this fit
            seen.append((cuda_plan.plan_tiny_net(net, X.shape[0]).threads, cuda_plan.TINY_TARGET_ITEMS))
            return super().prepare_data(net, X, T)

    tutorial, moons, _ = _small_cases()
    originals = cuda_plan.plan_one_block, cuda_plan.TINY_TARGET_ITEMS
    rows = smoke.plans_section(Recording, _wall_seconds, (tutorial, moons), (20, 3), parity_passes=5)
    assert (cuda_plan.plan_one_block, cuda_plan.TINY_TARGET_ITEMS) == originals
    settings = [(r["case"], r["dtype"], r["setting"]) for r in rows]
    assert settings == [(tutorial.id, d, f"threads={t}") for d in ("float64", "float32") for t in smoke.PLAN_THREADS] \
        + [(moons.id, "float32", f"items={i}") for i in smoke.PLAN_ITEMS]
    assert [r["setting"] for r in rows if r["default"]] == ["threads=256", "threads=256", f"items={1 << 18}"]
    threads = [t for t, _ in seen[:2 * len(smoke.PLAN_THREADS) * 2]]  # two fits per setting: timed, parity
    assert threads == [t for _ in range(2) for t in smoke.PLAN_THREADS for _ in range(2)]
    assert [i for _, i in seen[-2 * len(smoke.PLAN_ITEMS):]] == [i for i in smoke.PLAN_ITEMS for _ in range(2)]
    assert all(r["rel_err_vs_default"] == 0.0 and r["us_per_pass"] > 0 and json.dumps(r) for r in rows)


# ------------------------------------------------------------ RESULTS.md
def _measurement(workload: str, case_id: str, target: str, dtype: str, passes_per_s: float) -> Measurement:
    case = next(c for c in WORKLOADS[workload].cases("full") if c.id == case_id)
    passes = 10
    return Measurement(case, target, dtype, passes, [passes / passes_per_s] * 3, 0.1, None, True,
                       {"device": targets.target_device(target)})


def _bench(ms: list[Measurement], path: Path, command_line: str) -> None:
    doc = results.to_json(ms, threads={"requested": 16}, options={}, command=command_line)
    path.write_text(json.dumps(doc, default=str))


def _synthetic_folder(folder: Path) -> dict:
    """An output folder as the check writes it, with figures chosen here."""
    folder.mkdir()
    env = {"gpu": {"name": "Test GPU 9000", "sms": 132, "memory_gib": 139.8, "compute_capability": "9.0"},
           "nvidia_smi": {"driver_version": "580.65"}, "cuda_driver": "13.0", "cuda_runtime": "13.0",
           "nvrtc": "13.0", "cupy": "14.2.0", "cpu": "Test CPU", "cores": 16, "python": "3.11", "numpy": "2",
           "numba": "0.6", "nnx": "0.1.0"}
    (folder / "environment.json").write_text(json.dumps(env))
    (folder / "steps.json").write_text(json.dumps({"finished": "2030-01-01T00:00:00Z", "steps": [
        {"name": "probe", "status": "ok", "seconds": 3.5, "limit": 25},
        {"name": "tests", "status": "timeout", "seconds": 75.0, "limit": 75}]}))
    smoke = _load("gpu_smoke")
    timings = smoke.timings_section(lambda _: None, _StandIn, _wall_seconds, np, _small_cases(), (20, 5, 3, 2),
                                    _small_fits())
    blas_key = next(k for k in timings if k.startswith("blas-bound"))
    timings["blas-bound N65536-784x4096x10 float32"] = timings.pop(blas_key)
    (folder / "smoke.json").write_text(json.dumps({
        "errors": {}, "paths": smoke.paths_section(_StandIn, passes=2), "timings": timings,
        "optimizers": smoke.optimizers_section(_StandIn, intervals=1),
        "plans": [{"case": "N200-2x3x2", "dtype": "float64", "setting": "threads=256", "default": True,
                   "us_per_pass": 3.0, "passes": 20, "rel_err_vs_default": 0.0},
                  {"case": "N200-2x3x2", "dtype": "float64", "setting": "threads=384", "default": False,
                   "us_per_pass": 2.0, "passes": 20, "rel_err_vs_default": 2e-15}],
        "kernels": {"compile_s": {"tiny_mlp.cu": 4.5}, "ok": True, "instances": [
            {"kernel": "nnx_tiny_train<double, 2>", "registers": 64, "local_bytes": 0, "static_shared_bytes": 0,
             "max_threads_per_block": 512}]}}))
    (folder / "gpu-tests.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="7" failures="1" errors="0" skipped="2">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad"><failure message="x"/></testcase>'
        '</testsuite></testsuites>')
    moons, tutorial = ("large-hidden", "N4096-2x16384x2"), ("tutorial", "N200-2x3x2")
    rates = {(*moons, "cupy", "float32"): 3000.0, (*moons, "numba", "float32"): 40.0,
             (*tutorial, "cupy", "float64"): 900e3, (*tutorial, "numba", "float64"): 400e3,
             (*tutorial, "cupy", "float32"): 300e3, (*tutorial, "numba", "float32"): 600e3}
    gpu = [_measurement(*k, v) for k, v in rates.items() if k[2] == "cupy"]
    cpu = [_measurement(*k, v) for k, v in rates.items() if k[2] == "numba"]
    _bench(gpu, folder / "bench-gpu.json", "nnx bench -b cupy")
    _bench(cpu, folder / "bench-cpu.json", "nnx bench -b numba")
    return {"env": env, "rates": rates, "timings": timings}


def test_results_md_is_generated_from_the_folder_alone(tmp_path):
    folder = tmp_path / "out"
    made = _synthetic_folder(folder)
    gen = _load("gpu_results")
    assert gen.main([str(folder), "--merge-bench", "--out", str(folder / "RESULTS.md")]) == 0
    text = (folder / "RESULTS.md").read_text()
    assert "nothing here is typed by hand" in text and "gpu_results.py" in text
    assert "Test GPU 9000, 132 SMs, 139.8 GiB, compute capability 9.0" in text
    assert "580.65" in text and "CuPy | 14.2.0" in text and "Test CPU, 16 usable cores" in text
    assert "7 collected: 4 passed, 1 failed, 0 errors, 2 skipped." in text and "`tests.test_a::test_bad`" in text
    assert "| tests | timeout | 75 | 75 |" in text
    assert "NNX_BACKEND=cupy" not in text  # no whole-suite file, no section
    assert "| N200-2x3x2 | float64 | threads=256 (default) | 3 | 1.00x | 0.0e+00 |" in text
    assert "| N200-2x3x2 | float64 | threads=384 | 2 | 1.50x | 2.0e-15 |" in text
    rates = made["rates"]
    moons = rates[("large-hidden", "N4096-2x16384x2", "cupy", "float32")] / \
        rates[("large-hidden", "N4096-2x16384x2", "numba", "float32")]
    assert re.search(rf"cupy / numba \| 3e\+03 / 40 passes/s \| {moons:.3g}x \| >= 50x \| met \|", text)
    for dtype, verdict in (("float64", "met"), ("float32", "**MISSED**")):
        ratio = rates[("tutorial", "N200-2x3x2", "cupy", dtype)] / rates[("tutorial", "N200-2x3x2", "numba", dtype)]
        assert f"tutorial 003 {dtype}: cupy / numba (nnx bench) | " in text
        assert re.search(rf"{dtype}: cupy / numba \(nnx bench\) \|[^|]*\| {ratio:.3g}x \| > 1x \| "
                         rf"{re.escape(verdict)} \|", text)
    share = made["timings"]["blas-bound N65536-784x4096x10 float32"]["share_of_products"]
    assert f"| {share:.1%} | >= 70% | {'met' if share >= 0.7 else '**MISSED**'} |" in text
    merged = json.loads((folder / "bench.json").read_text())
    assert len(merged["benchmarks"]) == 6 and "nnx bench -b cupy ; nnx bench -b numba" == merged["nnx"]["command"]
    assert "`nnx_tiny_train<double, 2>` | 64 | 0 |" in text
    assert "## Optimisers: 1 intervals under a cosine schedule" in text
    assert ("| dense | 6-40-30-4, N=300 | adam amsgrad | 32 | float32 | 10 | True | True | 0.00e+00 | 0.0001 | 0 |"
            in text)
    assert re.search(r"\| minibatch N200-2x3x2 float64 \| cupy \| [\d.e+-]+ \| 14 \|", text)
    assert re.search(rf"\| large-hidden \| N4096-2x16384x2 \| float32 \| cupy \| 3k \|.*\| {moons:.3g}x \|", text)
    assert "CPU rows (numba): " in text and "16 threads" in text


def test_results_md_says_what_was_not_measured(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    text = _load("gpu_results").render(folder)
    assert text.count("not measured") == 6  # every target row
    assert "Not run (no JUnit file)." in text and "## Throughput" in text and "Not measured." in text


def test_results_md_reports_the_whole_suite_run_when_its_junit_file_is_there(tmp_path):
    folder = tmp_path / "out"
    _synthetic_folder(folder)
    (folder / "suite-cupy.xml").write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="12" failures="0" errors="1" skipped="3">'
        '<testcase classname="tests.test_b" name="test_broken"><error message="y"/></testcase>'
        '</testsuite></testsuites>')
    gen = _load("gpu_results")
    assert gen.main([str(folder), "--merge-bench", "--out", str(folder / "RESULTS.md")]) == 0
    text = (folder / "RESULTS.md").read_text()
    suite = text[text.index("## The whole suite under `NNX_BACKEND=cupy`"):text.index("## Targets")]
    assert "12 collected: 8 passed, 0 failed, 1 errors, 3 skipped." in suite and "`tests.test_b::test_broken`" in suite
    assert "7 collected: 4 passed, 1 failed" in text[:text.index("## The whole suite")]


def test_results_md_names_the_commit_given_beside_the_machines_own_reading(tmp_path):
    folder = tmp_path / "out"
    _synthetic_folder(folder)
    gen = _load("gpu_results")
    assert gen.main([str(folder), "--merge-bench", "--commit", "0123456789abcdef", "--out", str(folder / "R.md")]) == 0
    machine_row = next(line for line in (folder / "R.md").read_text().splitlines() if line.startswith("| nnx |"))
    assert "the files of commit 0123456789 (given to the generator; the GPU machine's git said commit" in machine_row
