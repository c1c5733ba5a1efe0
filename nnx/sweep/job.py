"""One sweep job: build the network its configuration describes, fit it, measure it.

``run_job`` is a module-level function of its arguments only (the configuration
and the data whose hash the configuration carries), so executors can ship it to
spawned processes and Dask workers by reference, and a retried or repeated job
computes the same result.
"""
from __future__ import annotations

import contextlib
import os
import platform
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from .. import __version__
from ..backends import use_backend
from ..batching import updates_per_epoch
from ..errors import NonFiniteLossError, PerformanceWarning
from ..model import MLP
from ..network import Network
from ..validation import check_network
from . import trainers
from .config import JobConfig
from .data import Dataset, test_count

OK, DIVERGED, FAILED = "ok", "diverged", "failed"
# Outcomes that a rerun reuses: the same configuration would give them again.
FINISHED = (OK, DIVERGED)
# Fields that describe the run rather than its result (they differ between reruns). ``notes``: the
# slower paths the fit took (``PerformanceWarning``s, which a worker says once per process).
RUN_FIELDS = ("seconds", "compile_seconds", "passes_per_s", "attempts", "host", "notes")
RESULT_FIELDS = ("status", "message", "train_accuracy", "test_accuracy", "loss", "test_loss",
                 "passes_done", "backend_used")


def _record(config: JobConfig, **outcome) -> dict:
    record = {"key": config.key, **config.as_dict()}
    record.update({name: None for name in RESULT_FIELDS + RUN_FIELDS})
    record.update(attempts=1, host=platform.node(), nnx_version=__version__)
    record.update(outcome)
    return record


def failed_record(config: JobConfig, message: str, attempts: int = 1) -> dict:
    """The record of a job that produced no result (its worker died, or it raised)."""
    return _record(config, status=FAILED, message=message, attempts=attempts)


OUTPUT, INIT = "softmax", "normal_fan_in"  # tutorial 003's head and initial draw


def build_model(config: JobConfig, data: Dataset) -> MLP:
    """The network a configuration describes, at its initial parameters."""
    return MLP(config.layer_sizes(data.n_features, data.n_classes), hidden=config.activation,
               output=OUTPUT, init=INIT, seed=config.seed, dtype=config.dtype)


def network(config: JobConfig, data: Dataset) -> Network:
    """The plain description of that network (no parameters drawn), for the memory check."""
    return check_network(config.layer_sizes(data.n_features, data.n_classes), config.activation, OUTPUT, INIT,
                         config.dtype)


def training_samples(config: JobConfig, data: Dataset) -> int:
    return data.n_samples - (0 if config.test_size is None else test_count(config.test_size, data.n_samples))


def optimizer_slots(config: JobConfig) -> int:
    """State arrays per parameter the job's optimiser keeps (momentum, moments), for the memory check."""
    return len(trainers.job_optimizer(config.optimizer, config.lr).slots())


def total_updates(config: JobConfig, n_train: int) -> int:
    """Updates the fit makes: its passes, or its epochs of ``ceil(N / batch_size)`` updates each."""
    return config.passes if config.epochs is None else config.epochs * updates_per_epoch(n_train, config.batch_size)


def fit_arguments(config: JobConfig, n_train: int) -> dict:
    """``MLP.fit``'s arguments for a configuration trained on ``n_train`` samples: silent, with the
    loss logged once, at the end."""
    return dict(passes=config.passes, epochs=config.epochs, batch_size=config.batch_size,
                optimizer=trainers.job_optimizer(config.optimizer, config.lr),
                schedule=trainers.job_schedule(config.schedule), l2=config.l2, reduction=config.reduction,
                log_every=total_updates(config, n_train), verbose=0)


@contextlib.contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    """One process of this user on this machine at a time (no lock where ``fcntl`` is missing)."""
    try:
        import fcntl
        handle = open(Path(tempfile.gettempdir()) / f"nnx-{name}-{os.getuid()}.lock", "a")
    except (ImportError, OSError, AttributeError):
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _notes() -> Iterator[list[str]]:
    """Collect the ``PerformanceWarning``s raised in the block (the worker's stderr is no place for
    them: the sweep reports them once); other warnings go on as usual."""
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PerformanceWarning)  # recorded, whatever the filters outside say
        yield notes
    for warning in caught:
        if issubclass(warning.category, PerformanceWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _warm_up(backend, net: Network, n_samples: int) -> float:
    """Load the backend's compiled kernels for ``net`` (seconds spent; near 0 once loaded).

    Workers that start together take turns, so on a cold cache one compiles and
    the others then load its result from the disk cache instead of compiling too.
    """
    warm_up = getattr(backend, "warm_up", None)
    if warm_up is None:
        return 0.0
    start = time.perf_counter()
    with _machine_lock("compile"):
        warm_up(net, n_samples)
    return time.perf_counter() - start


def run_job(config: JobConfig, data: Dataset, keep_model: bool = False) -> dict:
    """Fit one configuration; returns ``{"record": dict, "model": MLP or None}``.

    Training stops on a non-finite loss: the record says ``diverged`` with the
    message naming the pass. Any other error is a ``failed`` record carrying it,
    so one bad configuration never stops a sweep.
    """
    if data.sha256 != config.data_sha256:
        raise ValueError(f"job {config.key[:12]} was given data with hash {data.sha256[:12]}, "
                         f"not its own {config.data_sha256[:12]}")
    try:
        record, model = _fit(config, data)
    except Exception as exc:  # noqa: BLE001 - recorded, the sweep goes on
        return {"record": failed_record(config, f"{type(exc).__name__}: {exc}"), "model": None}
    return {"record": record, "model": model if keep_model else None}


def _fit(config: JobConfig, data: Dataset) -> tuple[dict, MLP]:
    X, y, X_test, y_test = data.split(config.test_size, config.data_seed)
    model = build_model(config, data)
    with use_backend(config.backend) as backend:
        compile_seconds = _warm_up(backend, model.net, X.shape[0])
        status, message = OK, None
        start = time.perf_counter()
        with _notes() as notes:
            try:
                model.fit(X, y, **fit_arguments(config, X.shape[0]))
            except NonFiniteLossError as exc:
                status, message = DIVERGED, str(exc)
        seconds = time.perf_counter() - start
        if model.interrupted:  # SIGINT reached the worker: no result, a rerun runs it again
            return failed_record(config, f"interrupted by SIGINT after pass {model.updates}"), None
        metrics = {}
        if status == OK:
            metrics = dict(train_accuracy=model.accuracy(X, y), loss=model.history[model.updates])
            if X_test is not None:
                metrics.update(test_accuracy=model.accuracy(X_test, y_test), test_loss=model.loss(X_test, y_test))
    record = _record(config, status=status, message=message, passes_done=model.updates, backend_used=backend.name,
                     seconds=seconds, compile_seconds=compile_seconds, notes=notes or None,
                     passes_per_s=model.updates / seconds if seconds > 0 else None, **metrics)
    return record, model
