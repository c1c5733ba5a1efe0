"""Backend selection: names, precedence, lazy imports and clear errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import nnx
from nnx import backends


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture(autouse=True)
def clean_selection(monkeypatch):
    """Each test starts from auto, with no explicit choice and no environment variable."""
    monkeypatch.delenv("NNX_BACKEND", raising=False)
    nnx.set_backend(None)
    yield
    nnx.set_backend(None)


def test_available_backends_lists_every_backend_with_reason_or_none():
    status = nnx.available_backends()
    assert list(status) == ["numpy", "numba", "cupy"]
    assert status["numpy"] is None
    for name, reason in status.items():
        assert reason is None or (isinstance(reason, str) and "\n" not in reason and reason), name


def test_env_var_selects_backend_read_at_use_not_import(monkeypatch):
    monkeypatch.setenv("NNX_BACKEND", "numpy")
    assert nnx.get_backend().name == "numpy"
    assert "NNX_BACKEND=numpy" in nnx.explain_backend()


def test_precedence_scope_over_set_backend_over_env(monkeypatch):
    monkeypatch.setenv("NNX_BACKEND", "auto")
    nnx.set_backend("numpy")
    assert nnx.explain_backend() == "numpy (from set_backend)"
    with nnx.use_backend("numpy") as scoped:
        assert nnx.get_backend() is scoped
        assert "use_backend" in nnx.explain_backend()
    assert nnx.explain_backend() == "numpy (from set_backend)"


def test_scope_restored_even_when_an_exception_passes_through():
    before = nnx.explain_backend()
    with pytest.raises(KeyError):
        with nnx.use_backend("numpy"):
            raise KeyError("boom")
    assert nnx.explain_backend() == before


def test_auto_picks_first_available_and_says_why():
    status = nnx.available_backends()
    expected = next(name for name in ("cupy", "numba", "numpy") if status[name] is None)
    assert nnx.get_backend().name == expected
    why = nnx.explain_backend()
    assert why.startswith("auto:") and why.endswith(f"picked {expected}")
    for skipped in ("cupy", "numba", "numpy")[: ("cupy", "numba", "numpy").index(expected)]:
        assert status[skipped] in why


@pytest.mark.parametrize("call", [nnx.set_backend, lambda n: nnx.use_backend(n).__enter__()])
def test_unknown_name_lists_valid_names_and_suggests(call):
    with pytest.raises(ValueError) as info:
        call("cupyy")
    message = str(info.value)
    assert "'cupyy'" in message and "Did you mean 'cupy'?" in message
    for name in ("auto", "numpy", "numba", "cupy"):
        assert repr(name) in message


def test_unknown_env_var_value_is_an_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("NNX_BACKEND", "numpi")
    with pytest.raises(ValueError, match=r"Unknown NNX_BACKEND value 'numpi'.*Did you mean 'numpy'"):
        nnx.get_backend()


def test_unavailable_cupy_raises_backend_unavailable_with_fix():
    reason = nnx.available_backends()["cupy"]
    if reason is None:
        pytest.skip("cupy is usable here; its unavailable path is covered where it is not")
    with pytest.raises(nnx.BackendUnavailableError) as info:
        nnx.set_backend("cupy")
    assert isinstance(info.value, RuntimeError)
    assert reason in str(info.value)
    assert info.value.__cause__ is not None
    if "not installed" in reason:
        assert "pip install 'nnx[cuda12]'" in str(info.value)


def test_import_with_numpy_backend_pulls_in_neither_numba_nor_cupy():
    code = (
        "import sys, json, nnx\n"
        "X, y = nnx.datasets.moons(50)\n"
        "m = nnx.MLP([2, 3, 2]).fit(X, y, passes=3)\n"
        "m.predict(X)\n"
        "print(json.dumps([nnx.get_backend().name, 'numba' in sys.modules, 'cupy' in sys.modules]))\n"
    )
    done = run_python(code, NNX_BACKEND="numpy")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["numpy", False, False]


def test_plain_import_runs_no_gpu_probe_and_no_numba_import():
    done = run_python("import sys, json, nnx; print(json.dumps(['numba' in sys.modules, 'cupy' in sys.modules]))")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, False]


def test_missing_numba_is_unavailable_with_reason_and_auto_falls_back():
    code = (
        "import sys, json\n"
        "sys.modules['numba'] = None\n"  # makes `import numba` fail as if it were not installed
        "sys.modules['cupy'] = None\n"
        "import nnx\n"
        "status = nnx.available_backends()\n"
        "auto = nnx.get_backend().name\n"
        "try:\n"
        "    nnx.set_backend('numba')\n"
        "    err = None\n"
        "except nnx.BackendUnavailableError as exc:\n"
        "    err = [str(exc), type(exc.__cause__).__name__]\n"
        "print(json.dumps([status['numba'], auto, err]))\n"
    )
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    reason, auto, err = json.loads(done.stdout)
    assert reason == "numba is not installed: pip install numba"
    assert auto == "numpy"
    assert err == ["Backend 'numba' is unavailable: numba is not installed: pip install numba", "ModuleNotFoundError"]


def test_explicit_name_never_falls_back_via_env():
    code = (
        "import sys\n"
        "sys.modules['numba'] = None\n"
        "import nnx\n"
        "nnx.get_backend()\n"
    )
    done = run_python(code, NNX_BACKEND="numba")
    assert done.returncode != 0
    assert "BackendUnavailableError" in done.stderr and "numba is not installed" in done.stderr


def test_registry_reason_for_a_broken_backend_module(monkeypatch):
    monkeypatch.setitem(backends._MODULES, "numba", "nnx.backends.does_not_exist")
    backends._status.cache_clear()
    backends._instance.cache_clear()
    try:
        reason = nnx.available_backends()["numba"]
        assert reason.startswith("numba failed to load (ModuleNotFoundError")
    finally:
        monkeypatch.undo()
        backends._status.cache_clear()
        backends._instance.cache_clear()
