"""The training driver: runs a backend's loop one logging interval at a time.

Between intervals (never inside one) it records the loss and stops on a
non-finite loss with the exact pass named. Ctrl-C ends the fit at the next
logging point with everything so far kept; a second Ctrl-C ends it at once,
putting the parameters back to the last logging point (a half-done interval
may have updated some layers and not others). A backend whose interval is one
compiled call (Numba) cannot be interrupted inside it: the second Ctrl-C takes
effect when that call returns. Where the backend takes each point's loss from the
next update's forward pass (``Backend.records_losses``) and nothing reads the model
at each point, one call covers several points (``_log_points_in_one_call``).
"""
from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .backends.base import Backend, Data
from .batching import BatchStream
from .errors import NonFiniteLossError
from .network import Network, Objective, TrainState
from .optim import Optimizer, Schedule, learning_rates

# A logging interval runs in backend calls of at most this many updates (and, with minibatches,
# this many samples' indices), so its learning rates and batch order never take much memory.
MAX_CHUNK_UPDATES = 4096
MAX_CHUNK_SAMPLES = 1 << 22
# Where a backend takes logging points' losses from the passes themselves (``Backend.records_losses``),
# one call covers several points; calls grow while they last less than this, so Ctrl-C and the
# progress display stay as responsive as with a call per logging point. Such a call holds only
# its learning rates and a loss per point, so it may run up to MAX_RECORDING_UPDATES updates.
RECORDING_CALL_S = 0.05
MAX_RECORDING_UPDATES = 1 << 16


def ignores_ctrl_c() -> bool:
    """Whether this process ignores SIGINT, as one a script starts in the background (``cmd &``)
    does: nnx then leaves it so, where it would otherwise catch Ctrl-C to stop cleanly."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


class _InterruptFlag:
    """Ctrl-C handling for one fit (main thread only; other threads keep Python's).

    The first SIGINT sets ``raised``, checked at logging points; the second
    raises ``KeyboardInterrupt`` wherever the fit is, which the driver turns into
    "stop now"; later ones are ignored while the fit winds down (moments). A process
    that ignores SIGINT (one a script starts in the background) keeps ignoring it:
    the fit runs to its end.
    """

    def __init__(self) -> None:
        self.raised = False
        self._count = 0
        self._previous = None

    def __enter__(self) -> "_InterruptFlag":
        if threading.current_thread() is threading.main_thread() and not ignores_ctrl_c():
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


@dataclass
class FitRun:
    """What one fit trains with: the backend, the state it updates, the data, the objective,
    the optimiser and its schedule, and the minibatch stream (None: full batch)."""

    backend: Backend
    net: Network
    state: TrainState
    data: Data
    objective: Objective
    optimizer: Optimizer
    schedule: Schedule | None = None
    stream: BatchStream | None = None
    updates_per_epoch: int = 1

    def next_interval(self, count: int) -> tuple:
        """The learning rates and batches of the next ``count`` updates."""
        lrs = learning_rates(self.schedule, self.optimizer.lr, self.state.step, count, self.updates_per_epoch)
        return lrs, (self.stream.take(count) if self.stream is not None else None)

    def chunk_updates(self) -> int:
        """Updates per backend call: a logging interval runs in chunks of at most this many, so the
        per-update learning rates and batch indices stay small however long the interval (the
        numbers do not depend on where an interval is cut)."""
        if self.stream is None:
            return MAX_CHUNK_UPDATES
        return max(1, min(MAX_CHUNK_UPDATES, MAX_CHUNK_SAMPLES // self.stream.batch_size))

    def train(self, count: int, on_progress: Callable[[int], None] | None = None) -> float:
        """``count`` updates, then the loss over all samples: the backend's ``train`` for every
        chunk but the last, ``train_and_loss`` for the last."""
        left = count
        while True:
            lrs, batches = self.next_interval(min(left, self.chunk_updates()))
            left -= lrs.size
            if left == 0:
                return self.backend.train_and_loss(self.net, self.state, self.data, self.objective,
                                                   self.optimizer, lrs, batches)
            self.backend.train(self.net, self.state, self.data, self.objective, self.optimizer, lrs, batches)
            if on_progress is not None:
                on_progress(self.state.updates)

    def train_recording(self, count: int, every: int):
        """``count`` updates (at most ``MAX_RECORDING_UPDATES``, full batch) in one backend call, and the
        loss after every ``every`` of them and after the last (float64 array)."""
        lrs, _ = self.next_interval(count)
        return self.backend.train_recording(self.net, self.state, self.data, self.objective, self.optimizer,
                                            lrs, every)

    def snapshot(self) -> tuple:
        """Everything an interval changes, to put back (a second Ctrl-C, a divergence replay)."""
        copy = self.backend.copy_params
        stream = self.stream.snapshot() if self.stream is not None else None
        return (copy(self.state.params), {k: copy(v) for k, v in self.state.slots.items()}, self.state.step,
                self.state.updates, stream)

    def restore(self, snap: tuple) -> None:
        params, slots, self.state.step, self.state.updates, stream_state = snap
        self.state.params[:] = params
        for name, pairs in slots.items():
            self.state.slots[name][:] = pairs
        if stream_state is not None:
            self.stream.restore(stream_state)


# ``_log_points_in_one_call``: a logged loss was not finite; the state is back where the call
# began, and the next interval runs on its own, where the divergence is located and reported.
_ONE_INTERVAL = object()


def _log_points_in_one_call(run: FitRun, count: int, log_every: int, log: Callable[..., bool],
                            history: dict[int, float]):
    """``count`` updates in one recording call, then their logging points, in order, from the
    losses it recorded. Returns None when every point was logged; True for a Ctrl-C while
    logging (the rest of the call's points go to the history unlogged, the state stays at
    its last point); False when ``log`` ends the fit at a point (the state is then put back
    there, by replaying from the call's start: full-batch updates replay bit for bit);
    ``_ONE_INTERVAL`` when a point's loss is not finite."""
    state = run.state
    start = state.updates
    snap = run.snapshot()
    try:
        losses = run.train_recording(count, log_every)
    except KeyboardInterrupt:  # a second Ctrl-C: back to the last logging point, now
        run.restore(snap)
        return True
    points = list(range(log_every, count, log_every)) + [count]
    if not all(math.isfinite(loss) for loss in losses):
        run.restore(snap)
        return _ONE_INTERVAL
    for i, (p, loss) in enumerate(zip(points, losses.tolist())):
        try:
            stop = log(loss, start + p)
        except KeyboardInterrupt:  # keep the state at the call's last point, with its history
            history.update(zip((start + q for q in points[i:]), losses[i:].tolist()))
            return True
        if stop:
            if p < count:
                run.restore(snap)
                run.train(p)
            return False
    return None


def _locate_divergence(run: FitRun, snap: tuple, stop: int) -> int:
    """Replay an interval one update at a time from its snapshot to find the first bad update,
    leaving the state after the last good one. The learning rates and batches come out the
    same (closed-form schedule, restored batch stream). The replay reuses the fit's buffers
    (``state.scratch``): a second set would double a diverging fit's memory beyond what was
    checked before it started."""
    run.restore(snap)
    good = run.snapshot()
    while run.state.updates < stop:
        if not math.isfinite(run.train(1)):
            bad = run.state.updates
            run.restore(good)
            return bad
        good = run.snapshot()
    return stop


def _non_finite_start() -> NonFiniteLossError:
    return NonFiniteLossError(
        "the loss is non-finite before the first pass: the outputs overflow for these parameters and inputs. "
        "Scale the inputs down (standardise X), use smaller parameters, or use dtype='float64'. Nothing was "
        "trained.", 0)


def run_fit(run: FitRun, passes: int, log_every: int, history: dict[int, float],
            on_log: Callable[[int, float], bool | None] | None = None, record_start: bool = False,
            on_progress: Callable[[int], None] | None = None, log_reads_state: bool = True) -> bool:
    """Train ``run.state`` for ``passes`` updates, logging into ``history`` every ``log_every``.

    ``on_log(updates, loss)`` may return True to end the fit there (early stopping);
    ``on_progress(updates)`` is told of the chunks done inside long intervals.
    ``log_reads_state=False`` says ``on_log`` needs only its arguments (no callback,
    validation figures or best-point snapshot reads the model): where the backend records
    the loss before every update, one call then covers several logging points.
    Returns whether Ctrl-C ended the fit early; the state is then at a logging
    point (the one reached after the first Ctrl-C, or the last one before a
    second Ctrl-C)."""
    state = run.state

    def log(loss: float, updates: int | None = None) -> bool:
        updates = state.updates if updates is None else updates
        history[updates] = loss
        return bool(on_log(updates, loss)) if on_log is not None else False

    end = state.updates + passes
    recording = (not log_reads_state and run.stream is None and log_every < MAX_CHUNK_UPDATES
                 and run.backend.records_losses(run.net, run.optimizer))
    span = log_every  # updates per recording call: whole logging intervals, grown while calls are short
    with _InterruptFlag() as interrupt:
        try:
            if record_start:  # through the fit's own buffers (its batch size too): no second set for this loss
                loss = run.backend.train_and_loss(run.net, state, run.data, run.objective, run.optimizer,
                                                  *run.next_interval(0))
                if not math.isfinite(loss):
                    raise _non_finite_start()
                if log(loss):
                    return False
        except KeyboardInterrupt:
            return True
        while state.updates < end:
            if interrupt.raised:
                return True
            if recording:
                began = time.perf_counter()
                outcome = _log_points_in_one_call(run, min(span, end - state.updates), log_every, log, history)
                if on_progress is not None:
                    on_progress(state.updates)
                if outcome is None:
                    # as many times longer as keeps the next call within RECORDING_CALL_S at this one's rate
                    grow = int(RECORDING_CALL_S / max(time.perf_counter() - began, 1e-9))
                    if grow >= 2:
                        span = min(grow * span, MAX_RECORDING_UPDATES // log_every * log_every)
                    continue
                if outcome is not _ONE_INTERVAL:
                    return outcome
            snap = None
            try:
                snap = run.snapshot()
                loss = run.train(min(log_every, end - state.updates), on_progress)
                if not math.isfinite(loss):
                    bad = _locate_divergence(run, snap, state.updates)
                    lr = learning_rates(run.schedule, run.optimizer.lr, state.step, 1, run.updates_per_epoch)[0]
                    raise NonFiniteLossError(
                        f"the loss became non-finite at pass {bad} (lr={lr:g}); training stopped and the model "
                        f"keeps the parameters after pass {bad - 1}. Lower the learning rate or use "
                        "reduction='mean'.", bad)
            except KeyboardInterrupt:  # a second Ctrl-C: back to the last logging point, now
                if snap is not None:
                    run.restore(snap)
                return True
            try:
                if log(loss):
                    return False
            except KeyboardInterrupt:  # the logging point is reached; stop here
                return True
    return interrupt.raised
