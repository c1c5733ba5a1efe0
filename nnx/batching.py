"""Minibatch order: which samples each update of an interval trains on.

Every epoch visits each sample once, in a permutation drawn on the CPU from
the model's own ``numpy.random.Generator`` (so every backend sees the same
batches), split into ``ceil(N / batch_size)`` batches; the last, smaller one is
kept. Backends get the interval's indices back to back (``Batches``) and gather
rows themselves, so X is never copied or permuted as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batches:
    """The batches of one interval: update u trains on ``order[bounds[u]:bounds[u + 1]]``."""

    order: np.ndarray
    bounds: np.ndarray
    max_size: int

    @property
    def updates(self) -> int:
        return int(self.bounds.size - 1)

    def select(self, start: int, stop: int) -> "Batches":
        """Updates start..stop of this interval, as batches of their own."""
        lo, hi = int(self.bounds[start]), int(self.bounds[stop])
        return Batches(self.order[lo:hi], self.bounds[start:stop + 1] - lo, self.max_size)


def updates_per_epoch(n_samples: int, batch_size: int | None) -> int:
    return 1 if batch_size is None else -(-n_samples // batch_size)


class BatchStream:
    """Epoch permutations and the position in the current one, carried from fit to fit.

    ``position`` is where the next update starts within ``permutation`` (0 at an
    epoch boundary, where the next permutation is drawn only when needed), so a
    fit that stops mid-epoch and a later one continue the same epoch exactly.
    """

    def __init__(self, rng: np.random.Generator, n_samples: int, batch_size: int, shuffle: bool,
                 permutation: np.ndarray | None = None, position: int = 0):
        self.rng, self.n, self.batch_size, self.shuffle = rng, n_samples, batch_size, shuffle
        self.permutation = permutation
        self.position = position if permutation is not None else 0

    def snapshot(self) -> tuple:
        return self.rng.bit_generator.state, self.permutation, self.position

    def restore(self, snap: tuple) -> None:
        state, self.permutation, self.position = snap
        self.rng.bit_generator.state = state

    def _next_epoch(self) -> np.ndarray:
        self.permutation = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        self.position = 0
        return self.permutation

    def take(self, updates: int) -> Batches:
        """The next ``updates`` batches."""
        pieces, bounds, total = [], [0], 0
        left = updates
        while left:
            perm = self.permutation
            if perm is None or self.position >= self.n:
                perm = self._next_epoch()
            starts = np.arange(self.position, self.n, self.batch_size)[:left]
            stops = np.minimum(starts + self.batch_size, self.n)
            stop = int(stops[-1])
            pieces.append(perm[self.position:stop])
            bounds.extend((total + stops - self.position).tolist())
            total += stop - self.position
            self.position = stop
            left -= starts.size
        order = np.concatenate(pieces).astype(np.int64, copy=False) if pieces else np.empty(0, np.int64)
        return Batches(order, np.asarray(bounds, np.int64), min(self.batch_size, self.n))
