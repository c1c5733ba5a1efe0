"""``nnx sweep`` and ``nnx.sweep`` as a user runs them: table, files, figures, exit codes, errors."""
from __future__ import annotations

import csv
import functools
import json
import re
import subprocess
import sys
import warnings

import pytest

import nnx
from nnx.cli import build_parser, main
from nnx.sweep import command
from nnx.sweep.runner import run_sweep
from test_sweep_local import MARKERS, SLOW, crashing_job, noted_job


def test_sweep_command_prints_the_table_and_writes_results_and_figures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(["sweep", "--hidden", "0,3", "--lr", "0.01,0.02", "--passes", "200", "--backend", "numpy",
                 "--test-size", "50", "--out", str(out), "--plot", str(tmp_path / "grid.png"),
                 "--plot-metrics", str(tmp_path / "metrics.png")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    header, rule, *rows = captured.out.split("\n\n")[0].splitlines()
    assert header.split() == ["hidden", "lr", "train", "acc", "test", "acc", "loss", "seconds", "passes/s",
                              "backend", "status"]
    assert len(rows) == 4 and all(row.split()[-2:] == ["numpy", "ok"] for row in rows)
    summary = json.loads((out / "summary.json").read_text())["records"]
    for row, record in zip(rows, summary):
        cells = row.split()
        assert (int(cells[0]), float(cells[1])) == (record["hidden"], record["lr"])
        assert cells[2] == f"{100 * record['train_accuracy']:.2f}%"
        assert cells[3] == f"{100 * record['test_accuracy']:.2f}%"
    assert "4 configurations on moons (200 samples, 2 features, 2 classes)" in captured.err
    assert len(re.findall(r"^\[\d/4\] hidden \d, lr 0.0\d: ok, accuracy", captured.err, re.M)) == 4
    # --plot keeps the models: the figure can be drawn again from a rerun.
    assert len(list((out / "jobs").glob("*.npz"))) == 4
    for name in ("grid.png", "metrics.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_sweep_command_sweeps_optimisers_batch_sizes_epochs_and_schedules(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["sweep", "--hidden", "1", "3", "--optimizer", "sgd", "adam", "sgd:momentum=0.9",
                 "--batch-size", "full,32", "--epochs", "2", "--schedule", "cosine:T_max=14", "--backend", "numpy",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    header, rule, *rows = captured.out.split("\n\n")[0].splitlines()
    assert header.split() == ["hidden", "optimizer", "lr", "batch", "train", "acc", "loss", "seconds", "passes/s",
                              "backend", "status"]
    # The product in order: optimizer (with its lr), batch size, hidden size fastest.
    assert [row.split()[:4] for row in rows] == [[h, o, lr, b] for o, lr in (("sgd", "0.01"), ("adam", "0.001"),
                                                                             ("sgd:momentum=0.9", "0.01"))
                                                 for b in ("full", "32") for h in ("1", "3")]
    assert len(re.findall(r"^\[\s*\d+/12\] hidden \d, optimizer \S+, lr 0.0\d+, batch (full|32): ok", captured.err,
                          re.M)) == 12
    with open(out / "summary.csv", newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert [(r["optimizer"], r["batch_size"], r["epochs"], r["passes"], r["schedule"], r["passes_done"])
            for r in summary[:4]] == [("sgd", "", "2", "", "cosine:T_max=14", "2")] * 2 + \
        [("sgd", "32", "2", "", "cosine:T_max=14", "14")] * 2  # ceil(200 / 32) = 7 updates an epoch
    # The same command again finds every result.
    assert main(["sweep", "--hidden", "1,3", "--optimizer", "sgd", "adam", "sgd:momentum=0.9", "--batch-size",
                 "full", "32", "--epochs", "2", "--schedule", "cosine:T_max=14", "--backend", "numpy", "--out",
                 str(out)]) == 0
    assert "12 finished earlier" in capsys.readouterr().err


def test_axis_values_go_after_the_option_with_spaces_or_commas_and_gather_over_repeats():
    args = build_parser().parse_args(["sweep", "--hidden", "1", "3,5", "--hidden", "7", "--optimizer", "sgd",
                                      "adam:lr=0.01,amsgrad=True", "--batch-size", "full,32", "64", "--lr", "-1"])
    assert args.hidden == [1, 3, 5, 7] and args.batch_size == [None, 32, 64] and args.lr == [-1.0]
    assert args.optimizer == ["sgd", "adam:lr=0.01,amsgrad=True"]  # a spec's commas are its own


def test_failed_jobs_make_the_exit_status_non_zero(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(MARKERS, str(tmp_path))
    monkeypatch.setattr(command, "run_sweep", functools.partial(run_sweep, job=crashing_job))
    code = main(["sweep", "--hidden", "1,5", "--passes", "100", "--backend", "numpy", "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 1
    assert re.search(r"hidden 5: failed: the worker process running this job exited with code 3", captured.out)


def test_slower_paths_are_noted_once_under_the_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(command, "run_sweep", functools.partial(run_sweep, job=noted_job))
    with warnings.catch_warnings():
        warnings.simplefilter("error", nnx.PerformanceWarning)  # said as a note, not as a warning too
        code = main(["sweep", "--hidden", "1,2", "--passes", "20", "--backend", "numpy", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.count(f"note: {SLOW}\n") == 1
    with open(tmp_path / "summary.csv", newline="") as handle:
        assert [row["notes"] for row in csv.DictReader(handle)] == [SLOW, SLOW]


def test_diverged_jobs_are_results_not_failures(tmp_path, capsys):
    code = main(["sweep", "--hidden", "5", "--lr", "10000", "--passes", "200", "--backend", "numpy",
                 "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0
    assert re.search(r"hidden 5: diverged: the loss became non-finite at pass \d+", captured.out)


@pytest.mark.parametrize("args, message", [
    (["--hidden", "3,x"], "'x' is not an integer"),
    (["--lr", "-1"], "lr must be a positive finite number"),
    (["--backend", "numpi"], "Did you mean 'numpy'?"),
    (["--scheduler", "local", "--address", "tcp://h:8786"], "an address is for --scheduler dask"),
    (["--workers", "0"], "workers must be an integer >= 1"),
    (["--plot", "grid.txt2"], "must end in one of"),
    (["--dataset", "csv:/nonexistent/points.csv"], "cannot read the CSV file"),
    (["--optimizer", "sgd", "adma"], "unknown optimizer 'adma'; expected one of sgd, adam, adamw, rmsprop. "
                                     "Did you mean 'adam'?"),
    (["--optimizer", "adam:lr=0.01", "--lr", "0.1"], "the learning rate is given twice"),
    (["--schedule", "cosine:T_max=-3"], "Cosine T_max must be a positive integer"),
    (["--batch-size", "32", "x"], "'x' is not an integer or 'full'"),
    (["--batch-size", "500"], "batch size 500 is larger than the 200 training samples of moons"),
    (["--epochs", "5", "--passes", "10"], "give passes (updates) or epochs (passes over the data), not both"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
])
def test_unusable_options_fail_before_any_work(tmp_path, capsys, args, message):
    try:
        code = main(["sweep", *args, "--out", str(tmp_path / "out")])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dask_scheduler_without_dask_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    assert main(["sweep", "--scheduler", "dask", "--out", str(tmp_path)]) == 2
    assert "pip install 'nnx[dask]'" in capsys.readouterr().err


def test_python_api_returns_records_with_a_data_frame(tmp_path):
    records = nnx.sweep(hidden=[1, 2], passes=50, backend="numpy", out=None)
    assert isinstance(records, list) and [r["hidden"] for r in records] == [1, 2]
    assert records.out is None and records.summary is None
    pandas = pytest.importorskip("pandas")
    frame = records.to_frame()
    assert isinstance(frame, pandas.DataFrame) and list(frame["hidden"]) == [1, 2]
    assert list(frame["train_accuracy"]) == [r["train_accuracy"] for r in records]


def test_to_frame_without_pandas_says_how_to_install_it(monkeypatch):
    from nnx.sweep.records import SweepRecords

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="pip install pandas"):
        SweepRecords([{"hidden": 1}]).to_frame()


def test_nnx_sweep_is_the_function_and_the_package():
    import nnx.sweep.config

    assert callable(nnx.sweep) and nnx.sweep.config.TUTORIAL_HIDDEN == (0, 1, 2, 3, 4, 5, 20, 50)
    assert nnx.sweep.sweep.__doc__.startswith("Train one network per combination")


def test_import_nnx_imports_no_optional_dependency():
    """Neither ``import nnx``, nor the sweep package, nor the CLI pulls in dask, matplotlib or pandas."""
    code = ("import sys, nnx, nnx.sweep, nnx.cli; nnx.cli.build_parser(); "
            "heavy = [m for m in ('dask', 'distributed', 'matplotlib', 'pandas') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
