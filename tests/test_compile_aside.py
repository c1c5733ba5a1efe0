"""A fit on an empty kernel cache compiles its chunk kernel (or, for BLAS layers only, its row helpers)
in a helper process while it compiles its entry point, then loads them from the cache; a helper that
cannot help changes nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import nnx
from nnx.backends import compile_aside

pytestmark = pytest.mark.skipif(nnx.available_backends()["numba"] is not None, reason="numba unavailable here")

# Records, at each wait for a helper, whether this process had made the optimiser step before it.
WAITS = """
import json, sys
import nnx
from nnx.backends import compile_aside
from nnx.kernels import cpu_update
step_before_wait = []
real_finish = compile_aside.finish
def finish(helper):
    step_before_wait.append(cpu_update.updater.cache_info().currsize > 0)
    real_finish(helper)
compile_aside.finish = finish
"""

FIT = WAITS + """
from nnx.kernels import cpu_mlp1
if sys.argv[1] == "failing-helper":  # a helper that starts and exits at once, having compiled nothing
    import subprocess
    compile_aside.start = lambda *args: subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
X, y = nnx.datasets.moons(200, noise=0.2, seed=0)
model = nnx.MLP((2, 3, 2), seed=0)
with nnx.use_backend("numba"):
    model.fit(X, y, passes=50, lr=0.01, l2=0.01, reduction="sum", verbose=0)
print(json.dumps({"loaded": cpu_mlp1.chunk_kernel("2x2", "float64").cache_hits, "loss": model.history[50],
                  "step_before_wait": step_before_wait, "cores": compile_aside.usable_cores(),
                  "late_callee_signatures": [len(function.signatures)
                                             for function, _ in cpu_mlp1.late_callees("2x2", "float64", "train")]}))
"""


def _run(script: str, cache_dir, *args: str) -> dict:
    """``script``'s JSON result, run in a fresh process with ``cache_dir`` as nnx's kernel cache."""
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NNX_BACKEND")}
    env["NNX_CACHE_DIR"] = str(cache_dir)
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _fit(cache_dir, mode: str) -> dict:
    return _run(FIT, cache_dir, mode)


def test_the_helper_compiles_the_chunk_kernel_and_the_fit_loads_it(tmp_path):
    result = _fit(tmp_path / "cache", "helper")
    if result["cores"] < 2:
        pytest.skip("one usable core: no helper process is started")
    assert result["loaded"] == 1, "the fit compiled the kernel itself instead of loading the helper's"
    # the helper compiles the chunk kernel (the longer compile): the fit makes the step before it waits
    assert result["step_before_wait"] == [True]
    assert list((tmp_path / "cache").rglob("cpu_mlp1._chunk_2x2-*.nbi"))
    # the same training as a fit that compiles everything itself (a failed helper leaves it to the fit)
    fallback = _fit(tmp_path / "other-cache", "failing-helper")
    assert fallback["loaded"] == 0
    assert fallback["loss"] == result["loss"]
    # the fit compiled the kernel's last callees before it waited, and then the kernel itself
    # (the helper made nothing): the kernel called them in the types they were compiled for
    assert result["late_callee_signatures"] == [1, 1]
    assert fallback["late_callee_signatures"] == [1, 1]


LATE_CALLEES = """
import json, sys
from nnx.kernels import cpu_mlp1, cpu_softmax, cpu_squared, cpu_train
dtype = sys.argv[1]
heads = lambda: [len(cpu_softmax.softmax_xent_block.signatures), len(cpu_squared.squared_error_block.signatures)]
counts = {}
cpu_train.chunk_kernel("fused_softmax", dtype)
counts["heads of the softmax kernel"] = heads()
for module, name, entry in ((cpu_mlp1, "any", "train"), (cpu_train, "fused_softmax", "train_passes"),
                            (cpu_train, "fused_squared", "train_passes_fused")):
    callees = module.late_callees(name, dtype, entry)
    for function, types in callees:
        function.compile(types)
    module.chunk_kernel(name, dtype)  # a later list's types are checked against an earlier kernel's calls
    counts[entry] = [len(function.signatures) for function, _ in callees]
print(json.dumps(counts))
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_fit_compiles_the_callees_a_chunk_kernel_reaches_last_in_the_types_the_kernel_calls_them_with(
        tmp_path, dtype):
    """What a fit compiles while the helper compiles the chunk kernel (``late_callees``) is what the
    kernel's compile then finds made: a second signature of any of them would mean the kernel
    compiled it again, in other types. The fused-run kernel of a softmax network compiles no
    squared-error head."""
    counts = _run(LATE_CALLEES, tmp_path, dtype)
    assert counts == {"heads of the softmax kernel": [1, 0], "train": [1, 1, 1], "train_passes": [1],
                      "train_passes_fused": [1, 1]}, counts


ASIDE_FIT = WAITS + """
import numpy as np
from nnx.kernels import cpu_train
rng = np.random.default_rng(0)
if sys.argv[1] == "blas-only":
    X, y = rng.normal(size=(300, 784)), rng.integers(0, 10, 300)
    model, dtype = nnx.MLP((784, 32, 10), dtype="float32", seed=0), "float32"
else:  # XOR: the tiny path, its sample-by-sample kernel inlined in its entry point
    X, y = nnx.datasets.xor()
    model, dtype = nnx.MLP((2, 2, 1), hidden="sigmoid", output="sigmoid", init="uniform"), "float64"
with nnx.use_backend("numba"):
    model.fit(X, y, passes=3, lr=0.5, verbose=0)
# signatures in each row helper's disk index: the helper's and the fit's, one if they are the same
on_disk = {f.__name__: len(f._cache._cache_file._load_index())
           for f in (cpu_train.rows_head, cpu_train.rows_grad_derivative)}
print(json.dumps({"on_disk": on_disk, "update_loaded": cpu_update.updater("gd", dtype).cache_hits,
                  "blas_entry": bool(cpu_train.train_passes_blas.signatures),
                  "step_before_wait": step_before_wait, "cores": compile_aside.usable_cores()}))
"""


@pytest.mark.parametrize("network", ["blas-only", "tiny"])
def test_without_a_chunk_kernel_the_helper_takes_the_optimiser_step_and_row_helpers(tmp_path, network):
    """Where there is no chunk kernel, the entry point's compile is the long one: the helper
    compiles the optimiser step and, for BLAS layers only, the row helpers that compile reaches
    last, in the signatures it calls them with. The fit loads the step from the cache after its
    wait (it does not make it itself before), and the row helpers when the helper has them
    ready in time: whichever process compiles them, they have one signature."""
    result = _run(ASIDE_FIT, tmp_path, network)
    if result["cores"] < 2:
        pytest.skip("one usable core: no helper process is started")
    assert result["blas_entry"] == (network == "blas-only")
    rows = 1 if network == "blas-only" else 0
    assert result["on_disk"] == {"rows_head": rows, "rows_grad_derivative": rows}, result["on_disk"]
    assert result["update_loaded"] == 1
    assert result["step_before_wait"] == [False]


def test_no_helper_on_one_core_or_without_a_python_to_start(monkeypatch):
    monkeypatch.setattr(compile_aside, "usable_cores", lambda: 1)
    assert compile_aside.start("float64", [("cpu_mlp1", "2x2")]) is None
    monkeypatch.setattr(compile_aside, "usable_cores", lambda: 2)
    monkeypatch.setattr(sys, "frozen", True, raising=False)  # a frozen app: its executable would start the app
    assert compile_aside.start("float64", [("cpu_mlp1", "2x2")]) is None


def test_an_interrupted_wait_stops_the_helper():
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    real_wait = helper.wait

    def wait(timeout=None):
        if timeout is not None:  # Ctrl-C arrives while the fit waits for the helper
            raise KeyboardInterrupt
        return real_wait()

    helper.wait = wait
    with pytest.raises(KeyboardInterrupt):
        compile_aside.finish(helper)
    assert helper.returncode is not None, "the helper was left running"
