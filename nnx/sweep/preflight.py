"""Checks before the first job starts, so a sweep that cannot run fails before any work."""
from __future__ import annotations

import importlib.util

from ..backends import AUTO, available_backends
from ..errors import BackendUnavailableError
from .config import JobConfig


def check_backends(configs: list[JobConfig]) -> None:
    """An explicitly named backend that cannot run here is an error before any job starts."""
    named = [name for name in dict.fromkeys(c.backend for c in configs) if name != AUTO]
    if not named:
        return  # auto always runs; not probing keeps Numba and CuPy out of this process
    status = available_backends()
    for name in named:
        if status[name] is not None:
            raise BackendUnavailableError(f"--backend {name} cannot run here: {status[name]}")


def runs_on_gpu(configs: list[JobConfig]) -> dict[str, bool]:
    """Which jobs will use the GPU here: cupy ones, and auto ones where CuPy works.

    CuPy is probed only when it is installed, so CPU-only machines pay nothing.
    """
    gpu_here = False
    if any(c.backend == AUTO for c in configs) and importlib.util.find_spec("cupy") is not None:
        gpu_here = available_backends()["cupy"] is None
    return {c.key: c.backend == "cupy" or (c.backend == AUTO and gpu_here) for c in configs}
