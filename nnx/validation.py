"""Input checks that run before any work, so bad input never half-trains a model.

Every message names the problem and the fix.
"""
from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

from .initializers import INITIALIZERS
from .network import DTYPES, HIDDEN_ACTIVATIONS, OUTPUT_HEADS, REDUCTIONS, Network


def check_choice(value, valid, what: str) -> str:
    if isinstance(value, str) and value in valid:
        return value
    close = difflib.get_close_matches(str(value), valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown {what} {value!r}. Expected one of {', '.join(map(repr, valid))}.{hint}")


def check_dtype(dtype) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    return name


def check_network(layer_sizes, hidden, output, init, dtype) -> Network:
    sizes = list(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else None
    if (sizes is None or len(sizes) < 2
            or not all(isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in sizes)):
        raise ValueError(
            "layer_sizes must list at least two positive integers, input and output widths included "
            f"(e.g. [2, 3, 2]); got {layer_sizes!r}")
    check_choice(hidden, HIDDEN_ACTIVATIONS, "hidden activation")
    check_choice(output, OUTPUT_HEADS, "output head")
    check_choice(init, INITIALIZERS, "initialiser")
    if output == "softmax" and sizes[-1] < 2:
        raise ValueError("a softmax head needs at least 2 outputs (one per class); "
                         "use output='sigmoid' for a single probability")
    return Network(tuple(int(s) for s in sizes), hidden, output, check_dtype(dtype))


def real_array(a, name: str) -> np.ndarray:
    """``a`` as a NumPy array of real numbers (bool, integers or floats), without copying when possible."""
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be read as an array: {exc}") from exc
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued; got dtype {arr.dtype}. Pass the real part "
                         f"({name}.real) if that is what you mean")
    if arr.dtype.kind not in "biuf":  # object, text, bytes, dates and durations are not data
        raise ValueError(f"{name} must be numeric (bool, integer or float); got dtype {arr.dtype}. "
                         f"Convert it with np.asarray({name}, dtype=float)")
    return arr


def check_fits_dtype(arr: np.ndarray, name: str, dtype: np.dtype) -> None:
    """Refuse values that would become infinity in ``dtype`` (1e39 in float32).

    A value overflows when it reaches the dtype's largest number plus half a
    unit in the last place (round to nearest), so that is the bound checked.
    """
    if not arr.size or not np.issubdtype(arr.dtype, np.floating):
        return
    target = np.finfo(dtype)
    if np.finfo(arr.dtype).max <= target.max:
        return
    bound = arr.dtype.type(target.max) + arr.dtype.type(2.0) ** (target.maxexp - target.nmant - 2)
    largest = max(abs(arr.max()), abs(arr.min()))
    if largest >= bound:
        def show(v):
            return np.format_float_scientific(v, precision=2, unique=False)
        raise ValueError(f"{name} has values beyond {dtype.name}'s range (largest magnitude {show(largest)}; "
                         f"{dtype.name} holds up to {show(target.max)}): scale them down or use dtype='float64'")


def _finite_array(a, name: str, dtype: np.dtype) -> np.ndarray:
    arr = real_array(a, name)
    if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        kind = "NaN" if np.isnan(arr).any() else "infinity"
        raise ValueError(f"{name} contains {bad} non-finite value(s) ({kind}); remove or impute them first")
    check_fits_dtype(arr, name, dtype)
    return arr


def check_inputs(X, net: Network) -> np.ndarray:
    arr = _finite_array(X, "X", net.np_dtype)
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features); got {arr.ndim}-D shape {arr.shape}. "
                         "Reshape a single sample with X.reshape(1, -1).")
    if arr.shape[0] == 0:
        raise ValueError("X is empty: it has 0 samples")
    if arr.shape[1] != net.n_inputs:
        raise ValueError(f"X has {arr.shape[1]} features but the network's input layer has "
                         f"{net.n_inputs} (layer_sizes[0]); build the model with layer_sizes[0]={arr.shape[1]}")
    return arr


def check_targets(y, net: Network, n_samples: int) -> np.ndarray:
    """Float targets of shape (N, C): one-hot for softmax, values for the other heads."""
    arr = _finite_array(y, "y", net.np_dtype)
    C = net.n_outputs
    if arr.ndim == 0 or arr.ndim > 2:
        raise ValueError(f"y must have shape (N,) or (N, {C}); got shape {arr.shape}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"X and y have different lengths: {n_samples} samples in X, {arr.shape[0]} in y")
    if net.output == "softmax":
        return _class_targets(arr, C)
    if arr.ndim == 1:
        if C != 1:
            raise ValueError(f"y of shape {arr.shape} gives one target per sample, but the network has "
                             f"{C} outputs; pass y with shape (N, {C})")
        arr = arr.reshape(-1, 1)
    if arr.shape[1] != C:
        raise ValueError(f"y has {arr.shape[1]} target columns but the network has {C} outputs")
    if net.output == "sigmoid" and ((arr < 0).any() or (arr > 1).any()):
        raise ValueError("targets for the sigmoid head must lie in [0, 1]; "
                         f"got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.float64)


def _class_targets(arr: np.ndarray, C: int) -> np.ndarray:
    if arr.ndim == 2:
        if arr.shape[1] != C:
            raise ValueError(f"one-hot y has {arr.shape[1]} columns but the network has {C} classes")
        if not (np.isin(arr, (0, 1)).all() and (arr.sum(axis=1) == 1).all()):
            raise ValueError("2-D y for the softmax head must be one-hot: each row a single 1, zeros elsewhere")
        return arr.astype(np.float64)
    if arr.dtype == bool:  # False/True are the class ids 0 and 1
        arr = arr.astype(np.intp)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.equal(np.mod(arr, 1), 0).all():
            raise ValueError(f"labels must be integer class ids in [0, {C}); got dtype {arr.dtype} "
                             "with non-integer values")
    if arr.size and (arr.min() < 0 or arr.max() >= C):
        raise ValueError(f"labels must be integer class ids in [0, {C}) for a network with {C} outputs; "
                         f"got labels from {arr.min()} to {arr.max()}")
    onehot = np.zeros((arr.shape[0], C))
    onehot[np.arange(arr.shape[0]), arr.astype(np.intp)] = 1.0
    return onehot


def check_positive_finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}")
    return float(value)


def check_non_negative_finite(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def check_count(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_reduction(reduction) -> str:
    return check_choice(reduction, REDUCTIONS, "reduction")


def check_seed(seed, name: str = "seed") -> int | None:
    """``None`` (fresh entropy) or an integer NumPy's ``RandomState`` takes."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"{name} must be an integer from 0 to 2**32 - 1; got {seed!r}")
    return int(seed)


@dataclass(frozen=True)
class FitSettings:
    """The validated numbers of one ``fit``: how long, how fast, what is minimised."""

    passes: int
    log_every: int
    lr: float
    l2: float
    reduction: str


def check_fit_settings(passes, lr, l2, reduction, log_every, *, names: Mapping[str, str] | None = None) -> FitSettings:
    """Every training setting checked at once, by the same rules for ``fit`` and ``nnx train``.

    ``names`` renames settings in messages (the CLI says ``--log-every``).
    """
    name = (lambda key: key) if names is None else (lambda key: names.get(key, key))
    return FitSettings(
        passes=check_count(passes, name("passes"), minimum=0),
        log_every=check_count(log_every, name("log_every"), minimum=1),
        lr=check_positive_finite(lr, name("lr")),
        l2=check_non_negative_finite(l2, name("l2")),
        reduction=check_reduction(reduction),
    )


DEFAULT_PASSES = 1000
DEFAULT_LR = 0.01


@dataclass(frozen=True)
class TrainingOptions:
    """How long and with what a fit trains: exactly one of ``passes``/``epochs``, the optimiser
    (plain gradient descent when none was given), its schedule and the minibatch settings."""

    passes: int | None
    epochs: int | None
    optimizer: object
    schedule: object
    batch_size: int | None
    shuffle: bool


def check_training_options(n_samples: int, passes, epochs, lr, optimizer, schedule, batch_size, shuffle,
                           early_stopping, has_validation: bool) -> TrainingOptions:
    """The length, optimiser, schedule, batching and early-stopping arguments of ``fit``."""
    from .early_stopping import EarlyStopping
    from .optim import SGD, Optimizer, Schedule

    if passes is not None and epochs is not None:
        raise ValueError("give passes (updates) or epochs (passes over the data), not both")
    if epochs is not None:
        epochs = check_count(epochs, "epochs", minimum=0)
    elif passes is None:
        passes = DEFAULT_PASSES
    else:
        passes = check_count(passes, "passes", minimum=0)
    if optimizer is None:
        optimizer = SGD(DEFAULT_LR if lr is None else check_positive_finite(lr, "lr"))
    elif not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer must be an nnx.optim optimiser such as nnx.optim.Adam(lr=1e-3); "
                        f"got {type(optimizer).__name__}")
    elif lr is not None and lr != optimizer.lr:
        raise ValueError(f"lr={lr!r} conflicts with the optimiser's own lr={optimizer.lr!r}; give the learning "
                         "rate once, in the optimiser")
    if schedule is not None and not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be an nnx.optim schedule such as nnx.optim.Cosine(T_max=1000); "
                        f"got {type(schedule).__name__}")
    if batch_size is not None:
        batch_size = min(check_count(batch_size, "batch_size", minimum=1), n_samples)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False; got {shuffle!r}")
    if early_stopping is not None:
        if not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping must be nnx.EarlyStopping(...); got {type(early_stopping).__name__}")
        if early_stopping.monitor == "val_loss" and not has_validation:
            raise ValueError("EarlyStopping(monitor='val_loss') needs validation_data=(X_val, y_val); or use "
                             "monitor='loss'")
    return TrainingOptions(passes, epochs, optimizer, schedule, batch_size, bool(shuffle))
