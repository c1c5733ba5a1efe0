"""The `nnx` command as a user runs it: the main job, the presets, and clear failures."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import nnx
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
