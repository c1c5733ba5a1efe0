"""The NumPy backend: the base reference math on ``numpy``, always available."""
from __future__ import annotations

import numpy as np

from .base import Backend


class NumpyBackend(Backend):
    name = "numpy"
    xp = np

    def quiet_floating_point(self):
        return np.errstate(all="ignore")


def check() -> None:
    """NumPy is a core dependency, so this backend is always usable."""


def create() -> Backend:
    return NumpyBackend()
