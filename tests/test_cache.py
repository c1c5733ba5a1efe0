"""Where compiled kernels are cached: a per-user folder per nnx version and kernel sources, never the
package."""
from __future__ import annotations

import ast
import json
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


def version_folder(root: Path) -> Path:
    """Where kernels of this nnx go under a cache root: the version, then the sources' fingerprint."""
    return root / nnx.__version__ / f"numba-{cache.kernel_fingerprint()}"


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
    assert cached and all(version_folder(tmp_path) in p.parents for p in cached)
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
    assert folder == version_folder(cache.cache_root()) and source == "user cache folder"
    monkeypatch.setenv("NNX_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.numba_cache_dir() == (version_folder(tmp_path / "mine"), "NNX_CACHE_DIR")


def test_without_platformdirs_kernels_go_to_the_xdg_folder_with_one_warning(monkeypatch, tmp_path):
    """An install without dependencies (pip --no-deps) lacks platformdirs: fits still find a folder."""
    monkeypatch.delenv("NNX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "platformdirs", None)  # import platformdirs now raises ImportError
    cache._root_without_platformdirs.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="pip install platformdirs") as said:
            assert cache.cache_root() == tmp_path / "nnx"
            assert cache.cache_root() == tmp_path / "nnx"
        assert len(said) == 1 and str(tmp_path / "nnx") in str(said[0].message)
    finally:
        cache._root_without_platformdirs.cache_clear()


def test_backends_shows_the_cache_and_cache_clear_empties_it(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("NNX_CACHE_DIR", str(tmp_path))
    folder = version_folder(tmp_path) / "kernels_x"
    folder.mkdir(parents=True)
    (folder / "k.nbc").write_bytes(b"\0" * 3000)
    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert f"kernel cache: {version_folder(tmp_path)} (2.93 KiB, from NNX_CACHE_DIR" in out
    assert "other kernel folders" not in out
    stale = tmp_path / nnx.__version__ / "numba-000000000000"  # another checkout's kernels
    stale.mkdir()
    (stale / "k.nbc").write_bytes(b"\0" * 1024)
    assert main(["backends"]) == 0
    assert f"other kernel folders under {tmp_path} (other nnx versions or kernel sources): 1.00 KiB" in (
        capsys.readouterr().out)
    assert main(["cache", "clear"]) == 0
    assert f"removed {tmp_path} (3.93 KiB)" in capsys.readouterr().out
    assert not tmp_path.exists()


def test_cache_clear_leaves_an_explicit_numba_cache_dir_alone(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    (tmp_path / "other-project.nbi").write_text("x")
    assert main(["cache", "clear"]) == 2
    assert "NUMBA_CACHE_DIR is set" in capsys.readouterr().err
    assert (tmp_path / "other-project.nbi").exists()


def _fake_sources(root: Path, monkeypatch) -> dict[str, Path]:
    """A kernels package and the KERNEL_INPUTS files under ``root``, read by ``kernel_fingerprint``
    in place of the installed ones."""
    places = {"nnx.kernels": root / "kernels", "nnx": root / "nnx", "nnx.optim": root / "nnx" / "optim"}
    for folder in places.values():
        folder.mkdir(parents=True, exist_ok=True)
    (places["nnx.kernels"] / "cpu_a.py").write_text("A = 1\n")
    (places["nnx.kernels"] / "cpu_b.py").write_text("B = 2\n")
    (places["nnx.kernels"] / "notes.cu").write_text("// not Python\n")
    for package, name in cache.KERNEL_INPUTS:
        (places[package] / name).write_text(f"# {name}\n")
    monkeypatch.setattr("importlib.resources.files", lambda package: places[package])
    cache.kernel_fingerprint.cache_clear()
    return places


def test_a_change_in_any_kernel_source_gives_its_own_cache_folder(monkeypatch, tmp_path):
    """Numba checks a cached function against its own file only: kernels compiled from other
    sources (another checkout of the same version) must never be loaded."""
    places = _fake_sources(tmp_path, monkeypatch)
    try:
        seen = {cache.kernel_fingerprint()}
        # the same bytes give the same folder; any changed module, or a table kernels bake in, another
        for path in (places["nnx.kernels"] / "cpu_b.py", *(places[p] / n for p, n in cache.KERNEL_INPUTS)):
            path.write_text(path.read_text() + "# changed\n")
            cache.kernel_fingerprint.cache_clear()
            assert cache.kernel_fingerprint() not in seen, path.name
            seen.add(cache.kernel_fingerprint())
        cache.kernel_fingerprint.cache_clear()
        assert cache.kernel_fingerprint() in seen
        (places["nnx.kernels"] / "notes.cu").write_text("// edited\n")  # CUDA sources compile through CuPy
        cache.kernel_fingerprint.cache_clear()
        assert cache.kernel_fingerprint() in seen
        assert len(cache.kernel_fingerprint()) == 12
    finally:
        cache.kernel_fingerprint.cache_clear()


def test_the_fingerprint_covers_every_nnx_module_the_numba_kernels_import():
    """``KERNEL_INPUTS`` lists the nnx modules outside nnx.kernels that Numba kernels import (their
    tables are compiled in); nnx.cache only chooses this folder, so it does not count."""
    imported = set()
    for path in KERNELS.glob("cpu_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..module import ...
                imported.add(node.module)
    listed = {f"{package}.{name[:-3]}".removeprefix("nnx.") for package, name in cache.KERNEL_INPUTS}
    assert imported - {"cache"} == listed


LOAD_SCRIPT = """
import json
import numpy as np
from numba.core import base
refreshed = []
real = base.BaseContext.refresh
base.BaseContext.refresh = lambda self: (refreshed.append(1), real(self))[1]
import nnx
X, y = nnx.datasets.moons(300, seed=0)
with nnx.use_backend("numba"):
    model = nnx.MLP([2, 8, 2]).fit(X, y, passes=5, log_every=1, verbose=0)
    proba = model.predict_proba(np.repeat(X, 300, axis=0))  # the compiled forward (90,000 samples x units)
loading = len(refreshed)
import numba
numba.njit(lambda x: x + 1)(1)  # a compile: sets Numba's compiler up (and shows the count works)
print(json.dumps({"refreshed": loading, "after_a_compile": len(refreshed), "history": list(model.history.values()),
                  "proba": proba[:3].tolist()}))
"""


def test_a_start_from_the_cache_loads_kernels_without_setting_up_numbas_compiler(numba_required):
    """Numba's own cached lookup first installs every typing and lowering table (a fifth of a second
    or more); running cached code needs only its runtime. A first process compiles or loads the
    fit's kernels (the suite's cache); a second loads them, trains and predicts without that
    set-up, to the same numbers."""
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    first, warm = runs
    assert warm["refreshed"] == 0 and warm["after_a_compile"] > 0
    assert warm["history"] == first["history"] and warm["proba"] == first["proba"]


def test_c_kernels_fall_back_to_numbas_own_lookup_where_its_internals_moved(monkeypatch, numba_required):
    from nnx.kernels import cpu_ccall, cpu_update

    def moved(*args, **kwargs):
        raise AttributeError("'Cache' object has no attribute '_cache_file'")

    monkeypatch.setattr(cpu_ccall, "_from_cache", moved)
    monkeypatch.setattr(cpu_ccall, "_MADE", {})
    kernel = cpu_ccall.c_kernel(cpu_update._none, cpu_update.signature("float64"))
    assert kernel.address and cpu_ccall.c_kernel(cpu_update._none, cpu_update.signature("float64")) is kernel


PARALLEL_FIT = """
import sys
import numpy as np
import nnx
from nnx.backends import compile_aside, numba_backend
from nnx.network import Network
compile_aside.start = lambda *args: None  # one process compiles everything, in call order
sizes = tuple(map(int, sys.argv[1].split("-")))
rng = np.random.default_rng(0)
X, y = rng.normal(size=(20000, 2)), rng.integers(0, 2, 20000)
assert numba_backend.make_plan(Network(sizes), len(X)).kernel == sys.argv[2]
with nnx.use_backend("numba") as backend:
    if sys.argv[3:] == ["ask-first"]:  # as `nnx train` does: is it cached? (that loads the entry point)
        assert backend.kernels_cached(Network(sizes), len(X))
    model = nnx.MLP(sizes).fit(X, y, passes=2, log_every=1, verbose=0)
print(repr(model.history), repr(model.params[0][0].sum()))
"""


def test_a_parallel_entry_point_compiled_beside_a_cached_parallel_callee_loads_and_runs(tmp_path):
    """Numba starts its threading layer when a process compiles a parallel loop or loads a cached
    function holding one, but not for a cached function that reaches its loop through a callee
    that was itself loaded from the cache when it compiled (numba/numba#4807). Here the chunked
    fused-only entry point compiles while the chunked runner it shares with the mixed entry point
    comes from the cache; a later process loading that entry point alone (to fit, or first to
    ask whether it is cached, as ``nnx train`` does) then crashed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NNX_CACHE_DIR", "NUMBA_CACHE_DIR"))}
    env["NNX_CACHE_DIR"] = str(tmp_path)

    def fit(sizes: str, kernel: str, *how: str) -> str:
        done = subprocess.run([sys.executable, "-c", PARALLEL_FIT, sizes, kernel, *how], capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, f"{sizes} exited with {done.returncode}: {done.stderr[-2000:]}"
        return done.stdout

    fit("2-32-32-2", "train_passes_fused_head_parallel")  # compiles and caches the chunked runner
    compiled = fit("2-8-8-2", "train_passes_fused_parallel")  # compiles its entry point, the runner from the cache
    assert fit("2-8-8-2", "train_passes_fused_parallel") == compiled  # everything from the cache
    assert fit("2-8-8-2", "train_passes_fused_parallel", "ask-first") == compiled


TINY_FITS = """
import json
import numpy as np
from numba.core import event
import nnx
compiled = []
class Compiles(event.Listener):
    def on_start(self, ev):
        compiled.append(getattr(ev.data["dispatcher"], "__name__", "?"))
    def on_end(self, ev):
        pass
event.register("numba:compile", Compiles())
rng = np.random.default_rng(0)
losses = []
with nnx.use_backend("numba"):
    for sizes, head in (((2, 2, 1), "sigmoid"), ((1, 3, 2), "softmax"), ((4, 3, 3), "softmax"),
                        ((300, 2, 1), "sigmoid")):
        X = rng.normal(size=(5, sizes[0]))
        y = rng.integers(0, 2, 5) if head == "sigmoid" else np.array([0, 1, 2, 1, 0]) % sizes[2]
        model = nnx.MLP(list(sizes), output=head).fit(X, y.astype(float) if head == "sigmoid" else y, passes=20)
        losses.append(model.history[20])
print(json.dumps({"compiled": compiled, "losses": losses}))
"""


def test_each_small_input_and_output_width_of_the_tiny_kernel_is_cached_and_loaded(tmp_path, numba_required):
    """Fits of at most 8 samples run an entry point made for their input and output widths where
    both are at most 2 (``cpu_mlp1.tiny_entry``), and one shared entry point otherwise: Numba's
    cache keeps one per small width pair, the wider shapes compile the shared one once, and a
    second process loads them all without compiling anything, to the same losses."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NNX_CACHE_DIR", "NUMBA_CACHE_DIR", "NNX_BACKEND"))}
    env.update(NNX_CACHE_DIR=str(tmp_path))
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", TINY_FITS], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout.splitlines()[-1]))
    first, second = runs
    assert first["compiled"].count("train_tiny") == 2, first["compiled"]
    assert first["compiled"].count("train_tiny_any") == 1, first["compiled"]
    assert second["compiled"] == [] and second["losses"] == first["losses"]
