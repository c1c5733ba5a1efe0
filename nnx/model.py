"""``nnx.MLP``: the tutorials' multilayer perceptron, on whichever backend is active.

The model is a plain description (``Network``) plus NumPy parameters; each call
hands both to the active backend, so the same object trains on NumPy, Numba or
CuPy and can switch between them.
"""
from __future__ import annotations

import warnings
from os import PathLike
from pathlib import Path

import numpy as np

from .backends import get_backend
from .backends.base import Backend
from .batching import updates_per_epoch
from .early_stopping import EarlyStopping, EarlyStoppingTracker
from .errors import PerformanceWarning
from .initializers import initial_params
from .memory import check_fit, check_loss, check_predict
from .network import Network, Objective, TrainState
from .optim import Optimizer, Schedule
from .progress import Progress, check_verbose
from .training import FitRun, run_fit
from .training_state import OptimizerState
from .validation import (check_fit_settings, check_fits_dtype, check_inputs, check_network, check_seed,
                         check_targets, check_training_options, real_array)


class MLP:
    """A fully connected network trained by gradient descent (full batch or minibatches, any
    optimiser of ``nnx.optim``).

    ``layer_sizes`` includes the input and output widths: ``MLP([2, 3, 2])`` is
    the two-moons network of the from-scratch tutorial, starting exactly where
    it starts with ``seed=0``.
    """

    def __init__(self, layer_sizes, hidden: str = "tanh", output: str = "softmax",
                 init: str = "normal_fan_in", seed: int | None = 0, dtype: str = "float64"):
        net = check_network(layer_sizes, hidden, output, init, dtype)
        seed = check_seed(seed)
        self._setup(net, init, seed, initial_params(net.layer_sizes, init, seed), updates=0, history={})

    def _setup(self, net: Network, init: str, seed: int | None, params, updates: int,
               history: dict[int, float]) -> None:
        self.net: Network = net
        self.init = init
        self.seed = seed
        self._params = [(W.astype(net.np_dtype), b.astype(net.np_dtype)) for W, b in params]
        self.updates = updates
        self.history: dict[int, float] = history
        # validation loss and accuracy at the logging points of fits given validation_data
        self.validation_history: dict[str, dict[int, float]] = {"loss": {}, "accuracy": {}}
        self.interrupted = False
        self.stopped_early = False
        self.backend_name: str | None = None
        # What a later fit continues: the optimiser's state and the minibatch order.
        self.training = OptimizerState.fresh(seed)

    @classmethod
    def _restore(cls, net: Network, init: str, seed: int | None, params, updates: int,
                 history: dict[int, float], training: OptimizerState | None = None,
                 validation_history: dict[str, dict[int, float]] | None = None) -> "MLP":
        """A model from validated saved parts (``nnx.load``), without drawing initial parameters."""
        model = cls.__new__(cls)
        model._setup(net, init, seed, params, updates, history)
        if training is not None:
            model.training = training
        if validation_history is not None:
            model.validation_history = validation_history
        return model

    # ------------------------------------------------------------ description
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self.net.layer_sizes

    @property
    def hidden(self) -> str:
        return self.net.hidden

    @property
    def output(self) -> str:
        return self.net.output

    @property
    def dtype(self) -> str:
        return self.net.dtype

    def __repr__(self) -> str:
        return (f"MLP({list(self.layer_sizes)}, hidden={self.hidden!r}, output={self.output!r}, "
                f"dtype={self.dtype!r}, updates={self.updates})")

    # ------------------------------------------------------------- parameters
    @property
    def params(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Copies of the (W, b) pairs: W (fan_in, fan_out), b (fan_out,)."""
        return [(W.copy(), b.copy()) for W, b in self._params]

    def set_params(self, params) -> None:
        """Replace the parameters; biases may be (fan_out,) or the tutorials' (1, fan_out)."""
        params = list(params)
        shapes = self.net.layer_shapes()
        if len(params) != len(shapes):
            raise ValueError(f"expected {len(shapes)} (W, b) pairs for layer_sizes {list(self.layer_sizes)}; "
                             f"got {len(params)}")
        new = []
        dtype = self.net.np_dtype
        for layer, ((W, b), (fan_in, fan_out)) in enumerate(zip(params, shapes)):
            W = real_array(W, f"layer {layer} W")
            b = real_array(b, f"layer {layer} b")
            if b.shape == (1, fan_out):
                b = b.reshape(fan_out)
            if W.shape != (fan_in, fan_out) or b.shape != (fan_out,):
                raise ValueError(f"layer {layer}: expected W {(fan_in, fan_out)} and b {(fan_out,)}; "
                                 f"got W {W.shape} and b {b.shape}")
            if not (np.isfinite(W).all() and np.isfinite(b).all()):
                raise ValueError(f"layer {layer}: parameters contain NaN or infinity")
            check_fits_dtype(W, f"layer {layer} W", dtype)
            check_fits_dtype(b, f"layer {layer} b", dtype)
            new.append((W.astype(dtype), b.astype(dtype)))
        self._params = new

    # ---------------------------------------------------------------- training
    def fit(self, X, y, passes: int | None = None, *, epochs: int | None = None, lr: float | None = None,
            optimizer: Optimizer | None = None, schedule: Schedule | None = None, batch_size: int | None = None,
            shuffle: bool = True, validation_data=None, early_stopping: EarlyStopping | None = None,
            verbose: int | bool = 1, l2: float = 0.0, reduction: str = "mean", log_every: int = 1000,
            callback=None) -> "MLP":
        """Train from the current parameters and optimiser state (a second fit continues).

        ``passes`` counts updates, ``epochs`` whole passes over the data (``ceil(N /
        batch_size)`` updates each); the default is 1000 updates. ``optimizer=None`` is
        plain gradient descent at ``lr`` (default 0.01), the tutorials' loop; an
        optimiser brings its own lr. ``batch_size=None`` trains on all samples at once;
        with a batch size, each epoch visits the samples in an order drawn from the
        model's own generator (seeded by ``MLP(seed=...)``), so every backend sees the
        same batches. ``l2`` adds ``l2 * W`` to the weights' gradients (the tutorial's
        L2, with any optimiser); an optimiser's ``weight_decay`` follows PyTorch.

        ``history`` gains the tutorial-003 loss figure every ``log_every`` updates
        (and ``validation_history`` the loss and accuracy on ``validation_data``);
        ``callback(updates, loss)`` is called at the same points, with the model
        holding that point's parameters. ``early_stopping`` ends the fit at a
        logging point (``stopped_early``). ``verbose``: 0 silent, 1 a progress bar
        on a terminal, 2 a line per logging point. A non-finite loss raises
        ``NonFiniteLossError`` naming the update. Ctrl-C stops at the next logging
        point; a second Ctrl-C stops at once, back at the last logging point.
        Either way ``interrupted`` is then True (it describes the last fit only).
        """
        X = check_inputs(X, self.net)
        T = check_targets(y, self.net, X.shape[0])
        options = check_training_options(X.shape[0], passes, epochs, lr, optimizer, schedule, batch_size, shuffle,
                                         early_stopping, validation_data is not None)
        settings = check_fit_settings(0, options.optimizer.lr, l2, reduction, log_every)
        verbose = check_verbose(verbose)
        validation = None
        if validation_data is not None:
            validation = self._validation_arrays(validation_data)
        optimizer = options.optimizer
        objective = Objective(settings.reduction, settings.l2)
        backend = get_backend()
        n = X.shape[0]
        per_epoch = updates_per_epoch(n, options.batch_size)
        total = options.epochs * per_epoch if options.epochs is not None else options.passes

        check_fit(backend, self.net, n, batch_size=options.batch_size, n_slots=len(optimizer.slots()))
        if validation is not None:
            check_loss(backend, self.net, validation[0].shape[0], "validation loss")
        # Nothing above changed the model; from here on the fit's own state is built.
        notice = self.training.adopt(optimizer, self._params)
        if notice:
            warnings.warn(notice, UserWarning, stacklevel=2)
        if not backend.compiles(optimizer):
            _warn_slow_once(backend, optimizer)
        data = backend.prepare_data(self.net, X, T)
        vdata = None if validation is None else backend.prepare_data(self.net, *validation)
        state = TrainState(backend.prepare_params(self.net, self._params), updates=self.updates,
                           step=self.training.step,
                           slots={name: backend.prepare_params(self.net, pairs)
                                  for name, pairs in self.training.slots.items()})
        stream = None
        if options.batch_size is not None:
            stream = self.training.batch_stream(n, options.batch_size, options.shuffle)
        run = FitRun(backend, self.net, state, data, objective, optimizer, options.schedule, stream, per_epoch)
        tracker = EarlyStoppingTracker(early_stopping) if early_stopping is not None else None
        progress = Progress(verbose, self.updates, total)

        def sync() -> None:
            self._params = backend.params_to_numpy(state.params)
            self.updates = state.updates

        def on_log(updates: int, loss: float) -> bool:
            extra = {}
            if vdata is not None:
                extra = self._validation_figures(backend, state.params, vdata, validation[1])
                for key, value in extra.items():
                    self.validation_history[key.removeprefix("val_")][updates] = value
            progress.log(updates, loss, extra)
            if callback is not None:
                sync()
                callback(updates, loss)
            if tracker is None:
                return False
            value = extra["val_loss"] if early_stopping.monitor == "val_loss" else loss
            return tracker.should_stop(value, updates, lambda: backend.copy_params(state.params))

        self.interrupted = self.stopped_early = False
        try:
            # on_log reads the model only for a callback, validation figures or a best-point snapshot
            reads_state = callback is not None or vdata is not None or (tracker is not None
                                                                        and early_stopping.restore_best)
            self.interrupted = run_fit(run, total, settings.log_every, self.history, on_log=on_log,
                                       record_start=not self.history, on_progress=progress.advance,
                                       log_reads_state=reads_state)
            self.stopped_early = tracker is not None and tracker.waited >= early_stopping.patience
        finally:
            # Whatever happened, keep what the backend reached (finite by construction).
            progress.close()
            sync()
            self.training.keep(state.step, {name: backend.params_to_numpy(pairs)
                                            for name, pairs in state.slots.items()}, stream)
            self.backend_name = backend.name
        if tracker is not None and tracker.best_params is not None and early_stopping.restore_best:
            self._params = backend.params_to_numpy(tracker.best_params)
        if verbose == 2 and self.interrupted:
            print(f"Interrupted by Ctrl-C: stopped at pass {self.updates} (a logging point); parameters and "
                  "history up to it kept.", flush=True)
        return self

    def _validation_arrays(self, validation_data) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        Xv = check_inputs(validation_data[0], self.net)
        return Xv, check_targets(validation_data[1], self.net, Xv.shape[0])

    def _validation_figures(self, backend: Backend, params, vdata, T: np.ndarray) -> dict[str, float]:
        figures = {"val_loss": backend.data_loss(self.net, params, vdata)}
        if self.output != "identity":
            out = backend.to_numpy(backend.predict_output(self.net, params, vdata.X))
            figures["val_accuracy"] = _accuracy(self.output, out, T)
        return figures

    # ------------------------------------------------------------- inference
    def _run(self, X, backend: Backend):
        X = check_inputs(X, self.net)
        check_predict(backend, self.net, X.shape[0])
        params = backend.prepare_params(self.net, self._params)
        return backend.predict_output(self.net, params, backend.asarray(X, self.net.np_dtype))

    def predict_proba(self, X, *, keep_on_device: bool = False):
        """Softmax or sigmoid outputs (values for the identity head).

        With ``keep_on_device=True`` the result stays a backend array (a CuPy
        array on the GPU) instead of being copied back to NumPy.
        """
        backend = get_backend()
        out = self._run(X, backend)
        return out if keep_on_device else backend.to_numpy(out)

    def predict(self, X) -> np.ndarray:
        """Class ids (softmax), 0/1 at 0.5 (sigmoid) or values (identity)."""
        return _decide(self.output, self.predict_proba(X))

    def loss(self, X, y) -> float:
        """Mean data loss (cross-entropy or 1/2 squared error per sample), without L2."""
        X = check_inputs(X, self.net)
        T = check_targets(y, self.net, X.shape[0])
        backend = get_backend()
        check_loss(backend, self.net, X.shape[0])
        data = backend.prepare_data(self.net, X, T)
        return backend.data_loss(self.net, backend.prepare_params(self.net, self._params), data)

    def accuracy(self, X, y) -> float:
        """Fraction of samples classified correctly (softmax and sigmoid heads)."""
        if self.output == "identity":
            raise ValueError("accuracy needs a classifier head (softmax or sigmoid); use loss() for regression")
        X = check_inputs(X, self.net)
        T = check_targets(y, self.net, X.shape[0])
        return _accuracy(self.output, self.predict_proba(X), T)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | PathLike) -> Path:
        """Write the model to an ``.npz`` file (no pickles) and return its path.

        ``.npz`` is appended when ``path`` lacks it (``nnx.load`` follows the same
        rule). The file is replaced atomically: a failed save leaves an older
        file at ``path`` as it was.
        """
        from .persistence import save_model
        return save_model(self, path)


def _decide(head: str, out: np.ndarray) -> np.ndarray:
    """Head outputs to predictions: class ids (softmax), 0/1 at 0.5 (sigmoid) or values."""
    if head == "softmax":
        return out.argmax(axis=1)
    if head == "sigmoid":
        labels = (out >= 0.5).astype(np.intp)
        return labels[:, 0] if labels.shape[1] == 1 else labels
    return out[:, 0] if out.shape[1] == 1 else out


def _accuracy(head: str, out: np.ndarray, T: np.ndarray) -> float:
    """Fraction of rows whose prediction from head outputs ``out`` matches targets ``T``."""
    predicted = _decide(head, out)
    if head == "softmax":
        return float(np.mean(predicted == T.argmax(axis=1)))
    truth = (T >= 0.5).astype(np.intp)
    truth = truth[:, 0] if truth.shape[1] == 1 else truth
    return float(np.mean(predicted == truth))


_SLOW_WARNED: set[tuple[str, type]] = set()


def _warn_slow_once(backend: Backend, optimizer: Optimizer) -> None:
    """A backend without a compiled loop for this optimiser runs the reference loop: say so once."""
    key = (backend.name, type(optimizer))
    if key not in _SLOW_WARNED:
        _SLOW_WARNED.add(key)
        warnings.warn(f"the {backend.name} backend has no compiled loop for {type(optimizer).__name__}; it runs "
                      "on the reference Python loop (same math, slower)", PerformanceWarning, stacklevel=3)
