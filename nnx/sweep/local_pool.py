"""The local executor: a pool of spawned worker processes on this machine.

Why a small pool of its own rather than ``concurrent.futures``: a worker that
dies (a segfault, the OOM killer, ``os._exit``) breaks a ``ProcessPoolExecutor``
as a whole and does not say which job it was running. Here each worker has its
own pipe, so the job a dead worker held is known and retried on a fresh worker.

Workers are started with ``spawn`` (CUDA cannot be re-initialised in a forked
process) with the thread caps in their environment from the start, load the
backends the sweep uses while the parent still plans, and ignore Ctrl-C: the
parent decides what stops.
"""
from __future__ import annotations

import multiprocessing
import signal
from collections import Counter, deque
from multiprocessing.connection import wait

from ..memory import host_available_bytes
from .executor import RETRIES, Executor, JobFunction, ResultHandler, Task, default_workers, environment, thread_caps
from .job import failed_record

_STOP_SECONDS = 5.0


def _load_backends(names: tuple[str, ...]) -> None:
    """Import the backends now (Numba's import alone takes a third of a second), not in the first job."""
    from ..backends import use_backend

    for name in names:
        try:
            with use_backend(name):
                pass
        except Exception:  # noqa: BLE001 - the job itself reports an unusable backend
            pass


def serve(conn, backends: tuple[str, ...]) -> None:
    """A worker's loop: receive (job, args), send back the job's result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _load_backends(backends)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        job, args = message
        try:
            result = job(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as a failed job
            result = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            conn.send(result)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            conn.send({"error": f"the result could not be sent back ({type(exc).__name__}: {exc})"})


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _Worker:
    def __init__(self, context, caps: dict[str, str], backends: tuple[str, ...], number: int):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve, args=(child, backends), name=f"nnx-sweep-worker-{number}",
                                       daemon=True)
        with environment(caps):
            self.process.start()
        child.close()
        self.task: Task | None = None

    def stop(self, graceful: bool) -> None:
        if graceful and self.process.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(_STOP_SECONDS)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(_STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class LocalPool(Executor):
    """``workers`` spawned processes, each capped at ``threads_per_worker`` threads.

    ``memory_budget`` (bytes; default: the host memory available when the run
    starts) holds back a CPU job while the CPU jobs running would need more
    than that together; a job is never held back when nothing else runs.
    GPU jobs run ``gpu_slots`` at a time (nnx's CuPy backend uses the current
    device), CPU jobs beside them as usual.
    """

    name = "local"
    local = True

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1, retries: int = RETRIES,
                 memory_budget: int | None = None, gpu_slots: int = 1):
        self.threads_per_worker = threads_per_worker
        self.workers = workers or default_workers(threads_per_worker)
        self.retries = retries
        self.memory_budget = memory_budget
        self.gpu_slots = gpu_slots
        self._context = multiprocessing.get_context("spawn")
        self._pool: list[_Worker] = []
        self._started = 0
        self._backends: tuple[str, ...] = ()

    def _spawn(self) -> _Worker:
        self._started += 1
        worker = _Worker(self._context, thread_caps(self.threads_per_worker), self._backends, self._started)
        self._pool.append(worker)
        return worker

    def start(self, tasks: list[Task]) -> None:
        self._backends = tuple(dict.fromkeys(t.config.backend for t in tasks))
        while len(self._pool) < min(self.workers, len(tasks)):
            self._spawn()

    def call(self, fn, *args):
        """Run ``fn(*args)`` in a worker (the first; started if need be) and return its result."""
        if not self._pool:
            self._spawn()
        worker = self._pool[0]
        worker.conn.send((fn, args))
        try:
            result = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(_STOP_SECONDS)
            raise RuntimeError(f"a sweep worker {_death(worker.process.exitcode)} while checking the "
                               "configurations before the first job") from None
        if isinstance(result, dict) and set(result) == {"error"}:
            raise RuntimeError(f"checking the configurations failed in a worker: {result['error']}")
        return result

    def _next(self, queue: deque, running: list[Task]) -> Task | None:
        """The largest queued task that fits beside the running ones (host memory, GPU slots)."""
        if not running:
            return queue.popleft()
        in_use = sum(t.memory for t in running if not t.gpu)
        gpus_busy = sum(t.gpu for t in running)
        for task in queue:
            if task.gpu and gpus_busy >= self.gpu_slots:
                continue
            if not task.gpu and self.memory_budget and in_use + task.memory > self.memory_budget:
                continue
            queue.remove(task)
            return task
        return None

    def run(self, tasks: list[Task], job: JobFunction, on_result: ResultHandler) -> None:
        queue = deque(sorted(tasks, key=lambda t: -t.cost))
        if self.memory_budget is None:
            self.memory_budget = host_available_bytes()
        deaths: Counter[str] = Counter()
        graceful = False
        try:
            self.start(tasks)
            while queue or any(w.task for w in self._pool):
                for worker in [w for w in self._pool if w.task is None and not w.process.is_alive()]:
                    self._pool.remove(worker)  # ended after handing over its last result
                    worker.stop(graceful=False)
                while queue and len(self._pool) < min(self.workers, len(queue)):
                    self._spawn()
                for worker in self._pool:
                    if worker.task is None and queue:
                        task = self._next(queue, [w.task for w in self._pool if w.task])
                        if task is None:
                            break
                        worker.task = task
                        worker.conn.send((job, task.args()))
                busy = [w for w in self._pool if w.task is not None]
                ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
                for worker in busy:
                    if worker.conn in ready:
                        try:
                            result = worker.conn.recv()
                        except (EOFError, OSError):
                            result = None  # died mid-send: handled below as a death
                        if result is not None:
                            task, worker.task = worker.task, None
                            self._deliver(task, result, deaths[task.key], on_result)
                            continue
                    if worker.process.sentinel in ready or not worker.process.is_alive():
                        worker.process.join(_STOP_SECONDS)
                        task, worker.task = worker.task, None
                        deaths[task.key] += 1
                        self._pool.remove(worker)
                        worker.stop(graceful=False)
                        if deaths[task.key] <= self.retries:
                            queue.appendleft(task)
                        else:
                            message = (f"the worker process running this job {_death(worker.process.exitcode)}, "
                                       f"on each of {deaths[task.key]} attempts")
                            on_result(task, {"record": failed_record(task.config, message, deaths[task.key]),
                                             "model": None})
            graceful = True
        finally:
            self.close(graceful)

    @staticmethod
    def _deliver(task: Task, result: dict, deaths: int, on_result: ResultHandler) -> None:
        if "error" in result:
            result = {"record": failed_record(task.config, result["error"], deaths + 1), "model": None}
        else:
            result["record"]["attempts"] = deaths + 1
        on_result(task, result)

    def close(self, graceful: bool = False) -> None:
        pool, self._pool = self._pool, []
        for worker in pool:
            worker.stop(graceful)
