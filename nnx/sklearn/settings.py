"""The estimators' constructor arguments, checked in ``fit`` (scikit-learn's rule: ``__init__`` only stores).

Every message names the parameter, what it got and what it takes, so a typo in a
grid of a ``GridSearchCV`` fails on its first fit with the fix in the message.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from ..backends import AUTO, BACKEND_NAMES
from ..initializers import INITIALIZERS
from ..network import HIDDEN_ACTIVATIONS
from ..validation import (check_choice, check_count, check_dtype, check_non_negative_finite, check_positive_finite,
                          check_seed)

# scikit-learn calls the sigmoid "logistic"; both spellings are accepted.
ACTIVATION_ALIASES = {"logistic": "sigmoid"}
ACTIVATIONS = HIDDEN_ACTIVATIONS + tuple(ACTIVATION_ALIASES)
BATCH_SIZE_WORDS = ("auto", "full")
AUTO_BATCH_SIZE = 200  # scikit-learn's "auto": min(200, n_samples)
# init="auto": He for ReLU (keeps its activations' variance), Glorot for the saturating ones.
AUTO_INIT = {"relu": "he"}
DEFAULT_INIT = "glorot"


@dataclass(frozen=True)
class Settings:
    """The validated constructor arguments of one fit, in nnx's terms."""

    hidden_layer_sizes: tuple[int, ...]
    activation: str
    init: str
    optimizer: str
    optimizer_params: Mapping
    learning_rate: float
    l2: float
    batch_size: int | str
    max_epochs: int
    log_every: int
    shuffle: bool
    early_stopping: bool
    validation_fraction: float
    n_iter_no_change: int
    tol: float | None
    backend: str
    dtype: str
    random_state: object
    verbose: int
    warm_start: bool

    def batch_for(self, n_samples: int) -> int:
        """Samples per update for a training set of ``n_samples`` (the whole set for "full")."""
        if self.batch_size == "full":
            return n_samples
        if self.batch_size == "auto":
            return min(AUTO_BATCH_SIZE, n_samples)
        return min(self.batch_size, n_samples)


def _hidden_layer_sizes(value) -> tuple[int, ...]:
    sizes = (value,) if isinstance(value, Integral) and not isinstance(value, bool) else value
    try:
        sizes = tuple(sizes)
    except TypeError:
        sizes = None
    if sizes is None or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError("hidden_layer_sizes must be a positive integer or a tuple of them, one per hidden layer "
                         f"(e.g. (100,) or (64, 32); () for no hidden layer); got {value!r}")
    return tuple(int(s) for s in sizes)


def _activation(value) -> str:
    name = check_choice(value, ACTIVATIONS, "activation")
    return ACTIVATION_ALIASES.get(name, name)


def _init(value, activation: str) -> str:
    if value == "auto":
        return AUTO_INIT.get(activation, DEFAULT_INIT)
    return check_choice(value, ("auto",) + INITIALIZERS, "init")


def _random_state(value):
    """None, an integer seed or a ``numpy.random.RandomState`` (scikit-learn's three kinds)."""
    if value is None or isinstance(value, np.random.RandomState):
        return value
    if isinstance(value, Integral) and not isinstance(value, bool):
        return check_seed(value, "random_state")
    raise ValueError("random_state must be None, an integer from 0 to 2**32 - 1 or a numpy.random.RandomState; "
                     f"got {value!r}")


def seed_for_fit(random_state) -> int:
    """The seed one fit starts from: the integer itself, else a draw from the generator
    (NumPy's global one for None, as scikit-learn does, so ``np.random.seed`` makes it repeatable)."""
    if isinstance(random_state, int):
        return random_state
    generator = np.random.mtrand._rand if random_state is None else random_state
    return int(generator.randint(0, 2**32 - 1, dtype=np.int64))


def _flag(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def _batch_size(value) -> int | str:
    if isinstance(value, str) and value in BATCH_SIZE_WORDS:
        return value
    if value is None:
        return "full"
    if isinstance(value, Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(f"batch_size must be a positive integer, 'auto' (min(200, n_samples)) or 'full' / None "
                     f"(every sample in each update: full-batch gradient descent); got {value!r}")


def _fraction(value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value < 1:
        raise ValueError(f"validation_fraction must be a number strictly between 0 and 1; got {value!r}")
    return float(value)


def _verbose(value) -> int:
    """``MLP.fit``'s levels: 0 silent, 1 a progress bar, 2 (or True) a line per epoch."""
    if isinstance(value, (bool, np.bool_)):
        return 2 if value else 0
    if isinstance(value, Integral) and value in (0, 1, 2):
        return int(value)
    raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar) or 2 / True (a line per epoch); got {value!r}")


def _tol(value) -> float | None:
    if value is None:
        return None
    return check_non_negative_finite(value, "tol")


def check_backend_name(value) -> str:
    """``"auto"`` or a backend's name (its availability is the backend registry's to judge)."""
    if not isinstance(value, str):
        raise ValueError(f"backend must be one of {(AUTO,) + BACKEND_NAMES}; got {value!r}")
    return check_choice(value.strip().lower(), (AUTO,) + BACKEND_NAMES, "backend")


def _optimizer_params(value) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ValueError("optimizer_params must be a dict of the optimiser's settings by name (e.g. "
                         f"{{'momentum': 0.9}}) or None; got {value!r}")
    if "lr" in value:
        raise ValueError("optimizer_params may not set 'lr': the learning rate is the learning_rate parameter")
    return dict(value)


def check_settings(estimator) -> Settings:
    """All constructor arguments of ``estimator`` checked at once, before any work."""
    from .fitting import check_optimizer
    activation = _activation(estimator.activation)
    settings = Settings(
        hidden_layer_sizes=_hidden_layer_sizes(estimator.hidden_layer_sizes),
        activation=activation,
        init=_init(estimator.init, activation),
        optimizer=estimator.optimizer,
        optimizer_params=_optimizer_params(estimator.optimizer_params),
        learning_rate=check_positive_finite(estimator.learning_rate, "learning_rate"),
        l2=check_non_negative_finite(estimator.l2, "l2"),
        batch_size=_batch_size(estimator.batch_size),
        max_epochs=check_count(estimator.max_epochs, "max_epochs", minimum=1),
        log_every=check_count(estimator.log_every, "log_every", minimum=1),
        shuffle=_flag(estimator.shuffle, "shuffle"),
        early_stopping=_flag(estimator.early_stopping, "early_stopping"),
        validation_fraction=_fraction(estimator.validation_fraction),
        n_iter_no_change=check_count(estimator.n_iter_no_change, "n_iter_no_change", minimum=1),
        tol=_tol(estimator.tol),
        backend=check_backend_name(estimator.backend),
        dtype=check_dtype(estimator.dtype),
        random_state=_random_state(estimator.random_state),
        verbose=_verbose(estimator.verbose),
        warm_start=_flag(estimator.warm_start, "warm_start"),
    )
    check_optimizer(settings)  # the optimiser's name and settings, against what MLP.fit takes
    return settings
