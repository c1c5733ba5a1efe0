"""The training driver: runs a backend's loop one logging interval at a time.

Between intervals (never inside one) it records the loss, stops on a
non-finite loss with the exact pass named, and lets Ctrl-C end the fit at the
next logging point with everything so far kept.
"""
from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable

from .backends.base import Backend, Data
from .errors import NonFiniteLossError
from .network import GradientDescent, Network, Objective, TrainState


class _InterruptFlag:
    """Turns SIGINT into a flag checked at logging points (main thread only)."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _locate_divergence(backend: Backend, net: Network, snapshot, data: Data, objective: Objective,
                       optimizer: GradientDescent, start: int, stop: int) -> tuple[int, list]:
    """Replay an interval one pass at a time from its snapshot to find the first bad pass."""
    state = TrainState(backend.copy_params(snapshot), updates=start)
    last_finite = backend.copy_params(snapshot)
    while state.updates < stop:
        if not math.isfinite(backend.train_and_loss(net, state, data, objective, optimizer, 1)):
            return state.updates, last_finite
        last_finite = backend.copy_params(state.params)
    return stop, last_finite


def run_fit(backend: Backend, net: Network, state: TrainState, data: Data, objective: Objective,
            optimizer: GradientDescent, passes: int, log_every: int, history: dict[int, float],
            on_log: Callable[[int, float], None] | None = None, record_start: bool = False) -> bool:
    """Train ``state`` for ``passes`` passes, logging into ``history`` every ``log_every``.

    Returns whether Ctrl-C ended the fit early (at a logging point)."""

    def log(loss: float) -> None:
        history[state.updates] = loss
        if on_log is not None:
            on_log(state.updates, loss)

    if record_start:
        log(backend.objective_value(net, state.params, data, objective))
    end = state.updates + passes
    with _InterruptFlag() as interrupt:
        while state.updates < end:
            start = state.updates
            snapshot = backend.copy_params(state.params)
            loss = backend.train_and_loss(net, state, data, objective, optimizer, min(log_every, end - start))
            if not math.isfinite(loss):
                bad_pass, last_finite = _locate_divergence(
                    backend, net, snapshot, data, objective, optimizer, start, state.updates)
                state.params[:] = last_finite
                state.updates = bad_pass - 1
                raise NonFiniteLossError(
                    f"the loss became non-finite at pass {bad_pass} (lr={optimizer.lr:g}); training stopped "
                    f"and the model keeps the parameters after pass {bad_pass - 1}. Lower the learning rate "
                    "or use reduction='mean'.", bad_pass)
            log(loss)
            if interrupt.raised:
                return True
    return False
