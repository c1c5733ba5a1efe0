"""The plain description of a network and of its training objective.

A backend receives these values, never the ``MLP`` object, so a loop-level
override (a compiled loop, a CUDA graph) can take a whole network at once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
OUTPUT_HEADS = ("softmax", "sigmoid", "identity")
REDUCTIONS = ("mean", "sum")
DTYPES = ("float32", "float64")

# Small integer codes let compiled kernels take the activation and head as
# runtime arguments instead of compiling one specialisation per combination.
ACTIVATION_CODES = {name: code for code, name in enumerate(HIDDEN_ACTIVATIONS)}
HEAD_CODES = {name: code for code, name in enumerate(OUTPUT_HEADS)}


@dataclass(frozen=True)
class Network:
    """Layer widths (input and output included), activations and dtype."""

    layer_sizes: tuple[int, ...]
    hidden: str = "tanh"
    output: str = "softmax"
    dtype: str = "float64"

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes) - 1

    @property
    def n_inputs(self) -> int:
        return self.layer_sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.layer_sizes[-1]

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def activation_of(self, layer: int) -> str:
        """Activation applied after ``layer`` (the last layer's is the head's)."""
        return self.output if layer == self.n_layers - 1 else self.hidden

    def layer_shapes(self) -> list[tuple[int, int]]:
        return list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))


@dataclass(frozen=True)
class Objective:
    """What gradient descent minimises: reduced data loss + l2/2 * sum(W**2)."""

    reduction: str = "mean"
    l2: float = 0.0


@dataclass
class TrainState:
    """Everything a training loop carries from one pass to the next.

    ``params`` are backend-native arrays, updated in place. ``updates`` counts
    the model's updates (the history's keys); ``step`` counts the updates made
    with the current optimiser state (Adam's t, a schedule's position).
    ``slots`` is that state: per slot name (``optimizer.slots()``), arrays shaped
    like ``params``, backend-native and updated in place. ``scratch`` holds a backend's buffers for this fit (plans, workspaces): they
    belong to the fit, never to the process-wide backend object, so fits in
    several threads never share them. It is never saved.
    """

    params: list[tuple[object, object]]
    updates: int = 0
    step: int = 0
    slots: dict[str, list[tuple[object, object]]] = field(default_factory=dict)
    scratch: dict = field(default_factory=dict, repr=False)
