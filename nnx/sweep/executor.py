"""The one small interface every sweep executor implements, and what they share.

An executor takes tasks (a configuration, its data, whether to return the
model), runs a module-level job function on each somewhere, and hands every
result back to the calling thread as it arrives. A worker that dies mid-job is
retried ``retries`` times and then reported as a failed record; the job's own
failures (a diverged fit, a bad setting) come back as records and are not retried.
"""
from __future__ import annotations

import abc
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..bench.machine import THREAD_ENV_VARS, usable_cores
from .config import JobConfig
from .data import Dataset

# A worker that dies is retried this many times before its job is recorded as failed.
RETRIES = 2

JobFunction = Callable[[JobConfig, Dataset, bool], dict]
ResultHandler = Callable[["Task", dict], None]


class SchedulerUnavailableError(RuntimeError):
    """The chosen scheduler cannot run here (Dask not installed, scheduler unreachable)."""


@dataclass(eq=False)
class Task:
    """One job to run: its configuration, its data and what to send back."""

    config: JobConfig
    data: Dataset
    keep_model: bool
    cost: float = 0.0      # relative work, so the largest jobs start first
    memory: int = 0        # bytes the fit needs on its device (0: not estimated)
    gpu: bool = False      # runs on the GPU (cupy, or auto where a GPU works)

    @property
    def key(self) -> str:
        return self.config.key

    def args(self) -> tuple:
        return self.config, self.data, self.keep_model


def default_workers(threads_per_worker: int) -> int:
    return max(1, usable_cores() // threads_per_worker)


def thread_caps(threads: int) -> dict[str, str]:
    """Environment that holds BLAS, OpenMP and Numba to ``threads`` threads in a fresh process.

    These are read when NumPy and Numba load, so they must be in the worker's
    environment from its start, not set by the worker itself.
    """
    return {name: str(threads) for name in THREAD_ENV_VARS}


_ENVIRONMENT_LOCK = threading.Lock()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for processes started inside the block, then put them back.

    A spawned process inherits the environment at its start, before it imports
    anything; this process has loaded its libraries already and is unaffected.
    """
    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


class Executor(abc.ABC):
    name: str = ""
    workers: int = 1
    threads_per_worker: int = 1
    # True when the jobs run on this machine (the memory check and kernel warm-up then run here).
    local: bool = True

    def start(self, tasks: list[Task]) -> None:
        """Acquire the workers for ``tasks``, early, so they load while the sweep is checked."""

    @abc.abstractmethod
    def run(self, tasks: list[Task], job: JobFunction, on_result: ResultHandler) -> None:
        """Run every task; call ``on_result(task, {"record": ..., "model": ...})`` here as each ends.

        ``KeyboardInterrupt`` stops scheduling at once; results already handed
        over stay handed over.
        """

    def call(self, fn: Callable, *args):
        """Run a small function where the jobs run (the memory check needs the workers' devices)."""
        return fn(*args)

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def describe(self) -> str:
        return f"{self.name}: {self.workers} worker(s) x {self.threads_per_worker} thread(s)"

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
