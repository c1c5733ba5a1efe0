"""``nnx.EarlyStopping``: end a fit when the monitored loss stops improving.

Checked at logging points (every ``log_every`` updates), the only places a fit
returns to Python, so early stopping never adds work inside an interval.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

MONITORS = ("val_loss", "loss")


@dataclass(frozen=True)
class EarlyStopping:
    """Stop after ``patience`` logging points without an improvement of more than ``min_delta``
    in ``monitor`` ("val_loss" needs ``validation_data``); with ``restore_best`` the model
    ends with the parameters of the best logging point."""

    monitor: str = "val_loss"
    patience: int = 5
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self):
        if self.monitor not in MONITORS:
            raise ValueError(f"EarlyStopping monitor must be 'val_loss' or 'loss'; got {self.monitor!r}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 1:
            raise ValueError(f"EarlyStopping patience must be a positive integer (logging points); "
                             f"got {self.patience!r}")
        if isinstance(self.min_delta, bool) or not isinstance(self.min_delta, (int, float)) \
                or not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"EarlyStopping min_delta must be a finite number >= 0; got {self.min_delta!r}")
        if not isinstance(self.restore_best, bool):
            raise TypeError(f"EarlyStopping restore_best must be True or False; got {self.restore_best!r}")


class EarlyStoppingTracker:
    """One fit's progress against an ``EarlyStopping`` rule."""

    def __init__(self, rule: EarlyStopping):
        self.rule = rule
        self.best = math.inf
        self.best_updates: int | None = None
        self.best_params = None
        self.waited = 0

    def should_stop(self, value: float, updates: int, params_copy) -> bool:
        """Record the value at a logging point; ``params_copy()`` is called only on an improvement."""
        if value < self.best - self.rule.min_delta:
            self.best, self.best_updates, self.waited = value, updates, 0
            if self.rule.restore_best:
                self.best_params = params_copy()
            return False
        self.waited += 1
        return self.waited >= self.rule.patience
