"""The tutorials nnx grew from, as named training presets for ``nnx train --preset``."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import datasets


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    data: Callable[[], tuple[np.ndarray, np.ndarray]]
    hidden_units: int
    hidden: str
    output: str
    init: str
    lr: float
    l2: float
    reduction: str
    passes: int
    log_every: int
    seed: int = 0
    tutorial_loss: bool = False  # print tutorial 000's clipped cross-entropy instead of the objective

    def layer_sizes(self, X: np.ndarray, y: np.ndarray, hidden_units: int | None = None) -> list[int]:
        n_out = int(y.max()) + 1 if self.output == "softmax" else 1
        return [X.shape[1], self.hidden_units if hidden_units is None else hidden_units, n_out]


def _xor_targets() -> tuple[np.ndarray, np.ndarray]:
    X, y = datasets.xor()
    return X, y.astype(np.float64)


PRESETS: dict[str, Preset] = {
    "moons": Preset(
        "moons", "tutorial 003: two moons (200 samples, noise 0.20), tanh hidden, softmax output",
        lambda: datasets.moons(200, noise=0.2, seed=0), 3, "tanh", "softmax", "normal_fan_in",
        lr=0.01, l2=0.01, reduction="sum", passes=20_000, log_every=1000),
    "xor": Preset(
        "xor", "tutorial 001: XOR 2-2-1, sigmoid hidden and output, squared error",
        _xor_targets, 2, "sigmoid", "sigmoid", "uniform",
        lr=1.0, l2=0.0, reduction="sum", passes=10_000, log_every=1000),
    "xor4": Preset(
        "xor4", "tutorial 002: XOR 2-4-1 (tutorial 001's algorithm with 4 hidden units)",
        _xor_targets, 4, "sigmoid", "sigmoid", "uniform",
        lr=1.0, l2=0.0, reduction="sum", passes=10_000, log_every=1000),
    "relu": Preset(
        "relu", "tutorial 000: ReLU hidden, softmax output, clipped cross-entropy (3-class spirals)",
        lambda: datasets.spirals(100, 3, seed=0), 64, "relu", "softmax", "normal_001",
        lr=0.01, l2=0.0, reduction="mean", passes=1000, log_every=100, tutorial_loss=True),
}
