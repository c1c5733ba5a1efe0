"""The `nnx` command as a user runs it: the main job, the presets, and clear failures."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nnx
import nnx.cli
import nnx.presets
from nnx.bench.tutorial_code import moons_tutorial


def run_nnx(*args: str, backend: str | None = "numpy") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    if backend is not None:
        env["NNX_BACKEND"] = backend
    return subprocess.run([sys.executable, "-m", "nnx", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_plain_nnx_runs_the_tutorial_003_training():
    done = run_nnx()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "tutorial 003" in out and "network 2-3-2 (tanh/softmax, float64), 200 samples" in out
    assert "backend: numpy (from NNX_BACKEND=numpy)" in out
    losses = [float(v) for v in re.findall(r"Loss after pass \d+: ([0-9.]+)", out)]
    passes = [int(v) for v in re.findall(r"Loss after pass (\d+):", out)]
    assert passes == list(range(0, 20_001, 1000))
    # The period-2 oscillation the tutorial settles into (printed to 6 decimals).
    assert min(abs(losses[-1] - 0.0707579), abs(losses[-1] - 0.0713158)) < 2e-6
    accuracy = float(re.search(r"final training accuracy: ([0-9.]+)%", out).group(1)) / 100
    X, y = nnx.datasets.moons(200, noise=0.2, seed=0)
    reference = moons_tutorial(X, y, hidden=3, passes=20_000, lr=0.01, l2=0.01)
    predicted = np.argmax(np.tanh(X @ reference["W1"] + reference["b1"]) @ reference["W2"] + reference["b2"], axis=1)
    assert accuracy == pytest.approx(np.mean(predicted == y), abs=1e-12)
    assert re.search(r"training: 20000 passes in [0-9.]+ s = [0-9,]+ passes/s on numpy", out)
    assert "compile:" in out


def test_train_xor_prints_the_truth_table_and_saves(tmp_path):
    path = tmp_path / "xor.npz"
    done = run_nnx("train", "--preset", "xor", "--passes", "5000", "--save", str(path))
    assert done.returncode == 0, done.stderr
    assert "final training accuracy: 100.00%" in done.stdout
    model = nnx.load(path)
    X, _ = nnx.datasets.xor()
    for (a, b), p in zip(X.astype(int), model.predict_proba(X)[:, 0]):
        line = re.search(rf"\({a} \^ {b}\) = ([0-9.e-]+)", done.stdout)
        assert line and float(line.group(1)) == pytest.approx(p, rel=1e-12)


def test_relu_preset_prints_the_clipped_loss():
    done = run_nnx("train", "--preset", "relu", "--passes", "200")
    assert done.returncode == 0, done.stderr
    assert re.findall(r"Epoch (\d+), Loss: [0-9.]+", done.stdout) == ["100", "200"]


def test_auto_says_what_it_picked_and_why():
    done = run_nnx("backends", backend=None)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^numpy  available$", done.stdout, re.M)
    assert "active: auto:" in done.stdout


@pytest.mark.parametrize("args, message", [
    (("train", "--backend", "numpyy"), "Unknown backend 'numpyy'"),
    (("train", "--lr", "-1"), "lr must be a positive finite number"),
    (("train", "--passes", "-5"), "passes must be an integer >= 0"),
])
def test_bad_arguments_fail_with_a_clear_message(args, message):
    done = run_nnx(*args)
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr


def test_unavailable_backend_is_a_clear_error():
    reason = nnx.available_backends()["cupy"]
    if reason is None:
        pytest.skip("cupy works here")
    done = run_nnx("train", "--backend", "cupy")
    assert done.returncode == 2
    assert f"Backend 'cupy' is unavailable: {reason}" in done.stderr


# ---------------------------------------------------------------- in-process runs of `nnx`
@pytest.fixture
def cli(monkeypatch, capsys):
    """Run `nnx ...` in this process (numpy backend): (exit code, stdout, stderr)."""
    monkeypatch.setenv("NNX_BACKEND", "numpy")

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = nnx.cli.main(list(args))
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    yield run
    nnx.set_backend(None)


INVALID_VALUES = [
    (("--hidden", "0"), "--hidden must be an integer >= 1; got 0"),
    (("--hidden", "-3"), "--hidden must be an integer >= 1; got -3"),
    (("--log-every", "0"), "--log-every must be an integer >= 1; got 0"),
    (("--passes", "-5"), "--passes must be an integer >= 0; got -5"),
    (("--passes", "0", "--lr", "nan"), "--lr must be a positive finite number; got nan"),
    (("--lr", "0"), "--lr must be a positive finite number; got 0.0"),
    (("--lr", "-1"), "--lr must be a positive finite number; got -1.0"),
    (("--lr", "inf"), "--lr must be a positive finite number; got inf"),
    (("--l2", "-0.5"), "--l2 must be a finite number >= 0; got -0.5"),
    (("--l2", "nan"), "--l2 must be a finite number >= 0; got nan"),
    (("--seed", "-1"), "--seed must be an integer from 0 to 2**32 - 1; got -1"),
    (("--passes", "5", "--epochs", "2"), "give --passes or --epochs, not both"),
    (("--epochs", "-1"), "--epochs must be an integer >= 0; got -1"),
    (("--batch-size", "0"), "--batch-size must be an integer >= 1; got 0"),
    (("--optimizer", "adan"), "unknown optimizer 'adan'; expected one of sgd, adam, adamw, rmsprop. Did you mean "
                               "'adam'?"),
    (("--optimizer", "adam:lr=0.1", "--lr", "0.2"), "the learning rate is given twice ('adam:lr=0.1' and lr 0.2); give it once"),
    (("--optimizer", "sgd:nesterov=True"), "SGD nesterov=True needs momentum > 0 and dampening=0 (as in PyTorch)"),
    (("--schedule", "cosine:T_max=0"), "Cosine T_max must be a positive integer; got 0"),
    (("--schedule", "cosine:T_max"), "cannot read the settings of schedule 'cosine:T_max' (settings must be given "
                                     "as key=value); write them as cosine:key=value,key=value"),
    (("--save", "/nonexistent/dir/x.npz"),
     "cannot save to /nonexistent/dir/x.npz: the folder /nonexistent/dir does not exist; create it first"),
]


@pytest.mark.parametrize("args, message", INVALID_VALUES, ids=[" ".join(a) for a, _ in INVALID_VALUES])
def test_invalid_values_fail_before_any_work_identically_in_every_preset(cli, monkeypatch, args, message):
    def no_work(*_args, **_kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(nnx.backends, "get_backend", no_work)
    monkeypatch.setattr(nnx.backends, "set_backend", no_work)
    monkeypatch.setattr(nnx.cli, "MLP", no_work)
    errors = set()
    for preset in sorted(nnx.presets.PRESETS):
        code, out, err = cli("train", "--preset", preset, *args)
        assert (code, out) == (2, ""), (preset, out, err)
        errors.add(err)
    assert errors == {f"nnx: error: {message}\n"}


def test_arguments_are_checked_before_the_numba_kernels_compile(cli, monkeypatch):
    if nnx.available_backends()["numba"] is not None:
        pytest.skip("numba unavailable here")
    from nnx.backends.numba_backend import NumbaBackend

    def no_compile(*_args, **_kwargs):
        raise AssertionError("kernels compiled before the arguments were checked")

    monkeypatch.setattr(NumbaBackend, "warm_up", no_compile)
    for seam in ("train", "train_and_loss", "objective_value"):
        monkeypatch.setattr(NumbaBackend, seam, no_compile)
    for args in (("--lr", "0"), ("--hidden", "0"), ("--save", "/nonexistent/dir/m")):
        code, out, err = cli("train", "--backend", "numba", *args)
        assert code == 2 and out == "" and err.startswith("nnx: error: "), err


def test_save_prints_the_path_it_wrote(cli, tmp_path):
    code, out, err = cli("train", "--preset", "xor", "--passes", "10", "--save", str(tmp_path / "runsave"))
    assert code == 0, err
    assert f"saved to {tmp_path / 'runsave.npz'}\n" in out
    assert os.listdir(tmp_path) == ["runsave.npz"]
    assert nnx.load(tmp_path / "runsave").updates == 10


def test_a_failed_save_is_a_clear_error_and_keeps_the_old_file(cli, tmp_path, monkeypatch):
    path = tmp_path / "keep.npz"
    old = nnx.MLP([2, 2, 1], hidden="sigmoid", output="sigmoid", init="uniform", seed=1)
    old.save(path)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", disk_full)
    code, out, err = cli("train", "--preset", "xor", "--passes", "10", "--save", str(path))
    monkeypatch.undo()
    assert code == 1 and err == "nnx: error: [Errno 28] No space left on device\n"
    assert "final training accuracy" in out
    assert np.array_equal(nnx.load(path).params[0][0], old.params[0][0]) and nnx.load(path).updates == 0


def test_hidden_units_option_is_used_as_given(cli):
    code, out, _ = cli("train", "--preset", "xor", "--hidden", "5", "--passes", "1")
    assert code == 0 and "network 2-5-1 (sigmoid/sigmoid" in out


def test_train_with_an_optimiser_minibatches_and_a_schedule():
    done = run_nnx("train", "--optimizer", "adam:lr=0.05", "--batch-size", "32", "--epochs", "30",
                   "--schedule", "cosine:T_max=210", "--log-every", "70")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert ("Adam(lr=0.05, betas=(0.9, 0.999), eps=1e-08, weight_decay=0.0, amsgrad=False), schedule "
            "Cosine(T_max=210, eta_min=0.0, per='update'), L2 0.01, sum reduction, batch 32, 30 epochs") in out
    assert [int(v) for v in re.findall(r"Loss after pass (\d+):", out)] == [0, 70, 140, 210]
    assert float(re.search(r"final training accuracy: ([0-9.]+)%", out).group(1)) > 85
