"""Small classic datasets, generated here so nnx needs no scikit-learn at run time."""
from __future__ import annotations

import numpy as np


def xor() -> tuple[np.ndarray, np.ndarray]:
    """The XOR truth table: X (4, 2) float64, y (4,) int labels 0/1."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    y = np.array([0, 1, 1, 0], dtype=np.intp)
    return X, y


def moons(n: int = 200, noise: float | None = 0.2, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles, identical to scikit-learn's
    ``make_moons(n, noise=noise, random_state=seed)`` (same draws, same order)."""
    if int(n) != n or n < 2:
        raise ValueError(f"moons needs n >= 2 samples; got {n!r}")
    n = int(n)
    rs = np.random.RandomState(seed)
    n_out = n // 2
    n_in = n - n_out
    outer = np.linspace(0, np.pi, n_out)
    inner = np.linspace(0, np.pi, n_in)
    X = np.vstack([
        np.append(np.cos(outer), 1 - np.cos(inner)),
        np.append(np.sin(outer), 1 - np.sin(inner) - 0.5),
    ]).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])
    order = np.arange(n)
    rs.shuffle(order)
    X, y = X[order], y[order]
    if noise is not None:
        X += rs.normal(scale=noise, size=X.shape)
    return X, y


def spirals(n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, seed: int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one class per arm: a multi-class set no linear model separates."""
    if n_per_class < 1 or n_classes < 2:
        raise ValueError("spirals needs n_per_class >= 1 and n_classes >= 2")
    rs = np.random.RandomState(seed)
    X = np.empty((n_per_class * n_classes, 2))
    y = np.empty(n_per_class * n_classes, dtype=np.intp)
    radius = np.linspace(0.0, 1.0, n_per_class)
    for k in range(n_classes):
        rows = slice(k * n_per_class, (k + 1) * n_per_class)
        theta = np.linspace(k * 4.0, (k + 1) * 4.0, n_per_class) + rs.randn(n_per_class) * noise
        X[rows, 0] = radius * np.sin(theta)
        X[rows, 1] = radius * np.cos(theta)
        y[rows] = k
    return X, y
