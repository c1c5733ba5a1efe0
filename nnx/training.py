"""The training driver: runs a backend's loop one logging interval at a time.

Between intervals (never inside one) it records the loss and stops on a
non-finite loss with the exact pass named. Ctrl-C ends the fit at the next
logging point with everything so far kept; a second Ctrl-C ends it at once,
putting the parameters back to the last logging point (a half-done interval
may have updated some layers and not others). A backend whose interval is one
compiled call (Numba) cannot be interrupted inside it: the second Ctrl-C takes
effect when that call returns.
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
    """Ctrl-C handling for one fit (main thread only; other threads keep Python's).

    The first SIGINT sets ``raised``, checked at logging points; the second
    raises ``KeyboardInterrupt`` wherever the fit is, which the driver turns into
    "stop now"; later ones are ignored while the fit winds down (moments).
    """

    def __init__(self) -> None:
        self.raised = False
        self._count = 0
        self._previous = None

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self._count += 1
        if self._count == 1:
            self.raised = True
        elif self._count == 2:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _locate_divergence(backend: Backend, net: Network, snapshot, data: Data, objective: Objective,
                       optimizer: GradientDescent, start: int, stop: int, scratch: dict) -> tuple[int, list]:
    """Replay an interval one pass at a time from its snapshot to find the first bad pass.

    The replay reuses the fit's buffers (``scratch``): a second set would double a
    diverging fit's memory beyond what was checked before it started."""
    state = TrainState(backend.copy_params(snapshot), updates=start, scratch=scratch)
    last_finite = backend.copy_params(snapshot)
    while state.updates < stop:
        if not math.isfinite(backend.train_and_loss(net, state, data, objective, optimizer, 1)):
            return state.updates, last_finite
        last_finite = backend.copy_params(state.params)
    return stop, last_finite


def _non_finite_start() -> NonFiniteLossError:
    return NonFiniteLossError(
        "the loss is non-finite before the first pass: the outputs overflow for these parameters and inputs. "
        "Scale the inputs down (standardise X), use smaller parameters, or use dtype='float64'. Nothing was "
        "trained.", 0)


def run_fit(backend: Backend, net: Network, state: TrainState, data: Data, objective: Objective,
            optimizer: GradientDescent, passes: int, log_every: int, history: dict[int, float],
            on_log: Callable[[int, float], None] | None = None, record_start: bool = False) -> bool:
    """Train ``state`` for ``passes`` passes, logging into ``history`` every ``log_every``.

    Returns whether Ctrl-C ended the fit early; ``state`` is then at a logging
    point (the one reached after the first Ctrl-C, or the last one before a
    second Ctrl-C)."""

    def log(loss: float) -> None:
        history[state.updates] = loss
        if on_log is not None:
            on_log(state.updates, loss)

    end = state.updates + passes
    with _InterruptFlag() as interrupt:
        try:
            if record_start:  # through the fit's own buffers: no second set just for this loss
                loss = backend.train_and_loss(net, state, data, objective, optimizer, 0)
                if not math.isfinite(loss):
                    raise _non_finite_start()
                log(loss)
        except KeyboardInterrupt:
            return True
        while state.updates < end:
            if interrupt.raised:
                return True
            start = state.updates
            snapshot = None
            try:
                snapshot = backend.copy_params(state.params)
                loss = backend.train_and_loss(net, state, data, objective, optimizer, min(log_every, end - start))
                if not math.isfinite(loss):
                    bad_pass, last_finite = _locate_divergence(
                        backend, net, snapshot, data, objective, optimizer, start, state.updates, state.scratch)
                    state.params[:] = last_finite
                    state.updates = bad_pass - 1
                    raise NonFiniteLossError(
                        f"the loss became non-finite at pass {bad_pass} (lr={optimizer.lr:g}); training stopped "
                        f"and the model keeps the parameters after pass {bad_pass - 1}. Lower the learning rate "
                        "or use reduction='mean'.", bad_pass)
            except KeyboardInterrupt:  # a second Ctrl-C: back to the last logging point, now
                if snapshot is not None:
                    state.params[:] = snapshot
                state.updates = start
                return True
            try:
                log(loss)
            except KeyboardInterrupt:  # the logging point is reached; stop here
                return True
    return interrupt.raised
