"""Ctrl-C: once stops at the next logging point, twice stops at once; the CLI keeps the model and exits 130.

The driver tests raise SIGINT from inside a fit (a callback at a logging
point, or the backend's loop mid-interval), so they run on every backend
without timing. The CLI tests send real signals to a running ``nnx train``.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import nnx

SETTINGS = dict(lr=0.05, l2=0.01, reduction="sum")


@pytest.fixture
def moons():
    return nnx.datasets.moons(80, noise=0.2, seed=4)


def reference(X, y, passes, log_every=100, sizes=(2, 5, 2)):
    """The same fit run to ``passes`` without interruption, with the same interval structure."""
    model = nnx.MLP(list(sizes), seed=1)
    if passes:
        model.fit(X, y, passes=passes, log_every=log_every, **SETTINGS)
    return model


def assert_same(model, other):
    assert model.updates == other.updates
    assert model.history == other.history
    for (W, b), (W0, b0) in zip(model.params, other.params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_one_ctrl_c_stops_at_the_next_logging_point_keeping_everything(backend, moons):
    X, y = moons
    model = nnx.MLP([2, 5, 2], seed=1)

    def press_ctrl_c_at_300(updates, loss):
        if updates == 300:
            signal.raise_signal(signal.SIGINT)

    model.fit(X, y, passes=100_000, log_every=100, callback=press_ctrl_c_at_300, **SETTINGS)
    assert model.interrupted and model.updates == 300
    assert list(model.history) == [0, 100, 200, 300]
    assert_same(model, reference(X, y, 300))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_process_that_ignores_ctrl_c_fits_to_the_end(backend, moons):
    """Started in the background by a script, a process ignores SIGINT: a fit keeps it ignored."""
    X, y = moons
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        model = nnx.MLP([2, 5, 2], seed=1)

        def press_ctrl_c_at_300(updates, loss):
            if updates == 300:
                signal.raise_signal(signal.SIGINT)

        model.fit(X, y, passes=500, log_every=100, callback=press_ctrl_c_at_300, **SETTINGS)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not model.interrupted and model.updates == 500
    assert_same(model, reference(X, y, 500))


def _press_in_interval(backend, monkeypatch, *, interval: int, presses: int):
    """Make the backend's loop press Ctrl-C ``presses`` times halfway through interval ``interval``
    (the driver runs each interval through ``train_and_loss``)."""
    real_train, real_train_and_loss = backend.train, backend.train_and_loss
    calls = []

    def train_and_loss(net, state, data, objective, optimizer, lrs, batches):
        passes = len(lrs)
        if passes == 0:  # the starting loss, not an interval
            return real_train_and_loss(net, state, data, objective, optimizer, lrs, batches)
        calls.append(passes)
        if len(calls) != interval:
            return real_train_and_loss(net, state, data, objective, optimizer, lrs, batches)
        real_train(net, state, data, objective, optimizer, lrs[:passes // 2], None)
        for _ in range(presses):
            signal.raise_signal(signal.SIGINT)
        return real_train_and_loss(net, state, data, objective, optimizer, lrs[passes // 2:], None)

    monkeypatch.setattr(backend, "train_and_loss", train_and_loss)
    return calls


def _no_op(updates, loss):
    """A callback: on_log then reads the model, so every backend runs a call per logging interval."""


def test_ctrl_c_inside_an_interval_finishes_that_interval(backend, moons, monkeypatch):
    X, y = moons
    model = nnx.MLP([2, 5, 2], seed=1)
    calls = _press_in_interval(backend, monkeypatch, interval=3, presses=1)
    model.fit(X, y, passes=100_000, log_every=100, callback=_no_op, **SETTINGS)
    monkeypatch.undo()
    assert len(calls) == 3 and model.interrupted and model.updates == 300
    assert_same(model, reference(X, y, 300))


def test_a_second_ctrl_c_stops_now_back_at_the_last_logging_point(backend, moons, monkeypatch):
    X, y = moons
    model = nnx.MLP([2, 5, 2], seed=1)
    calls = _press_in_interval(backend, monkeypatch, interval=3, presses=2)
    model.fit(X, y, passes=100_000, log_every=100, callback=_no_op, **SETTINGS)
    monkeypatch.undo()
    # the third interval's 50 passes done before the second Ctrl-C are discarded
    assert len(calls) == 3 and model.interrupted and model.updates == 200
    assert list(model.history) == [0, 100, 200]
    assert_same(model, reference(X, y, 200))
    # and training continues from there exactly as if never interrupted
    model.fit(X, y, passes=100, log_every=100, **SETTINGS)
    assert not model.interrupted
    assert_same(model, reference(X, y, 300))


def _fit_pressing_in_recording_call(backend, moons, monkeypatch, *, call: int, presses: int):
    """A long fit with Ctrl-C pressed ``presses`` times as the driver's recording call number
    ``call`` starts (backends that log several points per call); returns the model and each
    call's update count."""
    if not backend.records_losses(nnx.MLP([2, 5, 2]).net, nnx.optim.SGD(0.05)):
        pytest.skip(f"{backend.name} logs one point per call")
    real = backend.train_recording
    calls = []

    def train_recording(net, state, data, objective, optimizer, lrs, every):
        calls.append(len(lrs))
        if len(calls) == call:
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
        return real(net, state, data, objective, optimizer, lrs, every)

    monkeypatch.setattr(backend, "train_recording", train_recording)
    model = nnx.MLP([2, 5, 2], seed=1)
    model.fit(*moons, passes=100_000, log_every=100, **SETTINGS)
    monkeypatch.undo()
    return model, calls


def test_ctrl_c_in_a_call_logging_several_points_stops_at_that_calls_end(backend, moons, monkeypatch):
    model, calls = _fit_pressing_in_recording_call(backend, moons, monkeypatch, call=3, presses=1)
    done = sum(calls)
    assert len(calls) == 3 and model.interrupted and model.updates == done and done % 100 == 0
    assert list(model.history) == list(range(0, done + 1, 100))
    assert_same(model, reference(*moons, done))


def test_a_second_ctrl_c_in_such_a_call_goes_back_to_its_start(backend, moons, monkeypatch):
    model, calls = _fit_pressing_in_recording_call(backend, moons, monkeypatch, call=3, presses=2)
    done = sum(calls[:2])
    assert len(calls) == 3 and model.interrupted and model.updates == done
    assert list(model.history) == list(range(0, done + 1, 100))
    assert_same(model, reference(*moons, done))
    # and training continues from there exactly as if never interrupted
    model.fit(*moons, passes=100, log_every=100, **SETTINGS)
    assert not model.interrupted
    assert_same(model, reference(*moons, done + 100))


def test_interrupted_describes_the_last_fit_only(backend, moons):
    X, y = moons
    model = nnx.MLP([2, 8, 2], hidden="relu", init="he")
    model.fit(X, y, passes=10_000, log_every=100, lr=0.01,
              callback=lambda updates, loss: signal.raise_signal(signal.SIGINT) if updates == 100 else None)
    assert model.interrupted
    with pytest.raises(nnx.NonFiniteLossError):
        model.fit(X * 1e3, y, passes=5000, lr=1e3, reduction="sum", log_every=1000)
    assert not model.interrupted
    model.fit(X, y, passes=10, lr=0.01)
    assert not model.interrupted


def test_callback_sees_the_model_at_each_logging_point(backend, moons):
    X, y = moons
    model = nnx.MLP([2, 5, 2], seed=1)
    seen = {}
    model.fit(X, y, passes=300, log_every=100,
              callback=lambda updates, loss: seen.setdefault(updates, (model.updates, model.predict_proba(X))),
              **SETTINGS)
    for passes in (0, 100, 200, 300):
        updates, proba = seen[passes]
        assert updates == passes
        assert np.array_equal(proba, reference(X, y, passes).predict_proba(X))


def test_a_loss_already_non_finite_before_training_is_reported_at_pass_0():
    X = np.array([[1e20], [-1e20]])
    model = nnx.MLP([1, 2, 1], hidden="identity", output="identity", dtype="float32")
    model.set_params([(np.full((1, 2), 1e20), np.zeros(2)), (np.ones((2, 1)), np.zeros(1))])
    before = model.params
    with pytest.raises(nnx.NonFiniteLossError, match=r"non-finite before the first pass.*Nothing was trained") as info:
        model.fit(X, np.zeros(2), passes=10)
    assert info.value.pass_number == 0
    assert model.updates == 0 and model.history == {}
    assert all(np.array_equal(W, W0) for (W, _), (W0, _) in zip(model.params, before))


# ---------------------------------------------------------------- real signals to `nnx train`
@pytest.fixture
def start_cli():
    """Starts `nnx train` children, killed at teardown: a failed or timed-out test leaves no run behind."""
    children: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
        children.append(subprocess.Popen([sys.executable, "-u", "-m", "nnx", "train", "--backend", "numpy", *args],
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
        return children[-1]

    yield start
    for child in children:
        if child.poll() is None:
            child.kill()
            child.communicate()


def _wait_for(proc: subprocess.Popen, pattern: str) -> str:
    """Read the child's output until a line matches (training is then under way)."""
    seen = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if re.search(pattern, line):
            return seen
    proc.kill()
    raise AssertionError(f"never printed {pattern!r}; output so far:\n{seen}{proc.stderr.read()}")


def _finish(proc: subprocess.Popen, seen: str) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, seen + out, err


def test_cli_one_ctrl_c_stops_at_a_logging_point_prints_the_summary_saves_and_exits_130(tmp_path, start_cli):
    path = tmp_path / "run"
    proc = start_cli("--passes", "100000000", "--log-every", "500", "--save", str(path))
    seen = _wait_for(proc, r"Loss after pass 1000:")
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc, seen)
    assert code == 130, err
    done = int(re.search(r"training: (\d+) passes", out).group(1))
    assert done >= 1000 and done % 500 == 0
    assert re.findall(r"Loss after pass (\d+):", out)[-1] == str(done)
    assert "final training accuracy:" in out and f"interrupted by Ctrl-C after pass {done}" in out
    assert f"saved to {path}.npz" in out and "Traceback" not in err
    saved = nnx.load(path)
    assert saved.updates == done and max(saved.history) == done
    X, y = nnx.datasets.moons(200, noise=0.2, seed=0)
    with nnx.use_backend("numpy"):
        expected = nnx.MLP([2, 3, 2]).fit(X, y, passes=done, lr=0.01, l2=0.01, reduction="sum", log_every=500)
    assert_same(saved, expected)


def test_cli_one_ctrl_c_ends_the_whole_relu_run(tmp_path, start_cli):
    path = tmp_path / "relu"
    proc = start_cli("--preset", "relu", "--passes", "100000000", "--log-every", "200", "--save", str(path))
    seen = _wait_for(proc, r"^Epoch 400, Loss:")
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc, seen)
    assert code == 130, err
    done = int(re.search(r"training: (\d+) passes", out).group(1))
    assert done % 200 == 0 and done < 100000000
    epochs = [int(e) for e in re.findall(r"^Epoch (\d+), Loss:", out, re.M)]
    assert epochs == list(range(200, done + 1, 200))
    assert nnx.load(path).updates == done


def test_cli_a_second_ctrl_c_stops_at_once_with_the_last_logging_point_saved(tmp_path, start_cli):
    path = tmp_path / "big"
    # one logging interval would take hours: only the second Ctrl-C can end it
    proc = start_cli("--hidden", "2000", "--passes", "100000000", "--log-every", "100000000", "--save", str(path))
    seen = _wait_for(proc, r"Loss after pass 0:")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    code, out, err = _finish(proc, seen)
    assert code == 130, err
    assert "training: 0 passes" in out and "interrupted by Ctrl-C after pass 0" in out
    saved = nnx.load(path)
    assert saved.updates == 0 and list(saved.history) == [0]
    for (W, b), (W0, b0) in zip(saved.params, nnx.MLP([2, 2000, 2], seed=0).params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)
