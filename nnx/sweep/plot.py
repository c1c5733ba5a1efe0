"""The sweep's figures: tutorial 003's grid of decision boundaries, and metrics against hidden size.

matplotlib is imported here only, when a figure is asked for; the figures are
plain ``matplotlib.figure.Figure`` objects (no pyplot, no global backend
switched) and are written atomically like every file nnx writes.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..backends import use_backend
from ..fileio import atomic_write
from .job import OK
from .table import settings_label

INSTALL_HINT = "pip install 'nnx[plot]'"
# Tutorial 003's plot_decision_boundary: a 0.01 grid over the data +-0.5; coarser when that would
# be more than MAX_GRID points a side, and predicted in chunks so wide networks stay in memory.
GRID_STEP, GRID_MARGIN, MAX_GRID = 0.01, 0.5, 400
CHUNK_ELEMENTS = 1 << 22


def require_matplotlib():
    """matplotlib, or an error saying how to install it (checked before any job starts)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(f"plots need matplotlib, which is not installed: {INSTALL_HINT}") from exc
    return matplotlib


def check_path(path: str | Path) -> Path:
    """A figure path whose format matplotlib writes (checked before any job starts)."""
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(f"cannot draw {path}: the file name must end in one of "
                         f"{', '.join('.' + f for f in sorted(supported))} (the format comes from it)")
    return path


def panel_title(record: dict, varying: list[str]) -> str:
    """The tutorial's titles ("Logistic Regression", "Hidden Layer size 3"), plus what else varies."""
    title = "Logistic Regression" if record["hidden"] == 0 else f"Hidden Layer size {record['hidden']}"
    settings = settings_label(record, varying)
    if settings:
        title += f" ({settings})"
    if record["status"] != OK:
        title += f" [{record['status']}]"
    return title


def _grid(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = X.min(axis=0) - GRID_MARGIN, X.max(axis=0) + GRID_MARGIN
    step = max(GRID_STEP, float((hi - lo).max()) / MAX_GRID)
    return np.meshgrid(np.arange(lo[0], hi[0], step), np.arange(lo[1], hi[1], step))


def _predict(model, points: np.ndarray) -> np.ndarray:
    width = max(model.layer_sizes)
    rows = max(1, CHUNK_ELEMENTS // width)
    with use_backend("numpy"):
        return np.concatenate([model.predict(points[i:i + rows]) for i in range(0, len(points), rows)])


def check_plottable(datasets) -> None:
    """Decision boundaries are drawn in the plane: refuse other data before any job starts."""
    for ds in datasets:
        if ds.n_features != 2:
            raise ValueError(f"the decision-boundary plot needs 2 features; {ds.spec.label} has {ds.n_features}. "
                             "Use --plot-metrics for data of other widths.")


def decision_boundaries(records: list[dict], models: dict, datasets: dict, varying: list[str]):
    """One panel per configuration: the predicted class over the plane, the data coloured by class."""
    matplotlib = require_matplotlib()
    from matplotlib.figure import Figure

    check_plottable(datasets[r["data_sha256"]] for r in records)
    cmap = matplotlib.colormaps["Spectral"]
    ncols = 1 if len(records) == 1 else 2
    nrows = math.ceil(len(records) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.2 * nrows), layout="constrained")
    for i, record in enumerate(records):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_title(panel_title(record, varying), fontsize=9)
        data = datasets[record["data_sha256"]]
        model = models.get(record["key"])
        if model is not None and record["status"] == OK:
            xx, yy = _grid(data.X)
            Z = _predict(model, np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
            ax.contourf(xx, yy, Z, cmap=cmap, levels=np.arange(data.n_classes + 1) - 0.5, vmin=0,
                        vmax=max(1, data.n_classes - 1), alpha=0.55)
        ax.scatter(data.X[:, 0], data.X[:, 1], c=data.y, cmap=cmap, s=10, edgecolors="k", linewidths=0.2,
                   vmin=0, vmax=max(1, data.n_classes - 1))
        ax.tick_params(labelsize=7)
    return fig


def metrics(records: list[dict], varying: list[str]):
    """Accuracy (train, and test when held out) and final loss against hidden size, a line per setting."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 3.6), layout="constrained")
    acc_ax, loss_ax = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(settings_label(record, varying), []).append(record)
    for n, (label, group) in enumerate(groups.items()):
        group = sorted((r for r in group if r["status"] == OK), key=lambda r: r["hidden"])
        hidden = [r["hidden"] for r in group]
        colour = f"C{n % 10}"
        name = label or "train"
        acc_ax.plot(hidden, [100 * r["train_accuracy"] for r in group], "o-", color=colour, label=name)
        if any(r["test_accuracy"] is not None for r in group):
            acc_ax.plot(hidden, [100 * r["test_accuracy"] for r in group], "s--", color=colour,
                        label=f"{label} (test)" if label else "test")
        loss_ax.plot(hidden, [r["loss"] for r in group], "o-", color=colour, label=name)
    ticks = sorted({r["hidden"] for r in records})
    for ax, ylabel in ((acc_ax, "accuracy (%)"), (loss_ax, "final loss (data + L2, per sample)")):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.tick_params(labelsize=7)
        ax.set_xlabel("hidden layer size (0: logistic regression)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    acc_ax.set_title("Accuracy against hidden size")
    loss_ax.set_title("Loss against hidden size")
    return fig


def save(fig, path: str | Path, dpi: int = 80) -> Path:
    """Write the figure (format from the file's suffix: png, pdf, svg...) atomically."""
    path = check_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format=fmt, dpi=dpi)
    return path
