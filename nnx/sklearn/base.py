"""What the classifier and the regressor share: parameters, the fit transaction, the backend scope.

A fit either completes or leaves the estimator exactly as it was: it trains a
fresh ``nnx.MLP`` (or a copy of the fitted one, to continue) and only then
stores it with the attributes that describe it. The fitted network is
``model_``, an ``nnx.MLP`` whose parameters are NumPy arrays, so a pickled
estimator loads and predicts on any machine, whichever backend trained it.
"""
from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted, validate_data

from ..backends import AUTO, available_backends, use_backend
from ..model import MLP
from .fitting import stopping_rule, train_epochs
from .settings import Settings, check_backend_name, check_settings, seed_for_fit

# Backends already reported as unavailable at prediction time (said once per process).
_FALLBACK_REPORTED: set[str] = set()


def backend_scope(name: str) -> contextlib.AbstractContextManager:
    """``"auto"`` follows nnx's own choice (``use_backend`` scope, ``set_backend``, ``NNX_BACKEND``,
    the fastest available); a name is used exactly, and an unavailable one is an error."""
    return contextlib.nullcontext() if name == AUTO else use_backend(name)


def prediction_scope(name: str) -> contextlib.AbstractContextManager:
    """Like ``backend_scope``, but a backend missing here (a model trained on a GPU, loaded on a
    laptop) falls back to nnx's own choice and says so once: predictions do not need the GPU."""
    if name == AUTO:
        return contextlib.nullcontext()
    reason = available_backends().get(name)
    if reason is None:
        return use_backend(name)
    if name not in _FALLBACK_REPORTED:
        _FALLBACK_REPORTED.add(name)
        warnings.warn(f"backend {name!r} is unavailable here ({reason}); predicting with nnx's own choice "
                      "instead (set_params(backend='auto') silences this)", UserWarning, stacklevel=4)
    return contextlib.nullcontext()


@contextlib.contextmanager
def unchanged_on_error(estimator) -> Iterator[None]:
    """Restore every attribute of ``estimator`` when the block raises (a fit is all or nothing)."""
    before = dict(vars(estimator))
    try:
        yield
    except BaseException:
        vars(estimator).clear()
        vars(estimator).update(before)
        raise


class NNXEstimator(BaseEstimator):
    """Shared by ``MLPClassifier`` and ``MLPRegressor``; subclasses say how targets map to outputs."""

    #: Whether ``y`` must be numeric (the regressor's values) rather than labels of any type.
    _y_numeric = False

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, optimizer="adam", optimizer_params=None,
                 learning_rate=0.001, l2=0.0, batch_size="auto", max_epochs=200, log_every=1, shuffle=True,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=10, tol=1e-4, init="auto",
                 backend="auto", dtype="float64", random_state=None, verbose=0, warm_start=False):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.learning_rate = learning_rate
        self.l2 = l2
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.log_every = log_every
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.init = init
        self.backend = backend
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ------------------------------------------------------------------ subclass hooks
    def _prepare_targets(self, y, *, first: bool, classes=None):
        """(targets for ``MLP.fit``, output head, n_outputs), setting the label attributes."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y):
        """Train from scratch (or, with ``warm_start=True``, from the fitted network) for ``max_epochs`` epochs."""
        with unchanged_on_error(self):
            settings = check_settings(self)
            with backend_scope(settings.backend):
                continuing = settings.warm_start and hasattr(self, "model_")
                X, y = self._validate_fit_data(X, y, first=not continuing)
                targets, head, n_outputs = self._prepare_targets(y, first=not continuing)
                model = self._model_to_train(settings, X.shape[1], head, n_outputs, continuing)
                validation = None
                if settings.early_stopping:
                    X, targets, validation = self._hold_out(X, targets, settings, model.seed)
                run = train_epochs(model, X, targets, settings, settings.max_epochs, validation=validation)
                self._store(model, run, continuing)
        if stopping_rule(settings) is not None and not (run.stopped or run.interrupted):
            rule = "the held-out loss" if settings.early_stopping else "the training loss"
            warnings.warn(f"{type(self).__name__} ran all max_epochs={settings.max_epochs} epochs and {rule} was "
                          f"still improving by more than tol={settings.tol or 0:g}: raise max_epochs, or set "
                          "tol=None to run max_epochs without this check", ConvergenceWarning, stacklevel=2)
        return self

    def _stratify_by(self, targets, fraction: float):
        """Labels to keep in proportion when holding out a validation set (None: a plain split)."""
        return None

    def _hold_out(self, X, targets, settings: Settings, seed):
        """(X_train, T_train, (X_val, T_val)): ``validation_fraction`` of the samples held out for
        early stopping, drawn from a stream of the fit's seed (the same split on every backend)."""
        if X.shape[0] < 2:
            raise ValueError(f"early_stopping=True holds out validation_fraction of the samples, which needs at "
                             f"least 2 samples; got {X.shape[0]}")
        split_seed = int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
        X_train, X_val, T_train, T_val = train_test_split(
            X, targets, test_size=settings.validation_fraction, random_state=split_seed,
            stratify=self._stratify_by(targets, settings.validation_fraction))
        return X_train, T_train, (X_val, T_val)

    def _partial_fit(self, X, y, classes=None):
        """One epoch over ``X, y`` from the fitted network (a fresh one on the first call)."""
        with unchanged_on_error(self):
            settings = check_settings(self)
            with backend_scope(settings.backend):
                first = not hasattr(self, "model_")
                X, y = self._validate_fit_data(X, y, first=first)
                targets, head, n_outputs = self._prepare_targets(y, first=first, classes=classes)
                model = self._model_to_train(settings, X.shape[1], head, n_outputs, not first)
                run = train_epochs(model, X, targets, settings, 1, stop=False)
                self._store(model, run, not first)
        return self

    def _validate_fit_data(self, X, y, *, first: bool):
        return validate_data(self, X, y, reset=first, dtype=(np.float64, np.float32), multi_output=True,
                             y_numeric=self._y_numeric)

    def _model_to_train(self, settings: Settings, n_features: int, head: str, n_outputs: int,
                        continuing: bool) -> MLP:
        layer_sizes = (n_features, *settings.hidden_layer_sizes, n_outputs)
        if continuing:
            fitted = self.model_
            wanted = (layer_sizes, settings.activation, head, settings.dtype)
            have = (fitted.layer_sizes, fitted.hidden, fitted.output, fitted.dtype)
            if wanted != have:
                raise ValueError(
                    "cannot continue training: the fitted network (layer sizes, activation, head, dtype) is "
                    f"{have}, but these parameters and data need {wanted}. Set warm_start=False (or fit instead "
                    "of partial_fit) to start a new network.")
            return copy.deepcopy(fitted)
        return MLP(layer_sizes, hidden=settings.activation, output=head, init=settings.init,
                   seed=seed_for_fit(settings.random_state), dtype=settings.dtype)

    def _store(self, model: MLP, run, continuing: bool) -> None:
        self.model_ = model
        self.loss_curve_ = (self.loss_curve_ if continuing else []) + run.losses
        self.n_iter_ = (self.n_iter_ if continuing else 0) + run.epochs
        self.best_loss_ = min(self.loss_curve_) if self.loss_curve_ else None
        if run.validation_losses:
            earlier = getattr(self, "validation_loss_curve_", []) if continuing else []
            self.validation_loss_curve_ = earlier + run.validation_losses
            self.best_validation_loss_ = min(self.validation_loss_curve_)
        elif not continuing:
            vars(self).pop("validation_loss_curve_", None)
            vars(self).pop("best_validation_loss_", None)
        if run.interrupted:
            warnings.warn(f"training was interrupted (Ctrl-C) after {run.epochs} epoch(s) of this call; the "
                          "estimator keeps the network reached so far", UserWarning, stacklevel=3)

    # ------------------------------------------------------------------ inference
    def _outputs(self, X) -> np.ndarray:
        """The network's outputs for ``X`` (probabilities or values), as a NumPy array."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        with prediction_scope(check_backend_name(self.backend)):
            return self.model_.predict_proba(X)

    # ------------------------------------------------------------------ scikit-learn's names for the parameters
    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weight matrices, layer by layer: ``coefs_[i]`` has shape (fan_in, fan_out)."""
        return [W for W, _ in self.model_.params]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Bias vectors, layer by layer."""
        return [b for _, b in self.model_.params]

    @property
    def n_layers_(self) -> int:
        """Layers including input and output (scikit-learn's count)."""
        return len(self.model_.layer_sizes)

    @property
    def n_outputs_(self) -> int:
        return self.model_.layer_sizes[-1]
