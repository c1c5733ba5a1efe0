"""Optimisers: PyTorch's update rules and defaults, each written once against ``xp``.

An optimiser is a frozen description (its settings); its state (moments,
momentum buffers) lives in the fit's ``TrainState.slots``, one array per slot
name shaped like each parameter, and its step count in ``TrainState.step``.
``update`` is the reference math that the base backend runs on NumPy or CuPy;
compiled backends run the same formulas from ``code`` and ``kernel_hyper()``.

Adding an optimiser: a dataclass here with ``kind``, ``code``, ``slots``,
``kernel_hyper`` and ``update``, an entry in ``OPTIMIZERS``, and a row in the
compiled backends' tables (until then they run it on the reference loop and say so).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np


def _real(value, name: str, *, low: float = 0.0, high: float | None = None, low_open: bool = False,
          high_open: bool = True) -> float:
    """``value`` as a finite float in the given range, else a ValueError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    v = float(value)
    below = v <= low if low_open else v < low
    above = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or below or above:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        span = f"{left}{low:g}, {'inf' if high is None else format(high, 'g')}{right}"
        raise ValueError(f"{name} must be a finite number in {span}; got {value!r}")
    return v


class Optimizer:
    """Base of the optimiser dataclasses (see the module docstring for the protocol)."""

    kind: ClassVar[str]
    code: ClassVar[int]
    lr: float

    def slots(self) -> tuple[str, ...]:
        """State arrays per parameter, in the row order compiled kernels keep them."""
        raise NotImplementedError

    def kernel_hyper(self) -> np.ndarray:
        """Settings as float64[6] in this kind's fixed layout (for compiled kernels)."""
        raise NotImplementedError

    def update(self, xp, param, grad, state: tuple, step: int, lr: float) -> None:
        """Update ``param`` in place from ``grad`` (which may be overwritten); ``state`` holds the
        arrays named by ``slots()``, ``step`` counts updates with this state from 1."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Constructor arguments, for files and messages."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


def _add_decay(xp, grad, param, weight_decay: float) -> None:
    """grad += weight_decay * param (PyTorch's coupled weight decay, every parameter)."""
    if weight_decay:
        grad += weight_decay * param


@dataclass(frozen=True)
class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum: ``torch.optim.SGD``.

    ``SGD(lr)`` is the tutorials' plain gradient descent, and what ``fit`` runs
    when no optimiser is given.
    """

    kind: ClassVar[str] = "sgd"
    code: ClassVar[int] = 0
    lr: float
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "lr", _real(self.lr, "SGD lr", low_open=True))
        object.__setattr__(self, "momentum", _real(self.momentum, "SGD momentum"))
        object.__setattr__(self, "dampening", _real(self.dampening, "SGD dampening"))
        object.__setattr__(self, "weight_decay", _real(self.weight_decay, "SGD weight_decay"))
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD nesterov must be True or False; got {self.nesterov!r}")
        object.__setattr__(self, "nesterov", bool(self.nesterov))
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD nesterov=True needs momentum > 0 and dampening=0 (as in PyTorch)")

    def slots(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def kernel_hyper(self) -> np.ndarray:
        return np.array([self.momentum, self.dampening, float(self.nesterov), self.weight_decay, 0, 0], np.float64)

    def update(self, xp, param, grad, state, step, lr):
        _add_decay(xp, grad, param, self.weight_decay)
        if self.momentum:
            (buf,) = state
            if step == 1:
                buf[...] = grad
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            if self.nesterov:
                grad += self.momentum * buf
            else:
                grad[...] = buf
        grad *= -lr
        param += grad


@dataclass(frozen=True)
class Adam(Optimizer):
    """Adam (optionally AMSGrad): ``torch.optim.Adam``; eps is added after the bias-corrected root."""

    kind: ClassVar[str] = "adam"
    code: ClassVar[int] = 1
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False

    def __post_init__(self):
        name = type(self).__name__
        object.__setattr__(self, "lr", _real(self.lr, f"{name} lr", low_open=True))
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else None
        if betas is None or len(betas) != 2:
            raise ValueError(f"{name} betas must be a pair (beta1, beta2); got {self.betas!r}")
        object.__setattr__(self, "betas", (_real(betas[0], f"{name} beta1", high=1.0),
                                           _real(betas[1], f"{name} beta2", high=1.0)))
        object.__setattr__(self, "eps", _real(self.eps, f"{name} eps"))
        object.__setattr__(self, "weight_decay", _real(self.weight_decay, f"{name} weight_decay"))
        if not isinstance(self.amsgrad, (bool, np.bool_)):
            raise TypeError(f"{name} amsgrad must be True or False; got {self.amsgrad!r}")
        object.__setattr__(self, "amsgrad", bool(self.amsgrad))

    def slots(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def kernel_hyper(self) -> np.ndarray:
        b1, b2 = self.betas
        return np.array([b1, b2, self.eps, self.weight_decay, float(self.amsgrad), 0], np.float64)

    def _decoupled(self) -> bool:
        return False

    def update(self, xp, param, grad, state, step, lr):
        b1, b2 = self.betas
        if self._decoupled():
            param *= 1 - lr * self.weight_decay
        else:
            _add_decay(xp, grad, param, self.weight_decay)
        m, v = state[0], state[1]
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * (grad * grad)
        bc1 = 1 - b1 ** step
        bc2 = 1 - b2 ** step
        if self.amsgrad:
            xp.maximum(state[2], v, out=state[2])
            v = state[2]
        denom = xp.sqrt(v) / math.sqrt(bc2) + self.eps
        param -= (lr / bc1) * (m / denom)


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay: ``torch.optim.AdamW`` (p *= 1 - lr * wd before the moments)."""

    kind: ClassVar[str] = "adamw"
    code: ClassVar[int] = 2
    weight_decay: float = 1e-2

    def _decoupled(self) -> bool:
        return True


@dataclass(frozen=True)
class RMSprop(Optimizer):
    """RMSprop: ``torch.optim.RMSprop``; eps is added after the square root."""

    kind: ClassVar[str] = "rmsprop"
    code: ClassVar[int] = 3
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False

    def __post_init__(self):
        object.__setattr__(self, "lr", _real(self.lr, "RMSprop lr", low_open=True))
        object.__setattr__(self, "alpha", _real(self.alpha, "RMSprop alpha", high=1.0, high_open=False))
        object.__setattr__(self, "eps", _real(self.eps, "RMSprop eps"))
        object.__setattr__(self, "weight_decay", _real(self.weight_decay, "RMSprop weight_decay"))
        object.__setattr__(self, "momentum", _real(self.momentum, "RMSprop momentum"))
        if not isinstance(self.centered, (bool, np.bool_)):
            raise TypeError(f"RMSprop centered must be True or False; got {self.centered!r}")
        object.__setattr__(self, "centered", bool(self.centered))

    def slots(self) -> tuple[str, ...]:
        return (("square_avg",) + (("momentum_buffer",) if self.momentum else ())
                + (("grad_avg",) if self.centered else ()))

    def kernel_hyper(self) -> np.ndarray:
        return np.array([self.alpha, self.eps, self.momentum, float(self.centered), self.weight_decay, 0],
                        np.float64)

    def update(self, xp, param, grad, state, step, lr):
        _add_decay(xp, grad, param, self.weight_decay)
        a = self.alpha
        sq = state[0]
        sq *= a
        sq += (1 - a) * (grad * grad)
        if self.centered:
            ga = state[-1]
            ga *= a
            ga += (1 - a) * grad
            avg = xp.sqrt(sq - ga * ga) + self.eps
        else:
            avg = xp.sqrt(sq) + self.eps
        if self.momentum:
            buf = state[1]
            buf *= self.momentum
            buf += grad / avg
            param -= lr * buf
        else:
            param -= lr * (grad / avg)


# The one table of optimisers: name (as the command line and files spell it) -> class.
OPTIMIZERS: dict[str, type[Optimizer]] = {cls.kind: cls for cls in (SGD, Adam, AdamW, RMSprop)}
