"""Branch-free exp, tanh and sigmoid that LLVM can vectorise.

Numba lowers ``math.exp``/``math.tanh`` to scalar libm calls, which block
vectorisation of every loop they sit in. These versions are a few ulp from
NumPy (Cody-Waite reduction with a degree-13 polynomial for exp, the Cephes
rational approximation for small |x| in tanh), keep NaN and +-inf semantics and
compute in float64 for float64 input. float32 input takes float32 versions
(Cephes' single-precision polynomials, a few float32 ulp), so float32 loops stay
float32 and vectorise twice as wide; ``like(x, c)`` gives a constant x's float type.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

from ..cache import configure_numba

# Before the first cached @njit: Numba picks a function's cache folder when it is decorated,
# and nnx's is a per-user folder (False: not writable here, so kernels are not cached).
CACHE = configure_numba()

# LLVM may reassociate, contract into FMAs and use reciprocals, but never assume
# finite values: NaN and inf must flow through to nnx's loss check.
FASTMATH = {"reassoc", "contract", "arcp"}

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93145751953125e-1
_LN2_LO = 1.42860682030941723212e-6
_EXP_MAX = 709.8  # above: +inf
_EXP_MIN = -745.2  # below: 0

# Cephes exp on |r| <= ln2 / 2: exp(r) = (Q(r^2) + r P(r^2)) / (Q(r^2) - r P(r^2)).
_EP0 = 1.26177193074810590878e-4
_EP1 = 3.02994407707441961300e-2
_EP2 = 9.99999999999999999910e-1
_EQ0 = 3.00198505138664455042e-6
_EQ1 = 2.52448340349684104192e-3
_EQ2 = 2.27265548208155028766e-1
_EQ3 = 2.00000000000000000009e0

# Cephes tanh, |x| < 0.625: x + x**3 P(x**2) / Q(x**2).
_TP0 = -9.64399179425052238628e-1
_TP1 = -9.92877231001918586564e1
_TP2 = -1.61468768441708447952e3
_TQ1 = 1.12811678491632931402e2
_TQ2 = 2.23548839060100448583e3
_TQ3 = 4.84406305325125486048e3


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _pow2(n: np.int64) -> np.float64:
    """2**n for -1022 <= n <= 1023, built from the exponent bits."""
    return np.int64((n + 1023) << 52).view(np.float64)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _ln2_reduce(x):
    """(k, r) with x = k ln2 + r, |r| <= ln2 / 2 (Cody-Waite: ln2 in two parts), k a float."""
    k = np.floor(x * _LOG2E + 0.5)
    return k, (x - k * _LN2_HI) - k * _LN2_LO


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def rational_exp(x):
    """exp(x) = 2**k * A / B in Cephes' rational form, as (k, A, B) for finite ``x``:
    x = k ln2 + r, |r| <= ln2 / 2, A = Q(r^2) + r P(r^2), B = Q(r^2) - r P(r^2).
    Callers scale A by 2**k and share the division by B with their own."""
    k, r = _ln2_reduce(x)
    rr = r * r
    pr = ((_EP0 * rr + _EP1) * rr + _EP2) * r
    qr = ((_EQ0 * rr + _EQ1) * rr + _EQ2) * rr + _EQ3
    return np.int64(k), qr + pr, qr - pr


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def rational_exp_below_zero(d):
    """exp(d) = A / B for d <= 0 (NaN: NaN), as (A, B): ``rational_exp`` with A scaled by 2**k in
    two steps, so subnormal results come out right, and 0 below the smallest subnormal.
    Callers share the division by B with their own."""
    n, num, b = rational_exp(max(d, -746.0))
    half = n >> 1
    a = num * _pow2(half) * _pow2(n - half)
    return (0.0 if d < _EXP_MIN else a), b


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _vexp64(x):
    """exp(x) in float64, within ~2 ulp of libm; +inf above 709.8, 0 below -745.2."""
    x = np.float64(x)
    safe = 0.0 if x != x else min(max(x, -746.0), 710.0)
    k, r = _ln2_reduce(safe)
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    n = np.int64(k)
    half = n >> 1  # two scalings reach the subnormal range and overflow cleanly
    y = p * _pow2(half) * _pow2(n - half)
    y = np.inf if x > _EXP_MAX else y
    y = 0.0 if x < _EXP_MIN else y
    return x if x != x else y


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _vtanh64(x):
    """tanh(x) in float64, within a few ulp of NumPy; odd, saturating to +-1.

    Both branches are formed as a fraction and share one division (the
    throughput limit of the whole loop): x (Q + z P) / Q for |x| < 0.625, else
    (A - B) / (A + B) with A / B = exp(2|x|) written as Cephes' rational
    exp: A = 2**k (Q' + r P'), B = Q' - r P', 2|x| = k ln2 + r, capped at 40
    where tanh is 1. No exp polynomial and no second division.
    """
    x = np.float64(x)
    ax = abs(x)
    z = x * x
    p = ((_TP0 * z + _TP1) * z + _TP2) * z
    q = ((z + _TQ1) * z + _TQ2) * z + _TQ3
    t = min(2.0 * ax, 40.0)  # NaN: 40, and NaN is put back at the end
    k, num, b = rational_exp(t)
    a = num * _pow2(k)  # 0 <= k <= 58
    small = ax < 0.625
    num = ax * (q + p) if small else a - b
    den = q if small else a + b
    y = math.copysign(num / den, x)
    return x if x != x else y


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def log1p_exp(d):
    """log(1 + exp(d)) in float64 for d <= 0 (NaN stays NaN), vectorisable: a log-sum-exp over
    two logits is m + log1p_exp(low - m). exp(d) = A / B (``rational_exp_below_zero``), then
    log(1 + e) = 2 atanh(s) with s = e / (2 + e) = A / (A + 2B) <= 1/3, whose series
    2 (s + s^3/3 + s^5/5 + ...) is cut after 16 terms (the rest is below 1e-17 relative). One
    division, and no function of its own to compile."""
    d = np.float64(d)
    a, b = rational_exp_below_zero(d)
    s = a / (a + 2.0 * b)
    w = s * s
    p = 1.0 / 31.0
    for k in range(14, -1, -1):  # constant bounds: unrolled into a chain of multiply-adds
        p = p * w + 1.0 / (2 * k + 1)
    y = 2.0 * s * p
    return d if d != d else y


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _vsigmoid64(x):
    """1 / (1 + exp(-x)), the NumPy backend's formula."""
    return 1.0 / (_vexp64(-np.float64(x)) + 1.0)


# ------------------------------------------------------------------ float32
_LN2_HI32 = 0.693359375  # Cephes expf
_LN2_LO32 = -2.12194440e-4
_EXP_MAX32 = 88.72283935546875  # above: +inf
_EXP_MIN32 = -103.97207708  # below: 0


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _pow2_32(n: np.int32) -> np.float32:
    """2**n for -126 <= n <= 127, built from the exponent bits."""
    return np.int32((n + np.int32(127)) << np.int32(23)).view(np.float32)


@njit(inline="always", fastmath=FASTMATH, error_model="numpy")
def _expf_parts(x):
    """exp(x) = 2**k * p for finite float32 ``x``, as (k, p): Cephes expf's reduction
    x = k ln2 + r and its polynomial for exp(r), |r| <= ln2 / 2."""
    k = np.floor(x * np.float32(_LOG2E) + np.float32(0.5))
    r = (x - k * np.float32(_LN2_HI32)) - k * np.float32(_LN2_LO32)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    return np.int32(k), p * (r * r) + r + np.float32(1.0)

@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _vexp32(x):
    """exp(x) in float32, Cephes expf, a few ulp; +inf above 88.72, 0 below -103.97."""
    x = np.float32(x)
    safe = np.float32(0.0) if x != x else min(max(x, np.float32(-104.0)), np.float32(89.0))
    n, p = _expf_parts(safe)
    half = n >> np.int32(1)
    y = p * _pow2_32(half) * _pow2_32(n - half)
    y = np.float32(np.inf) if x > np.float32(_EXP_MAX32) else y
    y = np.float32(0.0) if x < np.float32(_EXP_MIN32) else y
    return x if x != x else y


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _vtanh32(x):
    """tanh(x) in float32: Cephes tanhf's polynomial for |x| < 0.625, else
    1 - 2 / (exp(2|x|) + 1) (one division), odd, saturating to +-1."""
    x = np.float32(x)
    ax = abs(x)
    z = x * x
    p = np.float32(-5.70498872745e-3)
    p = p * z + np.float32(2.06390887954e-2)
    p = p * z + np.float32(-5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z + np.float32(-3.33332819422e-1)
    small = ax + ax * (z * p)
    t = min(np.float32(2.0) * ax, np.float32(40.0))  # NaN: 40, and NaN is put back at the end
    k, e = _expf_parts(t)
    e = e * _pow2_32(k)  # 0 <= k <= 58
    big = np.float32(1.0) - np.float32(2.0) / (e + np.float32(1.0))
    y = math.copysign(small if ax < np.float32(0.625) else big, x)
    return x if x != x else y


@njit(cache=CACHE, fastmath=FASTMATH, error_model="numpy")
def _vsigmoid32(x):
    x = np.float32(x)
    return np.float32(1.0) / (_vexp32(-x) + np.float32(1.0))


def _is32(x) -> bool:
    if isinstance(x, types.Array):
        x = x.dtype
    return isinstance(x, types.Float) and x.bitwidth == 32


def like(x, v):
    """``v`` as ``x``'s float type (float32 for float32 scalars/arrays, else float64)."""
    return np.float32(v) if np.asarray(x).dtype == np.float32 else np.float64(v)


@overload(like, inline="always")
def _like(x, v):
    if _is32(x):
        return lambda x, v: np.float32(v)
    return lambda x, v: np.float64(v)


def vexp(x):
    """exp(x): float64 within ~2 ulp of libm (+inf above 709.8, 0 below -745.2); float32 in float32."""
    return _vexp64.py_func(x)


def vtanh(x):
    """tanh(x): float64 within a few ulp of NumPy; float32 in float32. Odd, saturating to +-1."""
    return _vtanh64.py_func(x)


def vsigmoid(x):
    """1 / (1 + exp(-x)), the NumPy backend's formula, in x's precision (float64 for non-floats)."""
    return _vsigmoid64.py_func(x)


@overload(vexp, inline="always")
def _ov_vexp(x):
    if _is32(x):
        return lambda x: _vexp32(x)
    return lambda x: _vexp64(x)


@overload(vtanh, inline="always")
def _ov_vtanh(x):
    if _is32(x):
        return lambda x: _vtanh32(x)
    return lambda x: _vtanh64(x)


@overload(vsigmoid, inline="always")
def _ov_vsigmoid(x):
    if _is32(x):
        return lambda x: _vsigmoid32(x)
    return lambda x: _vsigmoid64(x)
