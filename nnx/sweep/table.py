"""The printed results: a progress line per job, the table, the failures spelled out."""
from __future__ import annotations

from ..bench.report import _format as format_table
from ..bench.report import si
from .job import DIVERGED, FAILED

# How an axis is labelled in table headers and panel titles.
AXIS_LABELS = {"dataset": "data", "samples": "samples", "noise": "noise", "data_seed": "data seed",
               "backend": "backend", "dtype": "dtype", "passes": "passes", "epochs": "epochs",
               "optimizer": "optimizer", "lr": "lr", "schedule": "schedule", "batch_size": "batch", "l2": "L2",
               "activation": "activation", "seed": "seed"}
# How a None value reads, per axis (full batch, no schedule).
NONE_LABELS = {"batch_size": "full", "schedule": "constant"}


def _value(record: dict, axis: str) -> str:
    value = record[axis]
    if value is None:
        return NONE_LABELS.get(axis, "-")
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_label(record: dict, varying: list[str]) -> str:
    """'lr 0.1, seed 2': the values of the axes that vary, to tell configurations apart."""
    return ", ".join(f"{AXIS_LABELS[a]} {_value(record, a)}" for a in varying)


def job_label(record: dict, varying: list[str]) -> str:
    settings = settings_label(record, varying)
    return f"hidden {record['hidden']}" + (f", {settings}" if settings else "")


def _percent(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _number(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def progress_line(record: dict, done: int, total: int, varying: list[str]) -> str:
    width = len(str(total))
    head = f"[{done:>{width}}/{total}] {job_label(record, varying)}: {record['status']}"
    if record["status"] == FAILED or record["status"] == DIVERGED:
        return f"{head} ({record['message']})"
    test = f", test {_percent(record['test_accuracy'])}" if record.get("test_accuracy") is not None else ""
    return (f"{head}, accuracy {_percent(record['train_accuracy'])}{test}, loss {record['loss']:.6g}, "
            f"{record['seconds']:.3f} s on {record['backend_used']}")


def table(records: list[dict], varying: list[str], *, markdown: bool = False) -> str:
    """One row per configuration, in sweep order."""
    with_test = any(r.get("test_size") is not None for r in records)
    header = ["hidden", *(AXIS_LABELS[a] for a in varying), "train acc", *(["test acc"] if with_test else []),
              "loss", "seconds", "passes/s", "backend", "status"]
    rows = []
    for r in records:
        rows.append([str(r["hidden"]), *(_value(r, a) for a in varying), _percent(r["train_accuracy"]),
                     *([_percent(r["test_accuracy"])] if with_test else []), _number(r["loss"], ".6g"),
                     _number(r["seconds"], ".3f"), "-" if not r["passes_per_s"] else si(r["passes_per_s"]),
                     r["backend_used"] or r["backend"], r["status"]])
    first_metric = 1 + len(varying)  # train acc, [test acc], loss, seconds, passes/s: right-aligned
    right = {0, *range(first_metric, first_metric + 4 + with_test)}
    return format_table(rows, header, right=right, markdown=markdown)


def problems(records: list[dict], varying: list[str]) -> list[str]:
    """A line for each configuration that diverged or failed, with its message."""
    return [f"{job_label(r, varying)}: {r['status']}: {r['message']}" for r in records
            if r["status"] in (DIVERGED, FAILED)]
