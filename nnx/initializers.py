"""Initial parameters, drawn on the CPU so every backend starts from the same numbers.

Draws follow the tutorials' order (for each layer W, then b where b is random),
so ``normal_fan_in`` with seed 0 is exactly tutorial 003's starting point.
"""
from __future__ import annotations

import numpy as np

INITIALIZERS = ("normal_fan_in", "normal_001", "uniform", "glorot", "he")


def _weights(rs: np.random.RandomState, init: str, fan_in: int, fan_out: int) -> np.ndarray:
    if init == "normal_fan_in":  # tutorial 003
        return rs.randn(fan_in, fan_out) / np.sqrt(fan_in)
    if init == "normal_001":  # tutorial 000
        return rs.randn(fan_in, fan_out) * 0.01
    if init == "uniform":  # tutorial 001
        return rs.rand(fan_in, fan_out)
    if init == "glorot":
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rs.uniform(-limit, limit, size=(fan_in, fan_out))
    if init == "he":
        return rs.randn(fan_in, fan_out) * np.sqrt(2.0 / fan_in)
    raise ValueError(f"unknown initialiser {init!r}")


def initial_params(layer_sizes, init: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """float64 (W, b) per layer from ``numpy.random.RandomState(seed)``."""
    rs = np.random.RandomState(seed)
    params = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        W = _weights(rs, init, fan_in, fan_out)
        b = rs.rand(fan_out) if init == "uniform" else np.zeros(fan_out)
        params.append((W, b))
    return params
