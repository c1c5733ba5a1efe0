"""``MLPRegressor``: an identity head trained on half the squared error, one output per target."""
from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin

from .base import NNXEstimator


class MLPRegressor(RegressorMixin, NNXEstimator):
    """A multilayer perceptron regressor trained by nnx on NumPy, Numba or CuPy.

    ``y`` of shape (N,) trains one output and ``predict`` returns shape (N,);
    ``y`` of shape (N, k) trains k outputs. The parameters are those of
    ``MLPClassifier`` (see its docstring).
    """

    _y_numeric = True

    def _prepare_targets(self, y, *, first: bool, classes=None):
        y = np.asarray(y, dtype=np.float64)
        targets = y.reshape(-1, 1) if y.ndim == 1 else y
        if not first and targets.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {targets.shape[1]} target column(s) but the fitted network has "
                             f"{self.n_outputs_} output(s); call fit to start afresh")
        return targets, "identity", targets.shape[1]

    def partial_fit(self, X, y):
        """One epoch over ``X, y`` from the fitted network (a fresh one on the first call)."""
        return self._partial_fit(X, y)

    def predict(self, X) -> np.ndarray:
        """Predicted values: shape (N,) for one output, (N, k) for k."""
        out = self._outputs(X)
        return out[:, 0] if out.shape[1] == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
