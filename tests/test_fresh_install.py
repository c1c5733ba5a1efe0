"""README's two commands, in order, as a new user runs them: a fresh copy of the
repository, a fresh virtual environment, an empty kernel cache.

This is what broke before: the first command cached compiled kernels inside
``site-packages/nnx``, ``pip`` left them behind, and the leftover folder then
shadowed the editable install of the second command. Slow (it installs nnx
twice from PyPI's packages): deselect it locally with ``-m "not fresh_install"``;
CI runs it.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnx import background_compile

pytestmark = pytest.mark.fresh_install

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> tuple[str, str]:
    """The run command and the test command, exactly as README.md gives them."""
    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    run = next(b for b in blocks if b.strip().endswith("nnx train"))
    test = next(b for b in blocks if b.strip().endswith("&& pytest"))
    return run.strip(), test.strip()


def copy_working_tree(dest: Path) -> None:
    """What a fresh clone holds: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_readme_commands_work_one_after_the_other(tmp_path):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout of nnx")
    run_cmd, test_cmd = readme_commands()
    assert run_cmd == "pip install . && nnx train" and test_cmd == "pip install -e '.[test]' && pytest"
    clone = tmp_path / "nnx"
    copy_working_tree(clone)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    cache = tmp_path / "user-cache"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NNX_", "NUMBA_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), NNX_CACHE_DIR=str(cache),
               PIP_DISABLE_PIP_VERSION_CHECK="1")

    def shell(command: str, timeout: int = 900) -> subprocess.CompletedProcess:
        done = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                              timeout=timeout)
        assert done.returncode == 0, f"{command!r} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    trained = shell(run_cmd)
    assert "final training accuracy: 97.50%" in trained.stdout, trained.stdout[-2000:]
    purelib = Path(subprocess.run([str(bindir / "python"), "-c",
                                   "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    installed = purelib / "nnx"
    assert not [p for p in installed.rglob("*") if p.suffix in (".nbi", ".nbc")], "kernels cached in site-packages"
    # On numba, a cold cache trains on NumPy while the kernels compile in the background, unless
    # NumPy's run is estimated over BACKGROUND_MAX_NUMPY_S (a loaded machine): then it compiles first
    if re.search(r"^backend: .*numba", trained.stdout, re.M) and "first use of these kernels" not in trained.stdout:
        assert "they compile in the background" in trained.stdout, trained.stdout[:2000]
        assert background_compile.wait(cache, 300), "the background compile did not finish"
        log = next(cache.rglob("background-compile.log")).read_text()
        assert "Traceback" not in log and "compiled Network" in log, log[-3000:]
        assert list(cache.rglob("cpu_mlp1.train-*.nbi")) and list(cache.rglob("cpu_mlp1._chunk_2x2-*.nbi")), \
            "the tutorial's kernels are not in the user cache"
    assert list(cache.rglob("*.nbi")), "no kernels cached in the user cache folder"

    # The second command; its test run is reduced to collecting the whole suite (where the
    # shadowing broke it) plus one small file, since this test is itself part of that suite.
    install_cmd = test_cmd.removesuffix("&& pytest").strip()
    shell(install_cmd)
    assert not installed.exists(), f"pip left {installed} behind when it replaced the regular install"
    shell("pytest --collect-only -q -p no:cacheprovider")
    shell("pytest -q -p no:cacheprovider tests/test_datasets.py")
    shell("pip uninstall -y nnx")
    left = [p.name for p in purelib.iterdir() if "nnx" in p.name.lower()]
    assert not left, f"pip uninstall left {left} in {purelib}"
