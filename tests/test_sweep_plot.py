"""The sweep's figures, checked through matplotlib's objects (not pixels)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import nnx
from nnx.sweep import plot
from nnx.sweep.axes import Axes
from nnx.sweep.local_pool import LocalPool
from nnx.sweep.runner import run_sweep
from test_sweep_local import small

pytest.importorskip("matplotlib", reason="the figures need matplotlib: pip install 'nnx[plot]'")
HIDDEN = [0, 1, 2, 3, 4, 5, 20, 50]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    axes = small(hidden=HIDDEN, test_size=0.25)
    return run_sweep(axes, LocalPool(2), out=tmp_path_factory.mktemp("plot"), keep_models=True), axes


def test_decision_boundary_grid_has_one_panel_per_configuration_with_the_tutorials_titles(swept):
    records, axes = swept
    fig = plot.decision_boundaries(records, records.models, records.datasets, axes.varying())
    assert [ax.get_title() for ax in fig.axes] == ["Logistic Regression"] + [f"Hidden Layer size {h}"
                                                                            for h in HIDDEN[1:]]
    X, y = nnx.datasets.moons(200, 0.2, 0)
    for ax, record in zip(fig.axes, records):
        filled, points = ax.collections
        # The data, every sample, coloured by its class.
        np.testing.assert_array_equal(points.get_offsets(), X)
        np.testing.assert_array_equal(points.get_array(), y)
        # The boundary: one filled region per class, each holding the samples the model puts in
        # that class (those not within a grid step of the boundary).
        model = records.models[record["key"]]
        proba = model.predict_proba(X)[:, 1]
        clear = np.abs(proba - 0.5) > 0.05
        regions = filled.get_paths()
        assert len(regions) == 2
        for label, region in enumerate(regions):
            wanted = clear & (model.predict(X) == label)
            assert region.contains_points(X[wanted]).all()
            assert not region.contains_points(X[clear & ~wanted]).any()


def test_figures_leave_pyplot_and_its_global_backend_alone(tmp_path):
    code = ("import sys; from nnx.sweep import plot; "
            "r = {'hidden': 1, 'status': 'ok', 'train_accuracy': 0.5, 'test_accuracy': None, 'loss': 0.3}; "
            f"plot.save(plot.metrics([r], []), {str(tmp_path / 'm.png')!r}); "
            "sys.exit('matplotlib.pyplot' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_titles_say_what_else_varies_and_what_failed():
    record = {"hidden": 3, "lr": 0.1, "seed": 2, "status": "diverged"}
    assert plot.panel_title(record, ["lr", "seed"]) == "Hidden Layer size 3 (lr 0.1, seed 2) [diverged]"
    assert plot.panel_title({"hidden": 0, "status": "ok"}, []) == "Logistic Regression"


def test_metrics_figure_plots_accuracy_and_loss_against_hidden_size(swept):
    records, axes = swept
    fig = plot.metrics(records, axes.varying())
    accuracy, loss = fig.axes
    train, test = accuracy.get_lines()
    np.testing.assert_array_equal(train.get_xdata(), HIDDEN)
    np.testing.assert_allclose(train.get_ydata(), [100 * r["train_accuracy"] for r in records])
    np.testing.assert_allclose(test.get_ydata(), [100 * r["test_accuracy"] for r in records])
    (line,) = loss.get_lines()
    np.testing.assert_allclose(line.get_ydata(), [r["loss"] for r in records])
    assert accuracy.get_xscale() == "symlog"


def test_metrics_figure_has_a_line_per_optimiser_and_batch_size():
    axes = Axes.of(backend="numpy", hidden=[1, 3, 5], optimizer=["sgd", "adam"], batch_size=[None, 32], epochs=2)
    records = run_sweep(axes, LocalPool(2))
    fig = plot.metrics(records, axes.varying())
    accuracy, loss = fig.axes
    series = {(o, lr, b): [r for r in records if (r["optimizer"], r["lr"], r["batch_size"]) == (o, lr, b)]
              for o, lr in (("sgd", 0.01), ("adam", 0.001)) for b in (None, 32)}
    labels = [f"optimizer {o}, lr {lr:g}, batch {b or 'full'}" for o, lr, b in series]
    assert [line.get_label() for line in loss.get_lines()] == labels
    assert [line.get_label() for line in accuracy.get_lines()] == labels
    for line, group in zip(loss.get_lines(), series.values()):
        np.testing.assert_array_equal(line.get_xdata(), [1, 3, 5])
        np.testing.assert_array_equal(line.get_ydata(), [r["loss"] for r in group])
    title = plot.panel_title(series["adam", 0.001, 32][1], axes.varying())
    assert title == "Hidden Layer size 3 (optimizer adam, lr 0.001, batch 32)"


def test_figures_are_written_atomically_in_the_format_of_their_name(swept, tmp_path):
    records, axes = swept
    path = plot.save(plot.metrics(records, axes.varying()), tmp_path / "m.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]
    with pytest.raises(ValueError, match="must end in one of"):
        plot.check_path(tmp_path / "m.xyz")


def test_decision_boundaries_need_two_features(tmp_path):
    path = tmp_path / "3d.csv"
    path.write_text("0,0,0,0\n1,1,1,1\n0,1,1,1\n1,0,0,0\n")
    from nnx.sweep.runner import plan
    from nnx.sweep.axes import Axes
    _, datasets = plan(Axes.of(dataset=f"csv:{path}"))
    with pytest.raises(ValueError, match="needs 2 features; csv:.*3d.csv has 3"):
        plot.check_plottable(datasets.values())


def test_import_without_matplotlib_explains(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RuntimeError, match=r"pip install 'nnx\[plot\]'"):
        plot.require_matplotlib()
