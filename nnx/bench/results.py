"""Saving runs as pytest-benchmark JSON, so ``pytest-benchmark compare`` reads them.

Names match the pytest suite in ``benchmarks/`` (``test_<workload>[<backend>-<dtype>-<case>]``),
so an ``nnx bench`` run and a ``pytest benchmarks/`` run compare entry by entry.
Each entry's statistics are per pass (``iterations`` = passes per round), as in
the pytest suite, so runs calibrated to different pass counts still compare.
"""
from __future__ import annotations

import datetime
import json
import statistics
from pathlib import Path

from .. import __version__ as nnx_version
from .machine import commit_info, machine_id, machine_info
from .runner import Measurement
from .workloads import Case

SUITE_FILE = "benchmarks/test_bench_workloads.py"
# The pytest-benchmark JSON layout these files follow (stable since 3.1, checked against 5.x).
FORMAT_VERSION = "5.1.0"


def test_name(workload: str) -> str:
    return "test_" + workload.replace("-", "_")


def param_id(target: str, dtype: str, case_id: str) -> str:
    return f"{target}-{dtype}-{case_id}"


def _stats(data: list[float], iterations: int) -> dict:
    """The fields of pytest-benchmark's ``Stats`` (quartiles by the inclusive method)."""
    data = list(data)
    ordered = sorted(data)
    rounds = len(data)
    if rounds == 1:
        q1 = q3 = ordered[0]
    else:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    iqr = q3 - q1
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if rounds > 1 else 0.0
    total = sum(data)
    return {
        "min": ordered[0], "max": ordered[-1], "mean": mean, "stddev": stddev, "rounds": rounds,
        "median": statistics.median(data), "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": sum(1 for x in data if x < q1 - 1.5 * iqr or x > q3 + 1.5 * iqr),
        "stddev_outliers": sum(1 for x in data if abs(x - mean) > stddev) if rounds > 1 else 0,
        "outliers": "", "ld15iqr": ordered[0], "hd15iqr": ordered[-1],
        "ops": rounds / total if total else 0.0, "total": total, "data": data, "iterations": iterations,
    }


def benchmark_entry(m: Measurement, options: dict) -> dict:
    name = f"{test_name(m.case.workload)}[{param_id(m.target, m.dtype, m.case.id)}]"
    stats = _stats(m.pass_s, m.passes)
    stats["outliers"] = f"{stats['stddev_outliers']};{stats['iqr_outliers']}"
    return {
        "group": f"{m.case.workload} {m.case.id} {m.dtype}",
        "name": name,
        "fullname": f"{SUITE_FILE}::{name}",
        "params": {"backend": m.target, "dtype": m.dtype, "case": m.case.id},
        "param": param_id(m.target, m.dtype, m.case.id),
        "extra_info": m.extra_info(),
        "options": options,
        "stats": stats,
    }


def to_json(measurements: list[Measurement], *, threads: dict, options: dict, command: str,
            load_average_start: list[float] | None = None) -> dict:
    """The whole run; ``machine_info.nnx.load_average`` is taken at the end, the start's is kept
    beside the command, so a reader can tell whether other work shared the machine."""
    return {
        "machine_info": machine_info(threads),
        "commit_info": commit_info(),
        "benchmarks": [benchmark_entry(m, options) for m in measurements],
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": FORMAT_VERSION,
        "nnx": {"version": nnx_version, "command": command, "load_average_start": load_average_start},
    }


def load(path: Path) -> list[Measurement]:
    """The measurements of a run saved by ``nnx bench`` (``--report`` re-renders them)."""
    document = json.loads(Path(path).read_text())
    out = []
    for bench in document["benchmarks"]:
        info = bench["extra_info"]
        case = Case(info["workload"], info["sizes"]["N"], tuple(info["layer_sizes"]), info["lr"],
                    hidden=info["hidden"], output=info["output"], init=info.get("init", "normal_fan_in"),
                    l2=info["l2"], reduction=info["reduction"], data=info["data"])
        passes = info["passes_per_round"]
        known = {k: v for k, v in info.items() if k in ("device", "launches_per_pass", "threads")}
        out.append(Measurement(case, info["backend"], info["dtype"], passes,
                               [t * passes for t in bench["stats"]["data"]], info["warmup_s"], info["compile_s"],
                               info["finite"], known))
    return out


def default_path(root: Path = Path(".benchmarks"), label: str = "nnx-bench") -> Path:
    """Next ``.benchmarks/<machine>/NNNN_<label>.json``: pytest-benchmark's own storage layout,
    so ``pytest-benchmark compare 0001 0002`` finds runs by number."""
    folder = root / machine_id()
    numbers = [int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json")] if folder.is_dir() else []
    return folder / f"{max(numbers, default=0) + 1:04d}_{label}.json"


def save(document: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=4, default=str))
    return path
