"""Reading a run: the speed-up table, the crossover points and the throughput plot."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from .runner import Measurement
from .targets import ALL_TARGETS, BASELINE, REFERENCE


def si(x: float) -> str:
    """3 significant figures with a k/M/G suffix: 1234567 -> '1.23M'."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, "")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


def _ratio(m: Measurement, ref: Measurement | None) -> str:
    return "-" if ref is None else f"{m.passes_per_s / ref.passes_per_s:.2f}x"


def _index(measurements: list[Measurement]) -> dict[tuple, Measurement]:
    return {(m.case, m.dtype, m.target): m for m in measurements}


def speedup(measurements: list[Measurement], m: Measurement, over: str) -> float | None:
    """passes/s of ``m`` over the ``over`` target's on the same case and dtype, if measured."""
    ref = _index(measurements).get((m.case, m.dtype, over))
    return None if ref is None else m.passes_per_s / ref.passes_per_s


def _format(rows: list[list[str]], header: list[str], right: set[int], markdown: bool = False) -> str:
    if markdown:
        align = ["---:" if i in right else "---" for i in range(len(header))]
        return "\n".join("| " + " | ".join(r) + " |" for r in [header, align, *rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def table(measurements: list[Measurement], *, markdown: bool = False) -> str:
    """One row per case, dtype and backend: rates, and speed-ups over tutorial-code and numpy."""
    index = _index(measurements)
    header = ["workload", "case", "dtype", "backend", "passes/s", "samples/s", "rate", "vs tutorial-code",
              "vs numpy", "warm-up s"]
    rows = []
    for m in measurements:
        rate = f"{m.gflops:.3g} GFLOP/s" if m.case.bound(m.itemsize) == "compute" else f"{m.gbps:.3g} GB/s"
        warm = f"{m.warmup_s:.2f}" + (f" ({m.compile_s:.2f} compile)" if m.compile_s else "")
        rows.append([m.case.workload, m.case.id, m.dtype, m.target + ("" if m.finite else " (NON-FINITE)"),
                     si(m.passes_per_s), si(m.samples_per_s), rate,
                     _ratio(m, index.get((m.case, m.dtype, BASELINE))),
                     _ratio(m, index.get((m.case, m.dtype, REFERENCE))), warm])
    return _format(rows, header, right={4, 5, 6, 7, 8, 9}, markdown=markdown)


def summary(measurements: list[Measurement]) -> str:
    """Backend x workload: geometric-mean speed-up over tutorial-code across each workload's cases."""
    workloads = list(dict.fromkeys(m.case.workload for m in measurements))
    cells: dict[tuple, list[float]] = defaultdict(list)
    for m in measurements:
        s = speedup(measurements, m, BASELINE)
        if s is not None:
            cells[(m.target, m.dtype, m.case.workload)].append(s)
    order = {name: i for i, name in enumerate(ALL_TARGETS)}
    keys = sorted(dict.fromkeys((m.target, m.dtype) for m in measurements),
                  key=lambda k: (k[1], order.get(k[0], len(order)), k[0]))
    rows = []
    for target, dtype in keys:
        row = [target, dtype]
        for w in workloads:
            values = cells.get((target, dtype, w))
            row.append(f"{math.exp(sum(map(math.log, values)) / len(values)):.2f}x" if values else "-")
        rows.append(row)
    header = ["backend", "dtype", *workloads]
    return ("speed-up over tutorial-code (geometric mean over each workload's sizes)\n"
            + _format(rows, header, right=set(range(2, len(header)))))


def crossovers(measurements: list[Measurement]) -> list[str]:
    """For each pair of targets: the first size from which one stays faster than the other."""
    lines = []
    series: dict[tuple, list[Measurement]] = defaultdict(list)
    for m in measurements:
        series[(m.case.workload, m.dtype, m.target)].append(m)
    groups = defaultdict(dict)
    for (workload, dtype, target), ms in series.items():
        if len(ms) > 1:
            groups[(workload, dtype)][target] = {m.case: m.passes_per_s for m in ms}
    for (workload, dtype), by_target in groups.items():
        names = [t for t in by_target if "/" not in t]  # variants are references, not contenders
        for a in names:
            for b in names:
                if a == b:
                    continue
                common = sorted(set(by_target[a]) & set(by_target[b]),
                                key=lambda c: (c.n_samples * c.n_hidden, c.flops_per_pass()))
                faster = [by_target[a][c] > by_target[b][c] for c in common]
                if len(common) < 2 or faster[0] or not faster[-1]:
                    continue
                first = max(i for i, f in enumerate(faster) if not f) + 1
                lines.append(f"{workload} {dtype}: {a} overtakes {b} from {common[first].id} "
                             f"(N x H = {common[first].n_samples * common[first].n_hidden:,})")
    return lines


def plot(measurements: list[Measurement], path: Path) -> Path:
    """Throughput (hidden activations computed per second, N x H x passes/s) against N x H,
    one colour per backend (solid float64, dashed float32), one panel per workload with
    more than one size."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("--plot needs matplotlib: pip install 'nnx[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, dict[tuple, list[Measurement]]] = defaultdict(lambda: defaultdict(list))
    for m in measurements:
        series[m.case.workload][(m.target, m.dtype)].append(m)
    panels = [w for w, lines in series.items() if any(len(ms) > 1 for ms in lines.values())] or list(series)
    colours = {name: f"C{i % 10}" for i, name in enumerate(ALL_TARGETS)}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, workload in zip(axes[0], panels):
        for (target, dtype), ms in sorted(series[workload].items()):
            ms = sorted(ms, key=lambda m: m.case.n_samples * m.case.n_hidden)
            size = [m.case.n_samples * m.case.n_hidden for m in ms]
            ax.plot(size, [n * m.passes_per_s for n, m in zip(size, ms)], marker="o",
                    color=colours.get(target, "k"), linestyle="-" if dtype == "float64" else "--",
                    label=f"{target} {dtype}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(workload)
        ax.set_xlabel("N x H")
        ax.set_ylabel("hidden activations / s (N x H x passes/s)")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
