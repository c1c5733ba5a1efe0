"""The one place that turns an estimator's settings into ``MLP.fit`` calls.

Everything the estimators know about ``MLP.fit``'s keywords lives here: the
optimiser and its settings, the batch size, how many updates make an epoch,
how often the loss is logged (every ``log_every`` epochs: each logging point is
where a compiled loop returns to Python, unless the backend logs several per
call), the stopping rules and the held-out validation set of early stopping.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..batching import updates_per_epoch
from ..early_stopping import EarlyStopping
from ..errors import NonFiniteLossError
from ..model import MLP
from ..optim import OPTIMIZERS, Optimizer
from .settings import Settings


@dataclass(frozen=True)
class EpochRun:
    """What one training call did, logging point by logging point."""

    epochs: int                          # epochs run
    losses: list[float]                  # training loss at each logging point (over the whole training set)
    validation_losses: list[float]       # the held-out loss at each logging point (early stopping only)
    stopped: bool                        # a stopping rule ended the fit before its last epoch
    interrupted: bool                    # Ctrl-C ended it


def make_optimizer(settings: Settings) -> Optimizer:
    """``nnx.optim``'s optimiser named by ``optimizer``, at ``learning_rate``, with ``optimizer_params``."""
    name = settings.optimizer
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}; got {name!r}")
    cls = OPTIMIZERS[name]
    takes = [f.name for f in dataclasses.fields(cls) if f.name != "lr"]
    unknown = sorted(set(settings.optimizer_params) - set(takes))
    if unknown:
        raise ValueError(f"optimizer_params: {name!r} takes {', '.join(map(repr, takes))} besides the learning "
                         f"rate; got {', '.join(map(repr, unknown))}")
    try:
        return cls(lr=settings.learning_rate, **settings.optimizer_params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"optimizer_params for {name!r}: {exc}") from exc


def check_optimizer(settings: Settings) -> None:
    """Raise now, before any work, if the optimiser cannot be built from these settings."""
    make_optimizer(settings)


def batch_size_for(settings: Settings, n_samples: int) -> int | None:
    """``MLP.fit``'s batch_size: None (full batch, nnx's compiled path) when a batch holds every sample."""
    size = settings.batch_for(n_samples)
    return None if size >= n_samples else size


def stopping_rule(settings: Settings) -> EarlyStopping | None:
    """Early stopping on the held-out loss (keeping the best logging point's network), else
    scikit-learn's convergence rule on the training loss (keeping the last), unless ``tol`` is None.

    Rules are checked at logging points, so ``n_iter_no_change`` epochs are that many
    ``log_every``-epoch intervals, rounded up."""
    patience = -(-settings.n_iter_no_change // settings.log_every)
    if settings.early_stopping:
        return EarlyStopping("val_loss", patience=patience, min_delta=settings.tol or 0.0, restore_best=True)
    if settings.tol is None:
        return None
    return EarlyStopping("loss", patience=patience, min_delta=settings.tol, restore_best=False)


def train_epochs(model: MLP, X: np.ndarray, T: np.ndarray, settings: Settings, epochs: int, *,
                 validation: tuple[np.ndarray, np.ndarray] | None = None, stop: bool = True) -> EpochRun:
    """Train ``model`` in place for up to ``epochs`` epochs (fewer when ``stop`` and a rule fires)."""
    batch_size = batch_size_for(settings, X.shape[0])
    per_epoch = updates_per_epoch(X.shape[0], batch_size)
    rule = stopping_rule(settings) if stop else None
    if rule is None or rule.monitor != "val_loss":
        validation = None
    start = model.updates
    try:
        model.fit(X, T, epochs=epochs, optimizer=make_optimizer(settings), batch_size=batch_size,
                  shuffle=settings.shuffle, validation_data=validation, early_stopping=rule,
                  verbose=settings.verbose, l2=settings.l2, reduction="mean",
                  log_every=per_epoch * settings.log_every)
    except NonFiniteLossError as exc:
        if exc.pass_number == 0:  # non-finite before any update: nnx's own message says why
            raise
        epoch = -(-(exc.pass_number - start) // per_epoch)
        raise NonFiniteLossError(
            f"the training loss became non-finite (NaN or infinity) in epoch {epoch}: training diverged. Lower "
            f"learning_rate (now {settings.learning_rate:g}) or scale the inputs (e.g. StandardScaler in a "
            "Pipeline). The estimator was left as it was before this call.", exc.pass_number) from exc
    losses = [loss for updates, loss in model.history.items() if updates > start]
    held_out = [loss for updates, loss in model.validation_history["loss"].items() if updates > start]
    return EpochRun((model.updates - start) // per_epoch, losses, held_out if validation is not None else [],
                    model.stopped_early, model.interrupted)
