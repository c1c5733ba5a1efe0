"""The optimiser step on the flat parameter vector: plain gradient descent, SGD with
momentum (Nesterov, dampening, weight decay), Adam, AdamW (AMSGrad) and RMSprop
(momentum, centred), PyTorch's formulas in the op order of ``nnx.optim``'s reference
``update``.

Parameters, gradients and each optimiser state array share one flat layout,
W0, b0, W1, b1, ... (``slots`` is n_slots x n_params, rows in ``optimizer.slots()``
order), so one loop covers every layer; the weights' l2 term (the tutorial's L2,
never on biases) is added to their gradients first.

Compile time: each step is a C-callable function (``updater``), compiled on first
use for one family and dtype and cached on disk, and the training kernels call it
by address (``cpu_ccall``, arrays passed by address too). So no training kernel compiles
optimiser code it does not run, a kernel compiles once for every optimiser, and a
fit with plain gradient descent compiles the same update it always did. The
settings (``kernel_hyper``), the learning rate and the step count are runtime
arguments, read each update: nothing is compiled per setting or schedule.

The scalars are formed in float64 as Python forms them (1 - beta1**t, lr / bc1) and
rounded to the parameters' dtype by storing them in ``coef``, as NumPy rounds a
Python float next to a float32 array.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from ..optim.optimizers import SGD, Adam, AdamW, RMSprop
from .cpu_ccall import DTYPES, c_kernel, c_signature
from .cpu_math import FASTMATH

# Families of update: each its own compiled function. Plain SGD (no momentum, no weight
# decay) is gradient descent, the tutorials' update, kept apart so its bits never change;
# "none" is what a call that only computes a loss is handed (it never runs).
FAMILIES = ("gd", "sgd", "adam", "rmsprop", "none")
N_COEF = 9  # scalars of one update, in the parameters' dtype
N_SETTINGS = 7  # kernel_hyper() and the optimiser's code (``settings``)
OPT_ADAMW = AdamW.code


def family(optimizer) -> str:
    """The compiled update family of an optimiser (exact classes only; the backend's table)."""
    kind = type(optimizer)
    if kind is SGD:
        return "gd" if not optimizer.momentum and not optimizer.weight_decay else "sgd"
    if kind is Adam or kind is AdamW:
        return "adam"
    if kind is RMSprop:
        return "rmsprop"
    raise ValueError(f"no compiled update for {kind.__name__}")


def signature(dtype: str):
    """update(theta, addresses, lr, l2, step): ``theta`` points to the flat parameters,
    ``addresses`` to int64s: the addresses of the other arrays and the sizes (``ADDRESSES``);
    ``lr`` is this update's learning rate, ``l2`` the tutorial's L2, ``step`` the 1-based count
    of updates made with the slots. Addresses rather than an argument per array keep the call,
    which every training kernel compiles, small (``cpu_ccall.c_call``)."""
    return c_signature(types.void, types.Array(DTYPES[dtype], 1, "C"), types.Array(types.int64, 1, "C"),
                       types.float64, types.float64, types.int64)


# What ``addresses`` holds, in order: the addresses of the gradients, the slots (n_slots x
# n_params) and ``coef`` in the parameters' dtype, of w_off, b_off, n_bias (int64, a value
# per layer) and of ``settings`` (float64); then n_params, n_slots and n_layers.
ADDRESSES = ("grads", "slots", "w_off", "b_off", "n_bias", "settings", "coef", "n_params", "n_slots", "n_layers")


@intrinsic
def _pointer(typingctx, address, like):
    """``address`` as a pointer of ``like``'s type (a pointer), or to ``like`` (a number class)."""
    ptr = like if isinstance(like, types.CPointer) else types.CPointer(like.instance_type)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))
    return ptr(address, like), codegen


@njit(inline="always")
def _arrays(theta_p, addresses_p):
    """(theta, grads, slots, w_off, b_off, n_bias, settings, coef, n_layers) from an update's arguments."""
    a = carray(addresses_p, 10)
    n, n_slots, n_layers = a[7], a[8], a[9]
    return (carray(theta_p, n), carray(_pointer(a[0], theta_p), n), carray(_pointer(a[1], theta_p), (n_slots, n)),
            carray(_pointer(a[2], np.int64), n_layers), carray(_pointer(a[3], np.int64), n_layers),
            carray(_pointer(a[4], np.int64), n_layers), carray(_pointer(a[5], np.float64), N_SETTINGS),
            carray(_pointer(a[6], theta_p), N_COEF), n_layers)


@njit(inline="always", error_model="numpy")
def _add_l2(theta, grads, w_off, b_off, n_layers, l2):
    """grads += l2 * W over the weights (the objective's gradient)."""
    if l2 != 0.0:
        for layer in range(n_layers):
            for i in range(w_off[layer], b_off[layer]):
                grads[i] += l2 * theta[i]


def _gd(theta_p, addresses_p, lr_, l2_, step):
    """theta += (grads + l2 W) * -lr over weights, theta += grads * -lr over biases: the
    tutorial's order (dW += l2 W, dW *= -lr, W += dW)."""
    a = carray(addresses_p, 10)  # only what it reads: a small function, quick to compile
    n, n_layers = a[7], a[9]
    theta, grads, coef = carray(theta_p, n), carray(_pointer(a[0], theta_p), n), carray(_pointer(a[6], theta_p), 2)
    offsets = carray(_pointer(a[2], np.int64), n_layers)
    ends = carray(_pointer(a[3], np.int64), n_layers)
    n_bias = carray(_pointer(a[4], np.int64), n_layers)
    coef[0] = lr_
    coef[1] = l2_
    neg_lr = -coef[0]
    l2 = coef[1]
    for layer in range(n_layers):
        w0 = offsets[layer]
        b0 = ends[layer]
        if l2 != 0.0:
            for i in range(w0, b0):
                theta[i] += (grads[i] + l2 * theta[i]) * neg_lr
        else:
            for i in range(w0, b0):
                theta[i] += grads[i] * neg_lr
        for i in range(b0, b0 + n_bias[layer]):
            theta[i] += grads[i] * neg_lr


def _sgd(theta_p, addresses_p, lr, l2_, step):
    """SGD with momentum and/or weight decay: g += wd p; buf = g at step 1, else
    momentum buf + (1 - dampening) g; g = g + momentum buf (Nesterov) or buf; p += g * -lr."""
    theta, grads, slots, w_off, b_off, n_bias, hyper, coef, n_layers = _arrays(theta_p, addresses_p)
    n, n_slots = theta.size, slots.shape[0]
    coef[0] = -lr
    coef[1] = hyper[0]
    coef[2] = 1.0 - hyper[1]
    coef[3] = hyper[3]
    coef[4] = l2_
    neg_lr, momentum, keep, wd = coef[0], coef[1], coef[2], coef[3]
    _add_l2(theta, grads, w_off, b_off, n_layers, coef[4])
    first = step == 1
    if momentum == 0.0:  # weight decay alone
        for i in range(n):
            p = theta[i]
            theta[i] = p + (grads[i] + wd * p) * neg_lr
        return
    nesterov = hyper[2] != 0.0
    for i in range(n):
        p = theta[i]
        g = grads[i]
        g = g + wd * p if wd != 0.0 else g
        buf = g if first else slots[0, i] * momentum + keep * g
        slots[0, i] = buf
        g = g + momentum * buf if nesterov else buf
        theta[i] = p + g * neg_lr


@njit(inline="always", error_model="numpy")
def _adam_moments(slots, i, p, g, wd_g, b1_, c1, b2_, c2):
    """Adam's moments of element i, stored in slots 0 and 1: g += wd p (coupled decay), then
    m = b1 m + (1 - b1) g and v = b2 v + (1 - b2) g^2."""
    g = g + wd_g * p if wd_g != 0.0 else g
    m = slots[0, i] * b1_ + c1 * g
    v = slots[1, i] * b2_ + c2 * (g * g)
    slots[0, i] = m
    slots[1, i] = v
    return m, v


def _adam(theta_p, addresses_p, lr, l2_, step):
    """Adam and AdamW (decoupled decay: p *= 1 - lr wd first), AMSGrad too:
    m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)."""
    theta, grads, slots, w_off, b_off, n_bias, hyper, coef, n_layers = _arrays(theta_p, addresses_p)
    n, n_slots = theta.size, slots.shape[0]
    b1, b2, wd = hyper[0], hyper[1], hyper[3]
    decoupled = hyper[6] == OPT_ADAMW
    t = float(step)
    coef[0] = 1.0 - lr * wd if decoupled else 1.0
    coef[1] = 0.0 if decoupled else wd
    coef[2] = b1
    coef[3] = 1.0 - b1
    coef[4] = b2
    coef[5] = 1.0 - b2
    coef[6] = math.sqrt(1.0 - b2 ** t)
    coef[7] = hyper[2]
    coef[8] = lr / (1.0 - b1 ** t)
    decay, wd_g, b1_, c1, b2_, c2, root, eps, step_size = (coef[0], coef[1], coef[2], coef[3], coef[4], coef[5],
                                                           coef[6], coef[7], coef[8])
    coef[0] = l2_
    _add_l2(theta, grads, w_off, b_off, n_layers, coef[0])
    amsgrad = hyper[4] != 0.0
    if not amsgrad:  # the common case in one vectorised sweep (no conditional store)
        for i in range(n):
            p = theta[i] * decay
            m, v = _adam_moments(slots, i, p, grads[i], wd_g, b1_, c1, b2_, c2)
            theta[i] = p - step_size * (m / (math.sqrt(v) / root + eps))
        return
    for i in range(n):
        p = theta[i] * decay
        m, v = _adam_moments(slots, i, p, grads[i], wd_g, b1_, c1, b2_, c2)
        v = max(slots[2, i], v)
        slots[2, i] = v
        theta[i] = p - step_size * (m / (math.sqrt(v) / root + eps))


def _rmsprop(theta_p, addresses_p, lr, l2_, step):
    """RMSprop: sq = alpha sq + (1 - alpha) g^2; avg = sqrt(sq - ga^2) + eps (centred, ga the
    running mean of g) or sqrt(sq) + eps; p -= lr buf with buf = momentum buf + g / avg, or lr g / avg."""
    theta, grads, slots, w_off, b_off, n_bias, hyper, coef, n_layers = _arrays(theta_p, addresses_p)
    n, n_slots = theta.size, slots.shape[0]
    coef[0] = -lr
    coef[1] = hyper[0]
    coef[2] = 1.0 - hyper[0]
    coef[3] = hyper[1]
    coef[4] = hyper[2]
    coef[5] = hyper[4]
    coef[6] = l2_
    neg_lr, alpha, c, eps, momentum, wd = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5]
    _add_l2(theta, grads, w_off, b_off, n_layers, coef[6])
    centered = hyper[3] != 0.0
    if momentum == 0.0 and not centered:  # the common case in one vectorised sweep
        for i in range(n):
            p = theta[i]
            g = grads[i]
            g = g + wd * p if wd != 0.0 else g
            sq = slots[0, i] * alpha + c * (g * g)
            slots[0, i] = sq
            theta[i] = p + neg_lr * (g / (math.sqrt(sq) + eps))
        return
    last = n_slots - 1  # grad_avg is the last slot, after momentum_buffer
    for i in range(n):
        p = theta[i]
        g = grads[i]
        g = g + wd * p if wd != 0.0 else g
        sq = slots[0, i] * alpha + c * (g * g)
        slots[0, i] = sq
        if centered:
            ga = slots[last, i] * alpha + c * g
            slots[last, i] = ga
            avg = math.sqrt(sq - ga * ga) + eps
        else:
            avg = math.sqrt(sq) + eps
        if momentum != 0.0:
            buf = slots[1, i] * momentum + g / avg
            slots[1, i] = buf
            theta[i] = p + neg_lr * buf
        else:
            theta[i] = p + neg_lr * (g / avg)


def _none(theta_p, addresses_p, lr, l2_, step):
    """No step: the update handed to a call that makes none (a loss alone)."""


_SOURCES = {"gd": _gd, "sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop, "none": _none}


def _fastmath(name: str):
    """Gradient descent keeps the training kernels' fast-math flags (and so its bits); the
    other steps use none, so each element operation rounds as NumPy's does and the step
    equals the reference ``update`` bit for bit on the same gradients (fused multiply-adds
    would differ in the last place, which centred RMSprop and Adam amplify over a run)."""
    return FASTMATH if name == "gd" else False


@functools.lru_cache(maxsize=None)
def updater(name: str, dtype: str):
    """The compiled update of one family and dtype (compiled on first use, then from the disk cache)."""
    return c_kernel(_SOURCES[name], signature(dtype), fastmath=_fastmath(name))


def updater_cached(name: str, dtype: str) -> bool:
    """Whether ``updater(name, dtype)`` is made or on disk (then loaded), found without compiling."""
    return c_kernel(_SOURCES[name], signature(dtype), fastmath=_fastmath(name), cached_only=True)


def compile_aside(name: str, dtype: str) -> None:
    """What a helper process compiles beside a fit's entry point: the update of family ``name``."""
    updater(name, dtype)


def settings(optimizer) -> np.ndarray:
    """What the update reads of an optimiser: ``kernel_hyper()`` (six values in its kind's
    layout) and then its code (Adam and AdamW share a layout and a family)."""
    return np.append(np.asarray(optimizer.kernel_hyper(), dtype=np.float64), float(optimizer.code))
