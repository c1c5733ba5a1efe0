"""Sweeps: many small fits from one command, on this machine or a Dask cluster.

``nnx.sweep(...)`` runs one (see ``nnx.sweep.api.sweep``); ``nnx sweep`` is the
command. The package is also callable, so ``nnx.sweep(...)`` is the function
while ``nnx.sweep.<module>`` stays reachable:

* ``config``: a job's settings, canonical JSON and SHA-256 key;
* ``axes``: the settings as lists, the sweep their product;
* ``data``: moons, spirals, xor or a CSV file, loaded once and hashed;
* ``job``: the job function that fits one configuration;
* ``executor`` / ``local_pool`` / ``dask_pool``: where jobs run;
* ``preflight``: checks and kernel warm-up before the first job;
* ``store``: one JSON per job, models beside them, the summary;
* ``runner``: the whole sweep; ``records``: what it returns;
* ``table`` / ``plot``: the printed table and the figures;
* ``command``: ``nnx sweep``.

Importing this package imports neither Dask nor matplotlib nor pandas.
"""
from __future__ import annotations

import sys
import types

from .api import make_executor, sweep
from .executor import SchedulerUnavailableError
from .records import SweepRecords
from .runner import SweepInterrupted


class _CallableModule(types.ModuleType):
    """``nnx.sweep(...)`` calls ``sweep``; attribute access works as on any module."""

    def __call__(self, *args, **kwargs) -> SweepRecords:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["SchedulerUnavailableError", "SweepInterrupted", "SweepRecords", "make_executor", "sweep"]
