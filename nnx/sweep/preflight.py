"""Checks before the first job starts, so a sweep that cannot run fails before any work.

The memory check runs where the jobs run (a local worker, or a Dask worker), on
the backend each job will use there: ``auto`` is resolved on the workers'
machine, and a GPU's free memory is read on the GPU.
"""
from __future__ import annotations

import importlib.util

from ..backends import AUTO, available_backends, use_backend
from ..errors import BackendUnavailableError, OutOfMemoryError, format_bytes
from ..network import Network
from .config import JobConfig

ADVICE = ("Nothing was run. Drop these configurations, or use --dtype float32 or fewer --samples, or run them "
          "where there is more memory (another --backend, a bigger machine, a Dask cluster).")


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


def memory_needs(jobs: list[tuple[str, str, Network, int, int | None, int]]) -> dict[str, dict]:
    """For each (key, backend, network, training samples, batch size, optimiser slots): the backend
    that will run it, its device, the bytes the fit needs and the bytes free there, and
    ``nnx.memory.check_fit``'s refusal if any.

    A module-level function of plain values: executors run it on their workers.
    """
    from .. import memory

    needs = {}
    for key, backend_name, net, n_samples, batch_size, n_slots in jobs:
        with use_backend(backend_name) as backend:
            try:
                memory.check_fit(backend, net, n_samples, batch_size=batch_size, n_slots=n_slots)
                device = None
            except OutOfMemoryError as exc:
                device = exc.device
            needs[key] = {"backend": backend.name, "need": backend.fit_bytes(net, n_samples, batch_size, n_slots),
                          "available": memory.available_bytes(backend), "refused_on": device}
    return needs


class ConfigurationsTooLargeError(OutOfMemoryError):
    """Configurations of a sweep that cannot fit on their device; no job was started."""

    def __init__(self, refused: list[tuple[str, dict]]):
        lines = [f"  {label}: needs {format_bytes(n['need'])} of {n['refused_on']}, "
                 f"{format_bytes(n['available'])} available (backend {n['backend']})" for label, n in refused]
        largest = max((n for _, n in refused), key=lambda n: n["need"])
        self.needed, self.available, self.refused = largest["need"], largest["available"], refused
        MemoryError.__init__(self, f"{len(refused)} configuration(s) of this sweep cannot fit in memory:\n"
                                   + "\n".join(lines) + f"\n{ADVICE}")


def refuse_too_large(needs: dict[str, dict], labels: dict[str, str]) -> None:
    """Raise ``ConfigurationsTooLargeError`` naming every configuration the check refused."""
    refused = [(labels[key], n) for key, n in needs.items() if n["refused_on"] is not None]
    if refused:
        raise ConfigurationsTooLargeError(refused)
