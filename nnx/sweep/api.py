"""``nnx.sweep(...)``: a sweep from Python, with the same settings as ``nnx sweep``."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .axes import Axes
from .executor import RETRIES, Executor, SchedulerUnavailableError
from .records import SweepRecords
from .runner import ProgressHandler, run_sweep

SCHEDULERS = ("local", "dask")


def make_executor(scheduler: str = "local", *, workers: int | None = None, threads_per_worker: int = 1,
                  address: str | None = None, retries: int = RETRIES) -> Executor:
    """The executor a scheduler name stands for (Dask's absence is reported here, before any work)."""
    from ..validation import check_choice, check_count

    check_choice(scheduler, SCHEDULERS, "scheduler")
    threads_per_worker = check_count(threads_per_worker, "threads_per_worker", minimum=1)
    if workers is not None:
        workers = check_count(workers, "workers", minimum=1)
    if scheduler == "local":
        if address is not None:
            raise ValueError("an address is for --scheduler dask (a Dask scheduler such as tcp://HOST:8786)")
        from .local_pool import LocalPool
        return LocalPool(workers, threads_per_worker, retries)
    from .dask_pool import DaskPool
    if address is not None and workers is not None:
        raise ValueError("--workers sizes the cluster nnx starts; with --address the cluster's own workers run "
                         "the jobs")
    return DaskPool(address, workers, threads_per_worker, retries)


def sweep(hidden: int | Sequence[int] | None = None, *, lr=None, l2=None, seed=None, dtype=None, backend=None,
          passes=None, epochs=None, batch_size=None, optimizer=None, schedule=None, activation=None,
          dataset=None, samples=None, noise=None, data_seed=None,
          test_size: float | int | None = None, reduction: str | None = None,
          out: str | Path | None = "nnx-sweep", save_models: bool = False, scheduler: str = "local",
          workers: int | None = None, threads_per_worker: int = 1, address: str | None = None,
          progress: ProgressHandler | None = None) -> SweepRecords:
    """Train one network per combination of the settings and return the result records.

    Every setting takes one value or a list; the sweep is their product. With no
    arguments it is tutorial 003's experiment: two moons (200 samples, noise 0.2,
    seed 0), hidden sizes 0 (no hidden layer), 1, 2, 3, 4, 5, 20 and 50, 20,000
    passes of gradient descent, lr 0.01, L2 0.01, summed gradients.

    ``optimizer`` takes ``nnx train``'s specs (``"adam"``, ``"sgd:momentum=0.9"``) or
    ``nnx.optim`` optimisers, None being plain gradient descent; a spec without an lr
    runs at each ``lr`` given (with no ``lr``: SGD at 0.01, the others at their own
    defaults). ``batch_size`` None (or ``"full"``) is full batch; ``epochs`` replaces
    ``passes``; ``schedule`` takes specs (``"cosine:T_max=2000"``) or ``nnx.optim``
    schedules, None being a constant lr.

    Results go to ``out`` (one JSON per job, ``summary.csv`` and ``summary.json``);
    a rerun with the same settings reuses finished jobs. ``out=None`` keeps them
    in memory only. ``scheduler`` is ``"local"`` (spawned processes) or ``"dask"``
    (``address`` of a running scheduler, else a LocalCluster). Ctrl-C raises
    ``SweepInterrupted`` (a ``KeyboardInterrupt``) after storing what finished.
    """
    axes = Axes.of(hidden=hidden, lr=lr, l2=l2, seed=seed, dtype=dtype, backend=backend, passes=passes,
                   epochs=epochs, batch_size=batch_size, optimizer=optimizer, schedule=schedule,
                   activation=activation, dataset=dataset, samples=samples, noise=noise, data_seed=data_seed,
                   test_size=test_size, reduction=reduction)
    executor = make_executor(scheduler, workers=workers, threads_per_worker=threads_per_worker, address=address)
    return run_sweep(axes, executor, out=out, keep_models=save_models, progress=progress)


__all__ = ["SCHEDULERS", "SchedulerUnavailableError", "make_executor", "sweep"]
