"""A first ``nnx train`` on an empty kernel cache: it trains on NumPy at once while a detached
process compiles the Numba kernels, and the next run loads them from the cache. A library ``fit``
compiles in the foreground, and says so where its progress bar would show."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nnx
import nnx.cli
from nnx import background_compile

pytestmark = pytest.mark.skipif(nnx.available_backends()["numba"] is not None, reason="numba unavailable here")

CACHED_CHECK = """
import sys, nnx
with nnx.use_backend("numba") as backend:
    net = nnx.MLP((2, 3, 2)).net
    before = backend.kernels_cached(net, 200)
    if sys.argv[1] == "compile":
        backend.warm_up(net, 200)
    print(before, backend.kernels_cached(net, 200))
"""


def _env(cache_dir: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "NNX_BACKEND", background_compile.ENV_VAR)}
    env.update(NNX_CACHE_DIR=str(cache_dir), **extra)
    return env


def _python(code_or_module: list[str], env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *code_or_module], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def _wait_for_background_compiles(folder: Path, timeout: float = 300) -> None:
    assert background_compile.wait(folder, timeout), "the background compile did not finish"


def test_kernels_cached_tells_a_cold_cache_from_a_warm_one(tmp_path):
    env = _env(tmp_path)
    assert _python(["-c", CACHED_CHECK, "compile"], env).stdout.split() == ["False", "True"]
    # a new process finds them on disk
    assert _python(["-c", CACHED_CHECK, "check"], env).stdout.split() == ["True", "True"]


def _losses(out: str) -> list[str]:
    return re.findall(r"Loss after pass \d+: [0-9.]+", out)


def test_first_run_trains_on_numpy_while_the_kernels_compile_then_the_next_run_loads_them(tmp_path):
    # a tenth of the tutorial's passes: NumPy's estimate stays far below the limit on a loaded machine
    env = _env(tmp_path, NNX_BACKEND="numba")
    train = ["-m", "nnx", "train", "--passes", "2000"]
    first = _python(train, env).stdout
    assert re.search(r"compile: numba's kernels for this network are not cached yet: they compile in the "
                     r"background \(pid \d+\) for later runs, and this run trains on numpy \(about [0-9.]+ s\)", first)
    assert re.search(r"training: 2000 passes in [0-9.]+ s = [0-9,]+ passes/s on numpy", first)
    # the NumPy backend's run, loss for loss (the tutorial's own figures)
    reference = _python(train, _env(tmp_path / "numpy", NNX_BACKEND="numpy")).stdout
    assert _losses(first) == _losses(reference) and len(_losses(first)) == 3

    _wait_for_background_compiles(tmp_path)
    log = next(tmp_path.rglob("background-compile.log")).read_text()
    assert "compiled Network(layer_sizes=(2, 3, 2)" in log and "Traceback" not in log

    second = _python(train, env).stdout
    assert re.search(r"compile: none, kernels loaded from the cache in [0-9.]+ s", second)
    assert re.search(r"training: 2000 passes in [0-9.]+ s = [0-9,]+ passes/s on numba", second)
    assert re.search(r"final training accuracy: [0-9.]+%", first).group() in reference


class _ColdBackend:
    """A backend whose kernels are not cached: records what the CLI asks of it."""
    name = "numba"

    def __init__(self):
        self.warmed = []

    def kernels_cached(self, net, n, optimizer):
        return False

    def warm_up(self, net, n, optimizer):
        self.warmed.append((net, n, optimizer))
        return 1.5


def _decide(monkeypatch, numpy_seconds: float, spawn=lambda: 4321):
    """What ``_kernels_for`` does with a cold cache when NumPy would take ``numpy_seconds`` and
    starting the background process gives ``spawn()``."""
    started = []
    monkeypatch.setattr(nnx.cli, "_numpy_seconds", lambda *args: numpy_seconds)
    monkeypatch.setattr(background_compile, "start", lambda *args: started.append(args) or spawn())
    cold = _ColdBackend()
    model = nnx.MLP((2, 3, 2))
    X, y = nnx.datasets.moons(20, seed=0)
    settings = dict(optimizer=nnx.optim.SGD(0.01), schedule=None, batch_size=None, l2=0.0, reduction="sum")
    try:
        chosen = nnx.cli._kernels_for(cold, model, X, y, settings, 100)
    finally:
        nnx.set_backend(None)
    return chosen, cold.warmed, started


def test_a_short_run_on_a_cold_cache_compiles_in_the_background(monkeypatch, capsys):
    monkeypatch.delenv(background_compile.ENV_VAR, raising=False)
    chosen, warmed, started = _decide(monkeypatch, nnx.cli.BACKGROUND_MAX_NUMPY_S / 2)
    assert chosen.name == "numpy" and not warmed and len(started) == 1
    assert "(pid 4321)" in capsys.readouterr().out


def test_a_long_run_or_background_compiles_off_compile_in_the_foreground(monkeypatch, capsys):
    monkeypatch.delenv(background_compile.ENV_VAR, raising=False)
    chosen, warmed, started = _decide(monkeypatch, nnx.cli.BACKGROUND_MAX_NUMPY_S * 2)
    assert chosen.name == "numba" and len(warmed) == 1 and not started
    assert "compile: 1.500 s" in capsys.readouterr().out

    monkeypatch.setenv(background_compile.ENV_VAR, "0")
    chosen, warmed, started = _decide(monkeypatch, 0.01)
    assert chosen.name == "numba" and len(warmed) == 1 and not started


def test_no_process_to_start_or_one_already_running(monkeypatch, capsys):
    monkeypatch.delenv(background_compile.ENV_VAR, raising=False)

    def no_process():
        raise OSError("Resource temporarily unavailable")

    chosen, warmed, _ = _decide(monkeypatch, 0.01, no_process)
    assert chosen.name == "numba" and len(warmed) == 1
    assert "no background process could start (Resource temporarily unavailable); compiling first" in (
        capsys.readouterr().out)
    chosen, warmed, _ = _decide(monkeypatch, 0.01, lambda: None)
    assert chosen.name == "numpy" and not warmed and "(already under way)" in capsys.readouterr().out


def test_one_compile_per_kernel_at_a_time_and_stale_locks_are_replaced(tmp_path):
    lock = tmp_path / "compiling-x.lock"
    assert background_compile._take_lock(lock)
    lock.write_text(str(os.getpid()))  # a live process holds it
    assert not background_compile._take_lock(lock)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(finished.stdout.strip())  # its process has exited
    assert background_compile._take_lock(lock)
    lock.write_text(str(os.getpid()))
    old = time.time() - background_compile.STALE_LOCK_S - 1
    os.utime(lock, (old, old))  # held too long: its compile died without removing it
    assert background_compile._take_lock(lock)


FIT_ON_A_TERMINAL = """
import sys, nnx
sys.stderr.isatty = lambda: True  # where fit(verbose=1) draws its bar and announces a compile
X, y = nnx.datasets.moons(100, seed=0)
with nnx.use_backend("numba"):
    nnx.MLP((2, 3, 2)).fit(X, y, passes=10, verbose=int(sys.argv[1]))
    nnx.MLP((2, 3, 2)).fit(X, y, passes=10, verbose=int(sys.argv[1]))
"""
NOTICE = "nnx: compiling the numba kernel for 2-3-2 float64 (first use; several seconds, cached for later runs)"


def test_a_fit_announces_a_cold_compile_once_where_its_progress_bar_would_show(tmp_path):
    env = _env(tmp_path)
    quiet = _python(["-c", FIT_ON_A_TERMINAL, "0"], _env(tmp_path / "quiet"))
    assert NOTICE not in quiet.stderr
    cold = _python(["-c", FIT_ON_A_TERMINAL, "1"], env)
    assert cold.stderr.count(NOTICE) == 1
    assert NOTICE not in _python(["-c", FIT_ON_A_TERMINAL, "1"], env).stderr  # loaded from the cache
