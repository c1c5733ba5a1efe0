"""Learning-rate schedules as closed forms lr(t): PyTorch's ``lr_scheduler`` formulas.

``t`` counts updates made with the optimiser's state (0 for the first), or
whole epochs with ``per="epoch"``. A schedule is a pure function of ``t``, so
compiled backends never see it: the training driver hands them one learning
rate per update (``learning_rates``), and a resumed fit lands on the same values.

Adding a schedule: a dataclass with ``factor(t)`` (the multiplier of the
optimiser's lr, or ``value`` for an absolute lr like cosine's eta_min) and an
entry in ``SCHEDULES``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

PER = ("update", "epoch")


def _check_per(per: str) -> str:
    if per not in PER:
        raise ValueError(f"a schedule's per must be 'update' or 'epoch'; got {per!r}")
    return per


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _finite(value, name: str, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v) or (low is not None and v < low):
        raise ValueError(f"{name} must be a finite number{'' if low is None else f' >= {low:g}'}; got {value!r}")
    return v


class Schedule:
    """Base: ``lr(base_lr, t)`` for one t; ``per`` says what t counts."""

    name: ClassVar[str]
    per: str

    def lr(self, base_lr: float, t: int) -> float:
        raise NotImplementedError

    def position(self, step: int, updates_per_epoch: int) -> int:
        """t for the update made after ``step`` updates of this optimiser state."""
        return step if self.per == "update" else step // updates_per_epoch


@dataclass(frozen=True)
class Constant(Schedule):
    """The optimiser's lr throughout (PyTorch's ConstantLR with factor 1, or no scheduler)."""

    name: ClassVar[str] = "constant"
    per: str = "update"

    def __post_init__(self):
        _check_per(self.per)

    def lr(self, base_lr, t):
        return base_lr


@dataclass(frozen=True)
class Step(Schedule):
    """lr * gamma ** (t // step_size): ``StepLR``."""

    name: ClassVar[str] = "step"
    step_size: int = 1
    gamma: float = 0.1
    per: str = "update"

    def __post_init__(self):
        _positive_int(self.step_size, "Step step_size")
        _finite(self.gamma, "Step gamma", 0.0)
        _check_per(self.per)

    def lr(self, base_lr, t):
        return base_lr * self.gamma ** (t // self.step_size)


@dataclass(frozen=True)
class Exponential(Schedule):
    """lr * gamma ** t: ``ExponentialLR``."""

    name: ClassVar[str] = "exponential"
    gamma: float = 0.99
    per: str = "update"

    def __post_init__(self):
        _finite(self.gamma, "Exponential gamma", 0.0)
        _check_per(self.per)

    def lr(self, base_lr, t):
        return base_lr * self.gamma ** t


@dataclass(frozen=True)
class Cosine(Schedule):
    """eta_min + (lr - eta_min) (1 + cos(pi t / T_max)) / 2: ``CosineAnnealingLR``'s closed form
    (periodic beyond T_max, as PyTorch's closed form is)."""

    name: ClassVar[str] = "cosine"
    T_max: int = 1
    eta_min: float = 0.0
    per: str = "update"

    def __post_init__(self):
        _positive_int(self.T_max, "Cosine T_max")
        _finite(self.eta_min, "Cosine eta_min", 0.0)
        _check_per(self.per)

    def lr(self, base_lr, t):
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """lr * (start_factor + (end_factor - start_factor) * min(t, total_iters) / total_iters): ``LinearLR``."""

    name: ClassVar[str] = "warmup"
    start_factor: float = 1 / 3
    end_factor: float = 1.0
    total_iters: int = 5
    per: str = "update"

    def __post_init__(self):
        start = _finite(self.start_factor, "LinearWarmup start_factor")
        end = _finite(self.end_factor, "LinearWarmup end_factor")
        if not (0 < start <= 1 and 0 <= end <= 1):
            raise ValueError("LinearWarmup needs 0 < start_factor <= 1 and 0 <= end_factor <= 1 (as PyTorch); "
                             f"got {self.start_factor!r}, {self.end_factor!r}")
        if isinstance(self.total_iters, bool) or not isinstance(self.total_iters, (int, np.integer)) \
                or self.total_iters < 0:
            raise ValueError(f"LinearWarmup total_iters must be an integer >= 0; got {self.total_iters!r}")
        _check_per(self.per)

    def lr(self, base_lr, t):
        if self.total_iters == 0:
            return base_lr * self.end_factor
        done = min(t, self.total_iters)
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done / self.total_iters)


@dataclass(frozen=True)
class Sequential(Schedule):
    """Schedules switched at milestones: ``SequentialLR``. Schedule i runs from milestone i-1 with
    its own t restarted at 0. All parts count in this schedule's ``per`` (they must agree)."""

    name: ClassVar[str] = "sequential"
    schedules: tuple = field(default=())
    milestones: tuple = field(default=())
    per: str = "update"

    def __post_init__(self):
        schedules, milestones = tuple(self.schedules), tuple(self.milestones)
        if not schedules or not all(isinstance(s, Schedule) for s in schedules):
            raise ValueError("Sequential needs a non-empty list of schedules")
        if len(milestones) != len(schedules) - 1:
            raise ValueError(f"Sequential needs {len(schedules) - 1} milestones for {len(schedules)} schedules; "
                             f"got {len(milestones)}")
        ms = [_positive_int(m, "Sequential milestone") for m in milestones]
        if any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"Sequential milestones must increase strictly; got {list(milestones)}")
        _check_per(self.per)
        for s in schedules:
            if s.per != self.per:
                raise ValueError(f"Sequential's parts must all count per {self.per!r}; {s!r} counts per {s.per!r}")
        object.__setattr__(self, "schedules", schedules)
        object.__setattr__(self, "milestones", tuple(ms))

    def lr(self, base_lr, t):
        i = 0
        while i < len(self.milestones) and t >= self.milestones[i]:
            i += 1
        start = self.milestones[i - 1] if i else 0
        return self.schedules[i].lr(base_lr, t - start)


SCHEDULES: dict[str, type[Schedule]] = {cls.name: cls for cls in (Constant, Step, Exponential, Cosine,
                                                                  LinearWarmup, Sequential)}


def learning_rates(schedule: Schedule | None, base_lr: float, step: int, count: int,
                   updates_per_epoch: int) -> np.ndarray:
    """float64 lr of each of ``count`` updates made after ``step`` updates of the optimiser state."""
    if schedule is None or isinstance(schedule, Constant):
        return np.full(count, base_lr, dtype=np.float64)
    if schedule.per == "epoch":
        epochs = (step + np.arange(count)) // updates_per_epoch
        values = {int(e): schedule.lr(base_lr, int(e)) for e in np.unique(epochs)}
        return np.array([values[int(e)] for e in epochs], dtype=np.float64)
    return np.array([schedule.lr(base_lr, step + u) for u in range(count)], dtype=np.float64)
