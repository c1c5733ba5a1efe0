"""``nnx bench``: run chosen workloads on chosen backends, print the table, save the run.

The baseline (``tutorial-code``) and the NumPy backend run alongside the chosen
backends: every speed-up is quoted against them, measured in the same run.
``--no-references`` leaves them out (at full sizes they take most of a run's
time) when only the chosen backends' own figures are wanted.
"""
from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
import time
from pathlib import Path

from ..network import DTYPES
from . import report, results
from .machine import load_average, pin_threads, usable_cores
from .runner import TIMING, Job, Measurement, groups, measure_together, plan
from .targets import ALL_TARGETS, BASELINE, REFERENCE, applies, available
from .workloads import SIZE_SETS, WORKLOADS

# Backends whose absence is worth a line; the variants (products-only, launch) are references.
_ANNOUNCED = ("numba", "cupy", "torch", "jax")


def _choices(kind: str, valid: tuple[str, ...]):
    """An argparse type taking comma-separated names, with a did-you-mean on typos."""
    def parse(text: str) -> list[str]:
        names = [t.strip() for t in text.split(",") if t.strip()]
        if not names:
            raise argparse.ArgumentTypeError(f"empty {kind} list; choose from {', '.join(valid)}")
        for name in names:
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise argparse.ArgumentTypeError(f"unknown {kind} {name!r}.{hint} Choose from: {', '.join(valid)}")
        return names
    parse.__name__ = kind  # argparse names the type in its messages
    return parse


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``nnx bench`` options."""
    parser.description = parser.description or __doc__
    parser.epilog = ("examples:\n  nnx bench --quick\n  nnx bench -w tutorial,large-hidden -b numba -d float64\n"
                     "  nnx bench --plot bench.png\n"
                     "  pytest-benchmark compare --group-by=group OLD.json NEW.json")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--workload", "-w", action="append", type=_choices("workload", tuple(WORKLOADS)),
                        help=f"workloads to run, comma-separated or repeated (default: all): {', '.join(WORKLOADS)}")
    parser.add_argument("--backend", "-b", action="append", type=_choices("backend", ALL_TARGETS),
                        help="backends to time (default: every one available here); "
                             f"{BASELINE} and {REFERENCE} run as references unless --no-references. "
                             f"Choices: {', '.join(ALL_TARGETS)}")
    parser.add_argument("--no-references", action="store_true",
                        help=f"do not add {BASELINE} and {REFERENCE} to the chosen backends (the slow references: "
                             "speed-ups over them then read '-')")
    parser.add_argument("--dtype", "-d", action="append", type=_choices("dtype", DTYPES),
                        help="float32 and/or float64 (default: both)")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument("--quick", action="store_const", const="quick", dest="sizes",
                       help="the quick size set (a minute or two on a laptop)")
    sizes.add_argument("--sizes", choices=SIZE_SETS, default=None,
                       help="size set: tiny (smoke test), quick, or full (default)")
    parser.add_argument("--threads", type=_positive(int), default=None,
                        help=f"CPU threads for BLAS, Numba and PyTorch (default: the usable cores, {usable_cores()})")
    parser.add_argument("--min-time", type=_positive(float), default=None,
                        help="seconds each timed round lasts at least (default: 0.05 quick, 0.25 full)")
    parser.add_argument("--rounds", type=_positive(int), default=None,
                        help="timed rounds per measurement (default: 3 quick, 5 full)")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to save the run (default: .benchmarks/<machine>/NNNN_nnx-bench.json, "
                             "pytest-benchmark's storage, so `pytest-benchmark compare 0001 0002` works)")
    parser.add_argument("--no-save", action="store_true", help="print the table only")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="draw throughput against size per backend (needs matplotlib: nnx[plot])")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--report", type=Path, default=None, metavar="RUN.json",
                        help="print the table (and --plot) of a run saved by nnx bench, measuring nothing")
    parser.add_argument("--list", action="store_true", help="list the workloads and their sizes, then exit")


def _flatten(groups: list[list[str]] | None, default: tuple[str, ...]) -> list[str]:
    return list(dict.fromkeys(name for group in groups for name in group)) if groups else list(default)


def _list_workloads(size_set: str) -> str:
    lines = []
    for w in WORKLOADS.values():
        lines.append(f"{w.name}: {w.summary}")
        for case in w.cases(size_set):
            lines.append(f"    {case.id}{'  (GPU only)' if case.gpu_only else ''}  lr={case.lr:.3g}  "
                         f"{case.flops_per_pass() / 1e9:.3g} GFLOP/pass")
    return "\n".join(lines)


def _select(args: argparse.Namespace) -> tuple[list[Job], dict[str, str]]:
    """The jobs to run, and each wanted backend that cannot run mapped to why."""
    size_set = args.sizes or "full"
    workloads = [WORKLOADS[name] for name in _flatten(args.workload, tuple(WORKLOADS))]
    requested = _flatten(args.backend, ())
    dtypes = _flatten(args.dtype, DTYPES)
    status = available()
    references = [] if args.no_references else [BASELINE, REFERENCE]
    names = list(dict.fromkeys([*references, *(requested or ALL_TARGETS)]))
    if args.no_references and not requested:
        names = [name for name in names if name not in (BASELINE, REFERENCE)]
    jobs: list[Job] = []
    skipped: dict[str, str] = {}
    for name in names:
        relevant = [w for w in workloads if applies(name, w)]
        if not relevant:
            if name in requested:
                skipped[name] = "it applies to none of the chosen workloads"
        elif status[name] is not None:
            if name in requested or name in _ANNOUNCED:
                skipped[name] = status[name]
    for w in workloads:
        usable = [name for name in names if status[name] is None and applies(name, w)]
        jobs += plan(w.cases(size_set), usable, dtypes)
    return jobs, skipped


def run(args: argparse.Namespace) -> int:
    """Run the benchmark; 0 on success, 1 when a measurement failed, 2 on unusable options."""
    size_set = args.sizes or "full"
    if args.list:
        print(_list_workloads(size_set))
        return 0
    if args.report is not None:
        try:
            measurements = results.load(args.report)
        except (OSError, ValueError, KeyError) as exc:
            print(f"nnx bench: cannot read {args.report} as an nnx bench run: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 2
        return _show(measurements, args)
    min_time, rounds = TIMING[size_set]
    min_time = args.min_time if args.min_time is not None else min_time
    rounds = args.rounds if args.rounds is not None else rounds
    requested = _flatten(args.backend, ())
    jobs, skipped = _select(args)
    for name, reason in skipped.items():
        print(f"nnx bench: skipping {name}: {reason}", file=sys.stderr)
    if requested and not any(job.target in requested for job in jobs):
        print("nnx bench: none of the requested backends can run the chosen workloads here", file=sys.stderr)
        return 2

    threads = pin_threads(args.threads or usable_cores())
    todo = groups(jobs)
    load_start = load_average()
    print(f"nnx bench: {len(jobs)} measurements in {len(todo)} groups, size set {size_set!r}, "
          f"{threads['requested']} threads, rounds of >= {min_time:g} s x {rounds}, interleaved per group; "
          f"load average {load_start}", file=sys.stderr)
    measurements: list[Measurement] = []
    failures = 0
    width = len(str(len(todo)))
    for i, (case, dtype, names) in enumerate(todo, 1):
        print(f"[{i:>{width}}/{len(todo)}] {case.workload} {case.id} {dtype}: warming up", end="", file=sys.stderr,
              flush=True)
        start = time.perf_counter()
        failed: dict[str, BaseException] = {}
        done = measure_together(case, dtype, names, min_time=min_time, rounds=rounds, threads=threads["requested"],
                                failed=failed,
                                progress=lambda name: print(f" {name}", end="", file=sys.stderr, flush=True))
        for m in done:
            m.info["threads"] = threads
        measurements += done
        rates = ", ".join(f"{m.target} {report.si(m.passes_per_s)}" for m in done)
        print(f"; passes/s: {rates} ({time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)
        for name, exc in failed.items():
            failures += 1
            print(f"    {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    if not measurements:
        print("nnx bench: nothing was measured", file=sys.stderr)
        return 1
    print()
    if not args.no_save:
        options = {"timer": "perf_counter", "min_time": min_time, "min_rounds": rounds, "warmup": True,
                   "disable_gc": False, "size_set": size_set}
        command = shlex.join(["nnx", *sys.argv[1:]]) if os.path.basename(sys.argv[0]) in ("nnx", "__main__.py") \
            else shlex.join(sys.argv)
        document = results.to_json(measurements, threads=threads, options=options, command=command,
                                   load_average_start=load_start)
        path = results.save(document, args.json or results.default_path())
        print(f"saved {path}\ncompare with another run: pytest-benchmark compare <other run>.json {path}\n")
    status = _show(measurements, args)
    return status or (1 if failures else 0)


def _show(measurements: list[Measurement], args: argparse.Namespace) -> int:
    """Print the table, summary and crossovers; draw the plot when asked."""
    print(report.table(measurements, markdown=args.markdown))
    print()
    print(report.summary(measurements))
    for line in report.crossovers(measurements):
        print(line)
    if args.plot is not None:
        try:
            print(f"plot: {report.plot(measurements, args.plot)}")
        except RuntimeError as exc:
            print(f"nnx bench: {exc}", file=sys.stderr)
            return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m nnx.bench.command``) for use without the nnx CLI."""
    parser = argparse.ArgumentParser(prog="nnx bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
