"""Checks before the first job starts, so a sweep that cannot run fails before any work."""
from __future__ import annotations

from ..backends import AUTO, available_backends
from ..errors import BackendUnavailableError
from .config import JobConfig


def check_backends(configs: list[JobConfig]) -> None:
    """An explicitly named backend that cannot run here is an error before any job starts."""
    status = available_backends()
    for name in dict.fromkeys(c.backend for c in configs):
        if name != AUTO and status[name] is not None:
            raise BackendUnavailableError(f"--backend {name} cannot run here: {status[name]}")
