"""scikit-learn estimators backed by nnx: ``MLPClassifier`` and ``MLPRegressor``.

They drop into ``Pipeline``, ``GridSearchCV`` and ``cross_val_score`` and train
on whichever nnx backend is chosen. Needs scikit-learn
(``pip install 'nnx[sklearn]'``); ``import nnx`` alone never imports it.
"""
try:
    import sklearn  # noqa: F401
except ImportError as exc:  # say what to install, keeping the original error
    raise ImportError("nnx.sklearn needs scikit-learn: pip install 'nnx[sklearn]'") from exc

from .classifier import MLPClassifier
from .regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
