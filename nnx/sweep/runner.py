"""Running a sweep: plan the jobs, skip finished ones, check, run, store, summarise.

Everything that can be refused (settings, data, an unusable backend or
scheduler, a configuration too large for its device) is refused before the
first job starts. Results are stored as each job ends; the summary is written
at the end whatever happened, Ctrl-C included.
"""
from __future__ import annotations

import contextlib
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import PerformanceWarning
from ..training import ignores_ctrl_c
from . import data, preflight
from .axes import Axes
from .config import JobConfig
from .executor import Executor, JobFunction, Task
from .job import FAILED, network, optimizer_slots, run_job, total_updates, training_samples
from .records import SweepRecords
from .store import ResultStore, pending_record
from .table import job_label

ProgressHandler = Callable[[dict, int, int], None]
# Called once the sweep is planned, before any check or job: (configs, datasets by hash, reused count).
PlanHandler = Callable[[list[JobConfig], dict, int], None]


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; ``records`` holds every configuration, unfinished ones 'pending'."""

    def __init__(self, records: SweepRecords, resume: str):
        super().__init__(resume)
        self.records = records


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so a result is never stored without being counted (where
    Ctrl-C is not ignored altogether)."""
    if threading.current_thread() is not threading.main_thread() or ignores_ctrl_c():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def job_cost(config: JobConfig, dataset: data.Dataset) -> float:
    """Multiply-adds of one fit, near enough to start the largest jobs first."""
    sizes = config.layer_sizes(dataset.n_features, dataset.n_classes)
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    rows = training_samples(config, dataset)
    batch = rows if config.batch_size is None else min(config.batch_size, rows)
    return float(total_updates(config, rows)) * batch * weights


def notes(records) -> list[str]:
    """The distinct notes of slower paths in ``records`` (``PerformanceWarning``s from the fits)."""
    return list(dict.fromkeys(note for r in records for note in r.get("notes") or ()))


def plan(axes: Axes) -> tuple[list[JobConfig], dict[str, data.Dataset]]:
    """The sweep's configurations and its data sets by hash (each loaded once, here)."""
    by_spec = {spec: data.load(spec) for spec in axes.data_specs()}
    return axes.expand(by_spec), {ds.sha256: ds for ds in by_spec.values()}


def run_sweep(axes: Axes, executor: Executor, *, out: str | Path | None = None, keep_models: bool = False,
              progress: ProgressHandler | None = None, on_plan: PlanHandler | None = None,
              job: JobFunction = run_job) -> SweepRecords:
    """Run every configuration of ``axes`` not already finished in ``out``; return all records.

    ``keep_models`` stores each trained model beside its record (and keeps it in
    ``records.models``). ``on_plan`` sees the plan first and may refuse it by
    raising. ``job`` is the job function (module-level, so it can be sent to workers).
    """
    configs, datasets = plan(axes)
    varying = axes.varying()
    store = ResultStore(out) if out is not None else None
    results: dict[str, dict] = {}
    if store is not None:
        for config in configs:
            record = store.finished(config.key, need_model=keep_models)
            if record is not None:
                results[config.key] = record
    todo = [c for c in configs if c.key not in results]
    reused = len(results)
    if on_plan is not None:
        on_plan(configs, datasets, reused)
    if store is not None:
        store.prepare()
    models = {}
    if keep_models and store is not None:
        models = {key: store.load_model(key) for key in results}

    def finish() -> SweepRecords:
        records = SweepRecords(results.get(c.key) or pending_record(c.key, c.as_dict()) for c in configs)
        records.out = store.folder if store is not None else None
        records.reused = reused
        records.models = models
        records.datasets = datasets
        if store is not None:
            records.summary = store.write_summary(list(records))
        return records

    said: set[str] = set()

    def on_result(task: Task, result: dict) -> None:
        record = result["record"]
        for note in notes([record]):  # a slower path a worker took, said here once
            if note not in said:
                said.add(note)
                warnings.warn(note, PerformanceWarning, stacklevel=3)
        model = result.get("model") if record["status"] != FAILED else None
        with _interrupt_deferred():  # stored and counted, or neither
            if store is not None:
                store.save(record, model if keep_models else None)
            results[task.key] = record
            if keep_models and model is not None:
                models[task.key] = model
        if progress is not None:
            progress(record, len(results), len(configs))

    if todo:
        on_gpu = {}
        if executor.local:
            preflight.check_backends(todo)
            on_gpu = preflight.runs_on_gpu(todo)
        tasks = [Task(c, datasets[c.data_sha256], keep_models, cost=job_cost(c, datasets[c.data_sha256]),
                      gpu=on_gpu.get(c.key, False)) for c in todo]
        try:
            executor.start(tasks)
            needs = executor.call(preflight.memory_needs, [
                (t.key, t.config.backend, network(t.config, t.data), training_samples(t.config, t.data),
                 t.config.batch_size, optimizer_slots(t.config)) for t in tasks])
            preflight.refuse_too_large(needs, {t.key: job_label(t.config.as_dict(), varying) for t in tasks})
            for t in tasks:
                t.memory = needs[t.key]["need"]
            executor.run(tasks, job, on_result)
        except KeyboardInterrupt:
            records = finish()
            done = sum(1 for r in records if r["status"] != "pending")
            where = f"kept in {store.folder}" if store is not None else "kept in memory only (no output folder)"
            raise SweepInterrupted(records, f"sweep interrupted: {done} of {len(configs)} configurations finished, "
                                            f"{where}") from None
        finally:
            executor.close()
    return finish()
