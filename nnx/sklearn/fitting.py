"""The one place that turns an estimator's settings into ``MLP.fit`` calls.

Everything the estimators know about ``MLP.fit``'s keywords lives here: the
optimiser and its settings, the batch size, how many updates make an epoch,
the loss logged per epoch, and early stopping.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NonFiniteLossError
from ..model import MLP
from .settings import Settings

OPTIMIZERS = ("sgd",)
# Settings each optimiser takes besides the learning rate, with the values MLP.fit runs.
_SUPPORTED_PARAMS = {"sgd": {"momentum": 0.0, "weight_decay": 0.0}}


@dataclass(frozen=True)
class EpochRun:
    """What one training call did: the loss after each epoch, and whether Ctrl-C cut it short."""

    losses: list[float]
    interrupted: bool

    @property
    def epochs(self) -> int:
        return len(self.losses)


def check_optimizer(settings: Settings) -> None:
    """The optimiser name, its settings and the batch size, against what ``MLP.fit`` runs."""
    name = settings.optimizer
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(map(repr, OPTIMIZERS))}; got {name!r}")
    supported = _SUPPORTED_PARAMS[name]
    for key, value in settings.optimizer_params.items():
        if key not in supported:
            raise ValueError(f"optimizer_params: {name!r} takes {', '.join(map(repr, supported))} besides the "
                             f"learning rate; got {key!r}")
        if value != supported[key]:
            raise ValueError(f"optimizer_params: {key}={value!r} is not available yet; nnx's {name!r} runs "
                             f"{key}={supported[key]!r}")
    if settings.batch_size != "full":
        raise ValueError(f"batch_size={settings.batch_size!r}: nnx trains full batch for now; use "
                         "batch_size='full' (or None)")
    if settings.early_stopping:
        raise ValueError("early_stopping=True is not available yet; use early_stopping=False")


def train_epochs(model: MLP, X: np.ndarray, T: np.ndarray, settings: Settings, epochs: int) -> EpochRun:
    """Train ``model`` in place for ``epochs`` epochs; the loss over the training set after each."""
    start = model.updates
    try:
        model.fit(X, T, passes=epochs, lr=settings.learning_rate, l2=settings.l2, reduction="mean", log_every=1,
                  verbose=settings.verbose > 0)
    except NonFiniteLossError as exc:
        if exc.pass_number == 0:  # non-finite before any update: nnx's own message says why
            raise
        epoch = exc.pass_number - start
        raise NonFiniteLossError(
            f"the training loss became non-finite (NaN or infinity) in epoch {epoch}: training diverged. Lower "
            f"learning_rate (now {settings.learning_rate:g}) or scale the inputs (e.g. StandardScaler in a "
            "Pipeline). The estimator was left as it was before this call.", exc.pass_number) from exc
    losses = [loss for updates, loss in model.history.items() if updates > start]
    return EpochRun(losses, model.interrupted)
