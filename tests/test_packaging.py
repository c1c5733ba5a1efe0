"""The installed layout: kernels/ ships as nnx.kernels in the wheel, never as a top-level module."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import nnx

REPO = Path(__file__).resolve().parents[1]


def test_kernels_import_as_part_of_nnx():
    import nnx.kernels

    assert Path(nnx.kernels.__file__).resolve().parent.name == "kernels"
    done = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True, text=True,
                          cwd="/", timeout=60)
    assert done.returncode != 0 and "No module named 'kernels'" in done.stderr


def test_wheel_built_offline_puts_kernels_under_nnx(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks", "venv", ".venv"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    wheel = next((tmp_path / "dist").glob("nnx-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    kernel_files = sorted(p.name for p in (REPO / "kernels").iterdir()
                          if p.suffix in {".py", ".cu", ".cuh"})
    for name in kernel_files:
        assert f"nnx/kernels/{name}" in names
    assert not any(n.startswith("kernels/") for n in names), "a top-level 'kernels' package must not ship"
    top_level = {n.split("/")[0] for n in names if not n.startswith("nnx-")}
    assert top_level == {"nnx"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "nnx = nnx.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
