"""Timing: warm-up excluded, passes calibrated, rounds repeated, rates derived.

A measurement is ``rounds`` timed calls of ``target.run(passes)``, each from the
initial parameters (reset outside the timed part); the targets of one case take
their rounds in turn, so passing load on the machine slows all of them alike. ``passes`` is chosen so one
round lasts at least ``min_time`` seconds, which makes per-pass rates reliable
even for the 2-3-2 tutorial network, whose pass takes microseconds.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .targets import make_target, runs_case
from .workloads import Case

# Per size set: (seconds per round at least, rounds). tiny only proves the code runs.
TIMING = {"tiny": (0.0, 1), "quick": (0.05, 3), "full": (0.25, 5)}
MAX_PASSES = 1_000_000
# Calibration starts from at most this many passes and grows at most 100x a step,
# so one misleading first pass cannot commit a round to minutes.
FIRST_GUESS_MAX = 10_000


@dataclass
class Measurement:
    """One case on one target in one dtype, with everything needed to quote it."""

    case: Case
    target: str
    dtype: str
    passes: int  # per round
    round_s: list[float]
    warmup_s: float
    compile_s: float | None
    finite: bool
    info: dict = field(default_factory=dict)

    @property
    def pass_s(self) -> list[float]:
        return [t / self.passes for t in self.round_s]

    @property
    def passes_per_s(self) -> float:
        """Median-based, so one disturbed round does not move the figure."""
        return 1.0 / statistics.median(self.pass_s)

    @property
    def samples_per_s(self) -> float:
        return self.case.n_samples * self.passes_per_s

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "float32" else 8

    @property
    def gflops(self) -> float:
        return self.case.flops_per_pass() * self.passes_per_s / 1e9

    @property
    def gbps(self) -> float:
        return self.case.bytes_per_pass(self.itemsize) * self.passes_per_s / 1e9

    def extra_info(self) -> dict:
        """The facts every saved benchmark carries (pytest-benchmark's ``extra_info``)."""
        case = self.case
        return {
            "workload": case.workload, "case": case.id, "backend": self.target, "dtype": self.dtype,
            "sizes": case.sizes(), "layer_sizes": list(case.layer_sizes),
            "hidden": case.hidden, "output": case.output, "init": case.init, "lr": case.lr, "l2": case.l2,
            "reduction": case.reduction, "data": case.data,
            "passes_per_round": self.passes, "rounds": len(self.round_s),
            "passes_per_s": self.passes_per_s, "samples_per_s": self.samples_per_s,
            "flops_per_pass": case.flops_per_pass(), "bytes_per_pass": case.bytes_per_pass(self.itemsize),
            "gflops": self.gflops, "gbps": self.gbps, "bound": case.bound(self.itemsize),
            "warmup_s": self.warmup_s, "compile_s": self.compile_s, "finite": self.finite,
            **self.info,
        }


def calibrate(run: Callable[[int], None], reset: Callable[[], None], min_time: float,
              first_pass_s: float) -> int:
    """Passes per round so that a round lasts at least ``min_time`` (untimed for the result)."""
    if min_time <= 0:
        return 1
    passes = max(1, min(FIRST_GUESS_MAX, math.ceil(min_time / max(first_pass_s, 1e-9))))
    for _ in range(8):
        reset()
        start = time.perf_counter()
        run(passes)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or passes >= MAX_PASSES:
            return passes
        grow = min(100.0, 1.2 * min_time / max(elapsed, 1e-9))
        passes = min(MAX_PASSES, max(passes + 1, math.ceil(passes * grow)))
    return passes


def passes_per_round(case: Case, run: Callable[[int], None], reset: Callable[[], None], min_time: float,
                     first_pass_s: float) -> int:
    """A minibatch workload's fixed epochs per round (its figure is quoted for that run
    length), else the calibrated count (``calibrate``)."""
    if case.epochs is not None:
        return case.epochs
    return calibrate(run, reset, min_time, first_pass_s)


def time_rounds(run: Callable[[int], None], reset: Callable[[], None], passes: int, rounds: int) -> list[float]:
    """Round times in seconds; ``reset`` runs between rounds, outside the clock."""
    times = []
    for _ in range(rounds):
        reset()
        start = time.perf_counter()
        run(passes)
        times.append(time.perf_counter() - start)
    return times


def measure_together(case: Case, dtype: str, names: Iterable[str], *, min_time: float, rounds: int,
                     threads: int | None = None, failed: dict[str, BaseException] | None = None,
                     progress: Callable[[str], None] | None = None) -> list[Measurement]:
    """Measure several targets on one case and dtype, their timed rounds interleaved.

    Every target warms up and is calibrated first (untimed); then round r of every
    target runs before round r+1 of any, so a burst of other load on the machine
    hits all of them alike and the speed-ups between them stay trustworthy. With
    ``failed`` given, a target that raises is recorded there and the others go on.
    """
    entries = []
    for name in names:
        try:
            target = make_target(name, case, dtype, threads)
            start = time.perf_counter()
            warm = target.warm_up()
            passes = passes_per_round(case, target.run, target.reset, min_time, warm["first_pass_s"])
            entries.append((name, target, warm, passes, time.perf_counter() - start, []))
        except Exception as exc:  # noqa: BLE001 - reported through ``failed``
            if failed is None:
                raise
            failed[name] = exc
        if progress is not None:
            progress(name)
    for _ in range(rounds):
        for entry in list(entries):
            name, target, _, passes, _, times = entry
            try:
                times += time_rounds(target.run, target.reset, passes, 1)
            except Exception as exc:  # noqa: BLE001 - reported through ``failed``
                if failed is None:
                    raise
                failed[name] = exc
                entries.remove(entry)
    return [Measurement(case, name, dtype, passes, times, warmup_s, warm["compile_s"], target.finite(), target.info())
            for name, target, warm, passes, warmup_s, times in entries]


def measure(case: Case, target_name: str, dtype: str, *, min_time: float, rounds: int,
            threads: int | None = None) -> Measurement:
    """One target alone: warm up and calibrate (excluded), then time ``rounds`` rounds."""
    return measure_together(case, dtype, [target_name], min_time=min_time, rounds=rounds, threads=threads)[0]


@dataclass(frozen=True)
class Job:
    case: Case
    target: str
    dtype: str


def plan(cases: Iterable[Case], targets: Iterable[str], dtypes: Iterable[str]) -> list[Job]:
    """Every (case, target, dtype) to run, in workload order; GPU-only sizes on GPU targets only,
    a case with its own dtypes in those only."""
    targets, dtypes = list(targets), list(dtypes)
    return [Job(case, name, dtype) for case in cases for dtype in dtypes for name in targets
            if runs_case(name, case) and (case.dtypes is None or dtype in case.dtypes)]


def groups(jobs: list[Job]) -> list[tuple[Case, str, list[str]]]:
    """Jobs gathered per (case, dtype), in order: what ``measure_together`` takes."""
    out: dict[tuple[Case, str], list[str]] = {}
    for job in jobs:
        out.setdefault((job.case, job.dtype), []).append(job.target)
    return [(case, dtype, names) for (case, dtype), names in out.items()]
