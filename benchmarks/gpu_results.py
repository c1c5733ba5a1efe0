"""Turn a GPU check's output folder into ``benchmarks/RESULTS.md``; every figure comes from the files.

    python benchmarks/gpu_results.py OUT_FOLDER [--out benchmarks/RESULTS.md]

The folder is what ``benchmarks/gpu_check.sh`` leaves in ``$OUT``:
``environment.json`` (GPU, driver, CUDA, CuPy, CPU), ``steps.json`` (each step's
status and seconds), ``smoke.json`` (kernels, parity, CUDA-event timings),
``gpu-tests.xml`` (the ``gpu``-marked tests, JUnit) and ``bench.json`` (``nnx
bench`` on the GPU targets plus the same machine's Numba rows), and, when
present, ``suite-cupy.xml`` (the whole suite under ``NNX_BACKEND=cupy``). A
missing or partial file shows as "not measured" rather than stopping the
report, and each target says whether it was met, missed or could not be judged.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from nnx.bench import report, results
from nnx.bench.runner import Measurement

GENERATOR = "benchmarks/gpu_results.py"
WORKLOAD_ORDER = ("tutorial", "crossover", "large-hidden", "blas-bound", "sweep", "xor")
MOONS_TARGET_ID, MOONS_TARGET_X = "N4096-2x16384x2", 50.0
BLAS_SHARE_TARGET = 0.70
TUTORIAL_OVER_OP_BY_OP = 10.0
# Optional: `NNX_BACKEND=cupy pytest tests -m "not fresh_install" --junitxml=$OUT/suite-cupy.xml`, run after the
# check when the slot has time left (the check itself runs only the `gpu`-marked tests).
SUITE_JUNIT = "suite-cupy.xml"


def _load_json(folder: Path, name: str) -> dict | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def junit_counts(folder: Path, name: str = "gpu-tests.xml") -> dict | None:
    """passed/failed/errors/skipped of a JUnit file, and the failing tests' names."""
    path = folder / name
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) for s in suites)
    errors = sum(int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    names = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
             if case.find("failure") is not None or case.find("error") is not None]
    return {"total": total, "passed": total - failed - errors - skipped, "failed": failed, "errors": errors,
            "skipped": skipped, "failing": names}


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}"


def _verdict(measured: float | None, ok: bool | None) -> str:
    if measured is None or ok is None:
        return "not measured"
    return "met" if ok else "**MISSED**"


def _table(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, ["---"] * len(header), *rows])


def _measurements(folder: Path) -> list[Measurement]:
    path = folder / "bench.json"
    if not path.is_file():
        return []
    try:
        return results.load(path)
    except (OSError, ValueError, KeyError):
        return []


def _rate(ms: list[Measurement], workload: str, case_id: str, target: str, dtype: str) -> float | None:
    for m in ms:
        if (m.case.workload, m.case.id, m.target, m.dtype) == (workload, case_id, target, dtype):
            return m.passes_per_s
    return None


def throughput_table(ms: list[Measurement]) -> str:
    """One row per case, dtype and backend, grouped by case; each row over Numba on the same case."""
    order = {name: i for i, name in enumerate(WORKLOAD_ORDER)}
    ms = sorted(ms, key=lambda m: (order.get(m.case.workload, 99), m.case.n_samples * m.case.n_hidden,
                                   m.case.flops_per_pass(), m.dtype, m.target))
    rows = []
    for m in ms:
        numba = _rate(ms, m.case.workload, m.case.id, "numba", m.dtype)
        rate = f"{m.gflops:.3g} GFLOP/s" if m.case.bound(m.itemsize) == "compute" else f"{m.gbps:.3g} GB/s"
        launches = m.info.get("launches_per_pass")
        rows.append([m.case.workload, m.case.id, m.dtype, m.target + ("" if m.finite else " (NON-FINITE)"),
                     report.si(m.passes_per_s), report.si(m.samples_per_s), rate,
                     "-" if launches is None else f"{launches:.3g}",
                     "-" if numba is None or m.target == "numba" else f"{m.passes_per_s / numba:.3g}x"])
    return _table(["workload", "case", "dtype", "backend", "passes/s", "samples/s", "rate", "launches / pass",
                   "vs numba"], rows)


def targets(smoke: dict | None, ms: list[Measurement]) -> list[list[str]]:
    """The issue's GPU targets, each with its figures and verdict."""
    rows = []
    moons_gpu = _rate(ms, "large-hidden", MOONS_TARGET_ID, "cupy", "float32")
    moons_cpu = _rate(ms, "large-hidden", MOONS_TARGET_ID, "numba", "float32")
    ratio = moons_gpu / moons_cpu if moons_gpu and moons_cpu else None
    rows.append(["moons N=4,096, H=16,384 float32: cupy / numba", f"{_fmt(moons_gpu)} / {_fmt(moons_cpu)} passes/s",
                 f"{_fmt(ratio)}x", f">= {MOONS_TARGET_X:g}x", _verdict(ratio, ratio is not None and
                                                                          ratio >= MOONS_TARGET_X)])
    blas = ((smoke or {}).get("timings") or {}).get("blas-bound N65536-784x4096x10 float32")
    share = blas.get("share_of_products") if blas else None
    rows.append(["blas-bound N=65,536, 784-4,096-10 float32: bare cuBLAS products / full pass",
                 f"{_fmt(blas['cupy/products-only']['us_per_pass'])} / {_fmt(blas['cupy']['us_per_pass'])} us"
                 if blas else "-", "-" if share is None else f"{share:.1%}", f">= {BLAS_SHARE_TARGET:.0%}",
                 _verdict(share, share is not None and share >= BLAS_SHARE_TARGET)])
    for dtype in ("float64", "float32"):
        tut = ((smoke or {}).get("timings") or {}).get(f"tutorial {dtype}")
        if tut:
            fused, op = tut["cupy"]["us_per_pass"], tut["cupy/op-by-op"]["us_per_pass"]
            over = op / fused
            rows.append([f"tutorial 003 {dtype}: cupy over cupy/op-by-op (CUDA events)",
                         f"{_fmt(fused)} / {_fmt(op)} us per pass", f"{_fmt(over)}x",
                         f">= {TUTORIAL_OVER_OP_BY_OP:g}x", _verdict(over, over >= TUTORIAL_OVER_OP_BY_OP)])
        else:
            rows.append([f"tutorial 003 {dtype}: cupy over cupy/op-by-op", "-", "-",
                         f">= {TUTORIAL_OVER_OP_BY_OP:g}x", "not measured"])
        gpu = _rate(ms, "tutorial", "N200-2x3x2", "cupy", dtype)
        cpu = _rate(ms, "tutorial", "N200-2x3x2", "numba", dtype)
        speed = gpu / cpu if gpu and cpu else None
        rows.append([f"tutorial 003 {dtype}: cupy / numba (nnx bench)", f"{_fmt(gpu)} / {_fmt(cpu)} passes/s",
                     f"{_fmt(speed)}x", "> 1x", _verdict(speed, speed is not None and speed > 1)])
    return rows


def render(folder: Path, commit_given: str | None = None) -> str:
    env = _load_json(folder, "environment.json") or {}
    steps = _load_json(folder, "steps.json") or {}
    smoke = _load_json(folder, "smoke.json")
    bench = _load_json(folder, "bench.json")
    counts = junit_counts(folder)
    ms = _measurements(folder)
    gpu = env.get("gpu") or {}
    smi = env.get("nvidia_smi") or {}
    machine = (bench or {}).get("machine_info", {})
    nnx_info = machine.get("nnx", {})
    commit = (bench or {}).get("commit_info", {})
    lines = [
        "# GPU results",
        "",
        f"Generated by `{GENERATOR}` from the output of `benchmarks/gpu_check.sh` "
        f"({steps.get('finished', 'unknown time')}); nothing here is typed by hand. Rerun the check and the "
        "generator to replace it.",
        "",
        "## Machine",
        "",
        _table(["what", "value"], [
            ["GPU", f"{gpu.get('name', smi.get('name', '-'))}, {gpu.get('sms', '-')} SMs, "
                    f"{gpu.get('memory_gib', '-')} GiB, compute capability {gpu.get('compute_capability', '-')}"],
            ["NVIDIA driver", str(smi.get("driver_version", "-"))],
            ["CUDA", f"driver API {env.get('cuda_driver', '-')}, runtime {env.get('cuda_runtime', '-')}, "
                     f"NVRTC {env.get('nvrtc', '-')}"],
            ["CuPy", str(env.get("cupy", "-"))],
            ["CPU", f"{env.get('cpu', '-')}, {env.get('cores', '-')} usable cores "
                    f"(the CPU rows ran on {nnx_info.get('threads', {}).get('requested', '-')} threads)"],
            ["Python / NumPy / Numba", f"{env.get('python', '-')} / {env.get('numpy', '-')} / {env.get('numba', '-')}"],
            ["nnx", f"{env.get('nnx', '-')}, {_commit_text(commit, commit_given)}"],
        ]),
        "",
        "## Steps",
        "",
        _table(["step", "status", "seconds", "limit"],
               [[s["name"], s["status"], _fmt(s.get("seconds"), 3), str(s.get("limit", "-"))]
                for s in steps.get("steps", [])]) if steps.get("steps") else "No step record.",
        "",
        "## Tests marked `gpu`",
        "",
        *_counts_lines(counts),
    ]
    suite = junit_counts(folder, SUITE_JUNIT)
    if suite is not None:
        lines += ["", f"## The whole suite under `NNX_BACKEND=cupy` (`{SUITE_JUNIT}`, beside the check)", "",
                  *_counts_lines(suite)]
    lines += ["", "## Targets", "",
              _table(["target", "figures", "measured", "required", "verdict"], targets(smoke, ms)), ""]
    lines += _smoke_sections(smoke)
    lines += ["## Throughput (`nnx bench`, same machine)", ""]
    if ms:
        threads = nnx_info.get("threads", {}).get("requested", "-")
        cpu = nnx_info.get("cpu_model", env.get("cpu", "-"))
        lines += [f"GPU rows: {gpu.get('name', '-')}. CPU rows (numba): {cpu}, "
                  f"{nnx_info.get('usable_cores', env.get('cores', '-'))} usable cores, {threads} threads.", "",
                  throughput_table(ms), ""]
        crossings = report.crossovers(ms)
        lines += ["Crossovers:", ""] + [f"- {c}" for c in crossings] if crossings else ["No crossover measured."]
        lines.append("")
        lines.append(f"Command: `{(bench or {}).get('nnx', {}).get('command', '-')}`")
    else:
        lines.append("Not measured.")
    return "\n".join(lines).rstrip() + "\n"


def _commit_text(commit: dict, given: str | None) -> str:
    seen = f"commit {str(commit.get('id', '-'))[:10]}{' (uncommitted changes)' if commit.get('dirty') else ''}"
    if given is None:
        return seen
    return f"the files of commit {given[:10]} (given to the generator; the GPU machine's git said {seen})"


def _counts_lines(counts: dict | None) -> list[str]:
    if counts is None:
        return ["Not run (no JUnit file)."]
    return [f"{counts['total']} collected: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['errors']} errors, {counts['skipped']} skipped.",
            *[f"- failed: `{name}`" for name in counts["failing"]]]


def _smoke_sections(smoke: dict | None) -> list[str]:
    if not smoke:
        return ["## Smoke run", "", "Not run.", ""]
    out = []
    for name, error in (smoke.get("errors") or {}).items():
        out += [f"**Smoke section `{name}` failed:** `{error.splitlines()[0]}`", ""]
    kernels = smoke.get("kernels")
    if kernels:
        out += ["## Kernels (NVRTC, this GPU)", "",
                f"Compile seconds: {', '.join(f'{k} {v:g}' for k, v in kernels['compile_s'].items())}.", "",
                _table(["instance", "registers", "local memory (bytes)", "static shared (bytes)",
                        "max threads / block"],
                       [[f"`{r['kernel']}`", str(r["registers"]), str(r["local_bytes"]), str(r["static_shared_bytes"]),
                         str(r["max_threads_per_block"])] for r in kernels["instances"]]), ""]
    paths = smoke.get("paths")
    if paths:
        out += [f"## Paths: {paths[0]['passes']} passes, graphs / no graphs / NumPy", "",
                _table(["path", "network", "dtype", "graphs == no graphs (bits)", "two runs (bits)",
                        "error vs NumPy", "tolerance", "launches / pass", "graphs off because"],
                       [[r["path"], "-".join(map(str, r["sizes"])) + f", N={r['n']}", r["dtype"],
                         str(r["graphs_equal_eager"]), str(r["repeat_equal"]), f"{r['rel_err_vs_numpy']:.2e}",
                         f"{r['tolerance']:g}", _fmt(r["launches_per_pass"], 4), r["graph_fallback"] or "-"]
                        for r in paths]), ""]
    optimizers = smoke.get("optimizers")
    if optimizers:
        out += [f"## Optimisers: {optimizers[0]['intervals']} intervals under a cosine schedule, graphs / no graphs "
                "/ NumPy", "",
                _table(["path", "network", "optimiser", "batch", "dtype", "updates", "graphs == no graphs (bits)",
                        "two runs (bits)", "error vs NumPy", "tolerance", "graphs captured", "launches / update",
                        "ok"],
                       [[r["path_taken"], "-".join(map(str, r["sizes"])) + f", N={r['n']}", r["optimizer"],
                         str(r["batch_size"] or "full"), r["dtype"], str(r["updates"]), str(r["graphs_equal_eager"]),
                         str(r["repeat_equal"]), f"{r['rel_err_vs_numpy']:.2e}", f"{r['tolerance']:g}",
                         str(r["captures"]), _fmt(r["launches_per_pass"], 4), "yes" if r["ok"] else "**NO**"]
                        for r in optimizers]), ""]
    timings = smoke.get("timings")
    if timings:
        rows = []
        for name, entry in timings.items():
            for target, row in entry.items():
                if isinstance(row, dict):
                    rows.append([name, target, _fmt(row.get("us_per_pass"), 4), str(row.get("passes", "-")),
                                 _fmt(row.get("launches_per_pass"), 4)])
        out += ["## CUDA-event timings", "", _table(["case", "target", "us per pass", "passes", "launches / pass"],
                                                    rows), ""]
    plans = smoke.get("plans")
    if plans:
        out += ["## Plan neighbours (CUDA events; error against the default plan's parameters)", "",
                _table(["case", "dtype", "setting", "us per pass", "vs default", "error vs default"],
                       [[r["case"], r["dtype"], r["setting"] + (" (default)" if r["default"] else ""),
                         _fmt(r["us_per_pass"], 4), f"{_plan_default(plans, r)['us_per_pass'] / r['us_per_pass']:.2f}x",
                         f"{r['rel_err_vs_default']:.1e}"] for r in plans]), ""]
    return out


def _plan_default(plans: list[dict], row: dict) -> dict:
    return next(r for r in plans if r["default"] and (r["case"], r["dtype"]) == (row["case"], row["dtype"]))


def merge_bench(folder: Path) -> Path | None:
    """``bench-gpu.json`` and ``bench-cpu.json`` (two ``nnx bench`` runs) as one ``bench.json``:
    the first run's machine and commit, every benchmark of both, both commands."""
    runs = [doc for doc in (_load_json(folder, f"bench-{kind}.json") for kind in ("gpu", "cpu")) if doc]
    if not runs:
        return None
    merged = dict(runs[0])
    merged["benchmarks"] = [b for doc in runs for b in doc.get("benchmarks", [])]
    merged["nnx"] = dict(runs[0].get("nnx", {}), command=" ; ".join(d.get("nnx", {}).get("command", "?") for d in runs))
    path = folder / "bench.json"
    path.write_text(json.dumps(merged, indent=2, default=str))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the GPU check's output folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write RESULTS.md (default: print it)")
    parser.add_argument("--merge-bench", action="store_true",
                        help="first merge the folder's bench-gpu.json and bench-cpu.json into bench.json")
    parser.add_argument("--commit", default=None,
                        help="the commit whose files the check ran on, where the GPU machine's copy of the "
                             "repository carries an older .git (its own reading is shown beside it)")
    args = parser.parse_args(argv)
    if args.merge_bench:
        merge_bench(args.folder)
    text = render(args.folder, args.commit)
    if args.out is None:
        print(text, end="")
    else:
        from nnx.fileio import atomic_write

        with atomic_write(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
