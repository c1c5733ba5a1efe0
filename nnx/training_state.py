"""What a model carries from one fit to the next besides its parameters.

The optimiser's state (its settings, step count, and slot arrays such as
Adam's moments, as NumPy arrays shaped like the parameters) and the minibatch
order (the model's own generator, the current epoch's permutation and the
position in it). A later fit with an equal optimiser continues all of it, so
fit(5 epochs) + fit(5 epochs) is fit(10 epochs) bit for bit; ``nnx.save`` /
``nnx.load`` keep it, so a resumed run continues exactly too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .batching import BatchStream
from .optim import Optimizer


def new_generator(seed: int | None) -> np.random.Generator:
    """The model's own minibatch-order generator (PCG64), seeded like its parameters."""
    return np.random.Generator(np.random.PCG64(seed))


@dataclass
class OptimizerState:
    optimizer: Optimizer | None
    step: int
    slots: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    rng: np.random.Generator
    permutation: np.ndarray | None = None
    position: int = 0

    @classmethod
    def fresh(cls, seed: int | None) -> "OptimizerState":
        return cls(None, 0, {}, new_generator(seed))

    def adopt(self, optimizer: Optimizer, params) -> str | None:
        """Continue the state when ``optimizer`` equals the last fit's; else start it afresh
        (zero slots, step 0) and return the notice to give when state is lost."""
        if self.optimizer == optimizer:
            return None
        old = self.optimizer
        notice = None
        if old is not None and self.step and (old.slots() or optimizer.slots()):
            notice = (f"the optimiser changed from {old.describe()} to {optimizer.describe()}: its state (moments, "
                      "step count, schedule position) starts afresh")
        self.optimizer, self.step = optimizer, 0
        self.slots = {name: [(np.zeros_like(W), np.zeros_like(b)) for W, b in params] for name in optimizer.slots()}
        return notice

    def batch_stream(self, n_samples: int, batch_size: int, shuffle: bool) -> BatchStream:
        """The minibatch order, continuing the current epoch when the data has the same size."""
        same = self.permutation is not None and self.permutation.size == n_samples
        return BatchStream(self.rng, n_samples, batch_size, shuffle, self.permutation if same else None,
                           self.position if same else 0)

    def keep(self, step: int, slots, stream: BatchStream | None) -> None:
        """What a fit reached (its state after the last update it kept)."""
        self.step, self.slots = step, slots
        if stream is not None:
            self.permutation, self.position = stream.permutation, stream.position
