"""Where compiled kernels are cached: a per-user folder per nnx version, never the package."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import nnx
import nnx.kernels
from nnx import cache
from nnx.cli import main

FIT = ("import nnx; X, y = nnx.datasets.moons(40, seed=0); "
       "nnx.MLP([2, 3, 2]).fit(X, y, passes=3, log_every=1); print('trained')")
PACKAGE = Path(nnx.__file__).resolve().parent
KERNELS = Path(nnx.kernels.__file__).resolve().parent


def run_fit(**env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NNX_CACHE_DIR", "NUMBA_CACHE_DIR"))}
    full.update(NNX_BACKEND="numba", **env)
    return subprocess.run([sys.executable, "-W", "always", "-c", FIT], capture_output=True, text=True, env=full,
                          timeout=600)


def kernel_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in (".nbi", ".nbc")]


@pytest.fixture
def numba_required():
    if nnx.available_backends()["numba"] is not None:
        pytest.skip("numba unavailable here")


def test_kernels_go_to_nnx_cache_dir_in_a_version_folder_never_the_package(tmp_path, numba_required):
    done = run_fit(NNX_CACHE_DIR=str(tmp_path))
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr
    cached = kernel_files(tmp_path)
    assert cached and all(tmp_path / nnx.__version__ / "numba" in p.parents for p in cached)
    assert not kernel_files(PACKAGE) and not kernel_files(KERNELS)


def test_an_explicit_numba_cache_dir_is_respected(tmp_path, numba_required):
    done = run_fit(NUMBA_CACHE_DIR=str(tmp_path / "numba"), NNX_CACHE_DIR=str(tmp_path / "nnx"))
    assert done.returncode == 0, done.stderr
    assert kernel_files(tmp_path / "numba") and not (tmp_path / "nnx").exists()


def test_an_unwritable_cache_warns_once_and_still_trains(tmp_path, numba_required):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    done = run_fit(NNX_CACHE_DIR=str(blocker / "cache"))
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr
    assert done.stderr.count("nnx cannot write its kernel cache folder") == 1, done.stderr
    assert "NNX_CACHE_DIR" in done.stderr and not kernel_files(PACKAGE)


def test_default_folder_follows_the_platform_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("NNX_CACHE_DIR", raising=False)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    if sys.platform.startswith("linux"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        assert cache.cache_root() == tmp_path / "nnx"
    folder, source = cache.numba_cache_dir()
    assert folder == cache.cache_root() / nnx.__version__ / "numba" and source == "user cache folder"
    monkeypatch.setenv("NNX_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.numba_cache_dir() == (tmp_path / "mine" / nnx.__version__ / "numba", "NNX_CACHE_DIR")


def test_backends_shows_the_cache_and_cache_clear_empties_it(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("NNX_CACHE_DIR", str(tmp_path))
    folder = tmp_path / nnx.__version__ / "numba" / "kernels_x"
    folder.mkdir(parents=True)
    (folder / "k.nbc").write_bytes(b"\0" * 3000)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {tmp_path / nnx.__version__ / 'numba'} (2.93 KiB, from NNX_CACHE_DIR" in out
    assert main(["cache", "clear"]) == 0
    assert f"removed {tmp_path} (2.93 KiB)" in capsys.readouterr().out
    assert not tmp_path.exists()


def test_cache_clear_leaves_an_explicit_numba_cache_dir_alone(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    (tmp_path / "other-project.nbi").write_text("x")
    assert main(["cache", "clear"]) == 2
    assert "NUMBA_CACHE_DIR is set" in capsys.readouterr().err
    assert (tmp_path / "other-project.nbi").exists()
