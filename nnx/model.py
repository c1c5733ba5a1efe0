"""``nnx.MLP``: the tutorials' multilayer perceptron, on whichever backend is active.

The model is a plain description (``Network``) plus NumPy parameters; each call
hands both to the active backend, so the same object trains on NumPy, Numba or
CuPy and can switch between them.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from .backends import get_backend
from .backends.base import Backend
from .network import GradientDescent, Network, Objective, TrainState
from .initializers import initial_params
from .memory import check_fit, check_loss, check_predict
from .training import run_fit
from .validation import (check_fit_settings, check_fits_dtype, check_inputs, check_network, check_seed,
                         check_targets, real_array)


class MLP:
    """A fully connected network trained by full-batch gradient descent.

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
        self.interrupted = False
        self.backend_name: str | None = None

    @classmethod
    def _restore(cls, net: Network, init: str, seed: int | None, params, updates: int,
                 history: dict[int, float]) -> "MLP":
        """A model from validated saved parts (``nnx.load``), without drawing initial parameters."""
        model = cls.__new__(cls)
        model._setup(net, init, seed, params, updates, history)
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
    def fit(self, X, y, passes: int = 1000, lr: float = 0.01, l2: float = 0.0, reduction: str = "mean",
            log_every: int = 1000, verbose: bool = False, callback=None) -> "MLP":
        """Full-batch gradient descent from the current parameters (a second fit continues).

        ``history`` gains the tutorial-003 loss figure every ``log_every`` passes;
        ``callback(updates, loss)`` is called at the same points, with the model
        holding that point's parameters (so it may predict or save). A non-finite
        loss raises ``NonFiniteLossError`` naming the pass. Ctrl-C stops at the
        next logging point; a second Ctrl-C stops at once, discarding the passes
        since the last logging point. Either way ``interrupted`` is then True
        (it describes the last fit only).
        """
        X = check_inputs(X, self.net)
        T = check_targets(y, self.net, X.shape[0])
        settings = check_fit_settings(passes, lr, l2, reduction, log_every)
        optimizer = GradientDescent(settings.lr)
        objective = Objective(settings.reduction, settings.l2)
        backend = get_backend()

        def report(updates: int, loss: float) -> None:
            if verbose:
                print(f"Loss after pass {updates}: {loss:f}", flush=True)
            if callback is not None:
                self._params = backend.params_to_numpy(state.params)
                self.updates = updates
                callback(updates, loss)

        check_fit(backend, self.net, X.shape[0])
        data = backend.prepare_data(self.net, X, T)
        state = TrainState(backend.prepare_params(self.net, self._params), updates=self.updates)
        self.interrupted = False
        try:
            self.interrupted = run_fit(backend, self.net, state, data, objective, optimizer, settings.passes,
                                       settings.log_every, self.history, on_log=report,
                                       record_start=not self.history)
        finally:
            # Whatever happened, keep what the backend reached (finite by construction).
            self._params = backend.params_to_numpy(state.params)
            self.updates = state.updates
            self.backend_name = backend.name
        if verbose and self.interrupted:
            print(f"Interrupted by Ctrl-C: stopped at pass {self.updates} (a logging point); parameters and "
                  "history up to it kept.", flush=True)
        return self

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
        out = self.predict_proba(X)
        if self.output == "softmax":
            return out.argmax(axis=1)
        if self.output == "sigmoid":
            labels = (out >= 0.5).astype(np.intp)
            return labels[:, 0] if labels.shape[1] == 1 else labels
        return out[:, 0] if out.shape[1] == 1 else out

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
        predicted = self.predict(X)
        if self.output == "softmax":
            return float(np.mean(predicted == T.argmax(axis=1)))
        truth = (T >= 0.5).astype(np.intp)
        truth = truth[:, 0] if truth.shape[1] == 1 else truth
        return float(np.mean(predicted == truth))

    # ------------------------------------------------------------ persistence
    def save(self, path: str | PathLike) -> Path:
        """Write the model to an ``.npz`` file (no pickles) and return its path.

        ``.npz`` is appended when ``path`` lacks it (``nnx.load`` follows the same
        rule). The file is replaced atomically: a failed save leaves an older
        file at ``path`` as it was.
        """
        from .persistence import save_model
        return save_model(self, path)
