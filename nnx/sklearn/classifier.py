"""``MLPClassifier``: softmax + cross-entropy over the classes, or sigmoids for multilabel targets."""
from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import column_or_1d

from .base import NNXEstimator

_MULTILABEL = "multilabel-indicator"


def _label_list(labels) -> str:
    shown = ", ".join(map(repr, labels[:10].tolist()))
    return shown + (", ..." if len(labels) > 10 else "")


class MLPClassifier(ClassifierMixin, NNXEstimator):
    """A multilayer perceptron classifier trained by nnx on NumPy, Numba or CuPy.

    Labels may be of any type NumPy can sort (strings, bools, integers with
    gaps, ...): ``classes_`` lists them and ``predict`` returns them. Two or more
    classes train a softmax head (one output per class, cross-entropy); a 2-D
    0/1 indicator ``y`` trains one sigmoid per label (multilabel).

    Parameters (stored unchanged, checked in ``fit``; the defaults are scikit-learn's):

    hidden_layer_sizes : hidden widths, e.g. ``(100,)`` or ``(64, 32)``; ``()`` for none.
    activation : ``"relu"``, ``"tanh"``, ``"sigmoid"`` (or ``"logistic"``), ``"identity"``.
    optimizer : ``"adam"``, ``"adamw"``, ``"sgd"`` or ``"rmsprop"`` (``nnx.optim``, PyTorch's formulas).
    optimizer_params : the optimiser's other settings by PyTorch's names, e.g. ``{"momentum": 0.9}``.
    learning_rate : the step size.
    l2 : the tutorials' L2 penalty ``l2/2 * sum(W**2)`` on the weights (not the biases), added to the
        mean loss (so each update adds ``l2 * W`` to the weights' gradient).
    batch_size : samples per update: ``"auto"`` (min(200, n_samples)), an integer, or ``"full"`` / None
        for full-batch gradient descent (a batch of every sample is full batch, nnx's fastest path).
    max_epochs : epochs per ``fit`` (``partial_fit`` runs one).
    log_every : epochs between logging points, where the loss joins ``loss_curve_``, the stopping
        rules are checked and ``verbose`` prints. 1 (the default) is scikit-learn's curve; a larger
        value runs that many epochs per compiled call on Numba and CuPy (faster on small networks;
        a one-hidden-layer network trained full batch on Numba, without ``early_stopping``, already
        runs many epochs a call, each epoch's loss taken from the next one's forward pass).
    shuffle : visit the samples in a fresh order each epoch (drawn from the seeded model's generator).
    early_stopping : hold out ``validation_fraction`` of the samples (stratified) and stop when their
        loss has not improved by more than ``tol`` for ``n_iter_no_change`` epochs, keeping the best
        epoch's network. Without it, ``fit`` stops the same way on the training loss (scikit-learn's
        rule) unless ``tol=None``.
    init : ``"auto"`` (He for ReLU, Glorot otherwise) or an nnx initialiser name.
    backend : ``"auto"`` (nnx's own choice: ``use_backend``, ``set_backend``, ``NNX_BACKEND``, else the
        fastest available) or ``"numpy"``, ``"numba"``, ``"cupy"``.
    dtype : ``"float64"`` or ``"float32"``.
    random_state : None, an int or a ``RandomState``: the same int gives the same model on every backend.
    verbose : 0 silent, 1 a progress bar, 2 (or True) a line per epoch.
    warm_start : ``fit`` continues from the fitted network (and its optimiser state).

    Fitted attributes: ``classes_``, ``n_features_in_``, ``feature_names_in_`` (DataFrames),
    ``loss_curve_`` (training loss at each logging point), ``n_iter_`` (epochs run), ``best_loss_``,
    ``validation_loss_curve_`` and ``best_validation_loss_`` (early stopping), ``coefs_``,
    ``intercepts_``, ``n_layers_``, ``n_outputs_``, and ``model_``, the ``nnx.MLP`` itself.
    """

    def _prepare_targets(self, y, *, first: bool, classes=None):
        kind = type_of_target(y, input_name="y")
        if kind == _MULTILABEL:
            return self._multilabel_targets(y, first=first)
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if first:
            found = np.unique(y) if classes is None else self._given_classes(classes)
            if len(found) < 2:
                raise ValueError(f"MLPClassifier needs samples of at least 2 classes; got 1 class "
                                 f"({_label_list(found)})")
            self.classes_ = found
            vars(self).pop("_multilabel_dtype", None)
        elif self._is_multilabel():
            raise ValueError("y holds one label per sample, but the estimator was fitted on multilabel "
                             "(indicator) targets; call fit to start afresh")
        ids = np.searchsorted(self.classes_, y)
        ids = np.minimum(ids, len(self.classes_) - 1)
        unseen = self.classes_[ids] != y
        if unseen.any():
            raise ValueError(f"y has labels not in classes_ ({_label_list(np.unique(y[unseen]))}); classes_ is "
                             f"fixed by the first fit ({_label_list(self.classes_)}); pass every label in "
                             "`classes=` on the first partial_fit, or call fit to start afresh")
        return ids, "softmax", len(self.classes_)

    def _stratify_by(self, targets, fraction: float):
        """The class ids, when every class can appear on both sides of the split."""
        if targets.ndim != 1:
            return None
        counts = np.bincount(targets)
        n_val = int(np.ceil(fraction * targets.size))
        n_classes = np.count_nonzero(counts)
        fits = counts[counts > 0].min() >= 2 and n_val >= n_classes and targets.size - n_val >= n_classes
        return targets if fits else None

    @staticmethod
    def _given_classes(classes) -> np.ndarray:
        listed = np.asarray(classes).ravel()
        found = np.unique(listed)
        if len(found) != len(listed):
            raise ValueError(f"classes= lists a label more than once: {_label_list(listed)}")
        return found

    def _multilabel_targets(self, y, *, first: bool):
        y = np.asarray(y)
        if first:
            self.classes_ = np.arange(y.shape[1])
            self._multilabel_dtype = y.dtype
        elif not self._is_multilabel() or y.shape[1] != len(self.classes_):
            raise ValueError(f"y is a multilabel indicator with {y.shape[1]} labels, which does not match the "
                             "targets of the first fit; call fit to start afresh")
        return y.astype(np.float64), "sigmoid", y.shape[1]

    def _is_multilabel(self) -> bool:
        return hasattr(self, "_multilabel_dtype")

    def partial_fit(self, X, y, classes=None):
        """One epoch over ``X, y``. The first call must list every label in ``classes`` (later
        batches may lack some), unless ``fit`` ran before; later calls may omit it."""
        first = not hasattr(self, "model_")
        if first and classes is None and type_of_target(y, input_name="y") != _MULTILABEL:
            raise ValueError("classes must be passed on the first call to partial_fit: every label the "
                             "classifier will ever see, e.g. classes=np.unique(y_all)")
        if not first and classes is not None:
            given = np.unique(np.asarray(classes))
            if not np.array_equal(given, self.classes_):
                raise ValueError(f"classes={_label_list(given)} differs from classes_ of the first call "
                                 f"({_label_list(self.classes_)}); call fit to start afresh")
        return self._partial_fit(X, y, classes=classes)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one column per entry of ``classes_`` (per label for multilabel)."""
        return self._outputs(X)

    def predict_log_proba(self, X) -> np.ndarray:
        """The logarithm of ``predict_proba`` (minus infinity where a probability underflows to 0)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class per sample (0/1 per label at 0.5 for multilabel)."""
        proba = self.predict_proba(X)
        if self._is_multilabel():
            return (proba >= 0.5).astype(self._multilabel_dtype)
        return self.classes_[proba.argmax(axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
