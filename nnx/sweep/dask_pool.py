"""The Dask executor: the jobs on a Dask distributed cluster.

With an address it connects to a running scheduler (``dask scheduler`` and
``dask worker`` on the machines); without one it starts a ``LocalCluster`` of
spawned worker processes with the same thread caps as the local executor. Jobs
ask for ``resources={"GPU": 1}`` when the cluster declares GPUs, so a GPU runs
one job at a time. Dask itself retries a job whose worker died, on another
worker, up to the scheduler's ``allowed-failures`` (set to nnx's two retries for
the clusters nnx starts), then reports it ``KilledWorker``: nnx records it failed.
"""
from __future__ import annotations

import logging
import os

from .executor import (RETRIES, Executor, JobFunction, ResultHandler, SchedulerUnavailableError, Task,
                       default_workers, thread_caps)
from .job import failed_record

INSTALL_HINT = "pip install 'nnx[dask]'"
CONNECT_TIMEOUT = "15s"
GPU_BACKENDS = ("cupy", "auto")


def require_distributed():
    """Dask distributed, or a clear error saying how to install it (checked before any work)."""
    try:
        import distributed
    except ImportError as exc:
        raise SchedulerUnavailableError(
            f"--scheduler dask needs Dask distributed, which is not installed: {INSTALL_HINT} "
            f"(or pip install 'dask[distributed]'). The local scheduler needs nothing more. ({exc})") from exc
    return distributed


class DaskPool(Executor):
    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None, threads_per_worker: int = 1,
                 retries: int = RETRIES):
        require_distributed()
        self.address = address
        self.local = address is None
        self.threads_per_worker = threads_per_worker
        self.workers = workers or default_workers(threads_per_worker)
        self.retries = retries
        self.client = None
        self.cluster = None
        self.gpus = 0
        self._saved_environ: dict[str, str | None] = {}

    def start(self, tasks: list[Task] | None = None) -> None:
        if self.client is not None:
            return
        import dask
        from distributed import Client, LocalCluster

        if self.address is not None:
            try:
                self.client = Client(self.address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as exc:
                raise SchedulerUnavailableError(
                    f"cannot reach the Dask scheduler at {self.address} ({exc}). Start one there with "
                    f"`dask scheduler` and its workers with `dask worker {self.address} --nthreads 1`") from exc
        else:
            caps = thread_caps(self.threads_per_worker)
            # The nanny puts these into its own process's environment before spawning each worker
            # (NumPy and Numba read them at import); remember ours to put back on close.
            self._saved_environ = {name: os.environ.get(name) for name in caps}
            pre_spawn = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), **caps}
            # Saturation 1.0: a worker holds only the job it runs, so when it dies no queued job is
            # blamed (Dask counts a death against every job assigned to the worker).
            with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn,
                                  "distributed.scheduler.worker-saturation": 1.0}):
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=None,
                                            silence_logs=logging.ERROR,
                                            scheduler_kwargs={"allowed_failures": self.retries})
            self.client = Client(self.cluster)
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        self.workers = len(workers) or self.workers
        self.gpus = int(sum(w.get("resources", {}).get("GPU", 0) for w in workers))

    def describe(self) -> str:
        where = f"scheduler {self.address}" if self.address else "a LocalCluster"
        gpus = f", {self.gpus} GPU(s) declared" if self.gpus else ""
        return f"dask: {where}, {self.workers} worker(s) x {self.threads_per_worker} thread(s){gpus}"

    def _resources(self, task: Task) -> dict | None:
        return {"GPU": 1} if self.gpus and task.config.backend in GPU_BACKENDS else None

    def call(self, fn, *args):
        self.start()
        return self.client.submit(fn, *args, pure=False, resources={"GPU": 1} if self.gpus else None).result()

    def run(self, tasks: list[Task], job: JobFunction, on_result: ResultHandler) -> None:
        from distributed import as_completed

        self.start(tasks)
        queue = sorted(tasks, key=lambda t: -t.cost)  # the largest jobs first
        futures: dict = {}

        def submit_more(done) -> None:
            # Only as many jobs in flight as the cluster has threads, each carrying its data (no shared
            # dependency to draw them to one worker): Dask blames a worker's death on every job
            # assigned to it, so no job may wait behind another on a worker that might die.
            while queue and len(futures) < max(1, sum(self.client.nthreads().values())):
                task = queue.pop(0)
                future = self.client.submit(job, task.config, task.data, task.keep_model,
                                            key=f"nnx-sweep-{task.key}", resources=self._resources(task),
                                            retries=0)
                futures[future] = task
                done.add(future)

        pending = as_completed()
        try:
            submit_more(pending)
            for future in pending:
                task = futures.pop(future)
                on_result(task, self._result(task, future))
                future.release()
                submit_more(pending)
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def _result(self, task: Task, future) -> dict:
        if future.status == "finished":
            result = future.result()
            result["record"]["attempts"] = 1
            return result
        exc = future.exception()
        if type(exc).__name__ == "KilledWorker":
            attempts = getattr(exc, "allowed_failures", self.retries) + 1
            message = f"the Dask worker running this job died, on each of {attempts} attempts ({exc})"
        elif exc is None:
            attempts, message = 1, f"Dask reported the job {future.status}"
        else:
            attempts, message = 1, f"{type(exc).__name__}: {exc}"
        return {"record": failed_record(task.config, message, attempts), "model": None}

    def close(self) -> None:
        client, cluster, self.client, self.cluster = self.client, self.cluster, None, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ = {}
