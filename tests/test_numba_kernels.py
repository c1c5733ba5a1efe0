"""The Numba backend's own contract: both per-layer paths, determinism across
thread counts, the vectorisable transcendentals, NaN/inf flow and the fallback
when numba is missing or broken."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nnx
from nnx.backends.numpy_backend import NumpyBackend
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD
from tolerances import params_error

numba = pytest.importorskip("numba", reason="numba is not installed")

from nnx.backends.numba_backend import FUSED_MAX_DIM, NumbaBackend, layer_paths, make_plan  # noqa: E402
from nnx.kernels.cpu_activation import activate, activation, derivative, grad_times_derivative  # noqa: E402
from nnx.kernels.cpu_math import log1p_exp, vexp, vsigmoid, vtanh  # noqa: E402
from nnx.kernels.cpu_train import rows_head  # noqa: E402
from nnx.network import ACTIVATION_CODES, HEAD_CODES  # noqa: E402

ALL_BLAS, ALL_FUSED = 0, 10**9


def problem(net: Network, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, net.n_inputs))
    if net.output == "softmax":
        T = np.eye(net.n_outputs)[rng.integers(0, net.n_outputs, n)]
    else:
        T = rng.uniform(0.05, 0.95, size=(n, net.n_outputs))
    params = [(rng.normal(size=s) / np.sqrt(s[0]), rng.normal(size=s[1]) * 0.1) for s in net.layer_shapes()]
    return X, T, params


def train(backend, net, X, T, params, passes, objective=Objective("sum", 0.01), lr=0.01):
    data = backend.prepare_data(net, X, T)
    state = TrainState(backend.prepare_params(net, [(W.copy(), b.copy()) for W, b in params]))
    backend.train(net, state, data, objective, SGD(lr), passes)
    assert state.updates == passes
    return backend.params_to_numpy(state.params)


# ------------------------------------------------------------ path choice
def test_paths_follow_the_smallest_dimension_not_the_width():
    assert layer_paths(Network((2, 4096, 2))) == ["fused", "fused"]
    assert layer_paths(Network((2, 500, 500, 3))) == ["fused", "blas", "fused"]
    assert layer_paths(Network((784, 2048, 10))) == ["blas", "fused" if 10 <= FUSED_MAX_DIM else "blas"]
    assert layer_paths(Network((2, 500, 3)), fused_max_dim=ALL_BLAS) == ["blas", "blas"]


def test_layers_small_on_both_sides_join_the_fused_run():
    """At most 2 x FUSED_MAX_DIM (16) on both sides: fused, so 2-16-16-2 is one fused run; a
    wider side keeps a layer on BLAS unless its other side is at most FUSED_MAX_DIM."""
    assert FUSED_MAX_DIM == 8
    assert layer_paths(Network((2, 16, 16, 2))) == ["fused", "fused", "fused"]
    assert layer_paths(Network((2, 17, 17, 2))) == ["fused", "blas", "fused"]
    assert layer_paths(Network((16, 16, 16))) == ["fused", "fused"]
    assert layer_paths(Network((784, 16, 10))) == ["blas", "fused"]
    assert layer_paths(Network((784, 17, 10))) == ["blas", "blas"]
    assert layer_paths(Network((2, 16, 16, 2)), fused_max_dim=ALL_BLAS) == ["blas", "blas", "blas"]
    assert not make_plan(Network((4, 16, 16, 3)), 150).mlp1
    assert make_plan(Network((10, 16, 3)), 150).mlp1


def test_only_fits_of_at_most_8_samples_run_sample_by_sample():
    """The sample-by-sample kernel up to 8 samples (rows of a minibatch) and 256 samples x hidden
    units; blocks of samples from 9 on, where they were as fast or faster (benchmarks/test_bench_plan.py)."""
    xor = Network((2, 2, 1), "sigmoid", "sigmoid")
    assert make_plan(xor, 4).kernel == "train_tiny" and make_plan(xor, 8).kernel == "train_tiny"
    assert make_plan(xor, 9).kernel == "train" and make_plan(xor, 32).kernel == "train"
    assert make_plan(Network((2, 32, 1), "sigmoid", "sigmoid"), 8).kernel == "train_tiny"
    assert make_plan(Network((2, 33, 1), "sigmoid", "sigmoid"), 8).kernel == "train"
    assert make_plan(xor, 1000, batch_rows=8).kernel == "train_tiny"


def test_an_entry_point_holds_only_the_code_its_network_runs():
    """Fused runs only, BLAS layers only, or both; with both, a BLAS output layer's loss head is
    compiled into the entry point only where the output layer is on BLAS."""
    entry = lambda sizes, n=200: make_plan(Network(sizes), n).kernel  # noqa: E731
    assert entry((2, 8, 8, 2)) == "train_passes_fused"
    assert entry((784, 32, 10)) == "train_passes_blas"
    assert entry((2, 32, 32, 2)) == "train_passes_fused_head"  # fused, BLAS, fused
    assert entry((2, 12, 40, 10)) == "train_passes"  # fused, BLAS, BLAS
    assert entry((2, 32, 32, 2), 20_000) == "train_passes_fused_head_parallel"
    assert entry((2, 12, 40, 10), 100_000) == "train_passes_parallel"


def test_fused_run_never_stores_the_hidden_activations():
    plan = make_plan(Network((2, 4096, 2)), 4096)
    assert plan.acts.size == 1 and plan.deltas.size == 1  # nothing N x H
    assert plan.scratch.size < 4096 * 4096 // 8
    assert list(plan.unit_kind) == [1]


NETS = {
    "tutorial": Network((2, 3, 2)),
    "xor": Network((2, 2, 1), "sigmoid", "sigmoid"),
    "relu3": Network((2, 50, 50, 50, 2), "relu"),
    # a fused run, a BLAS layer, then a fused run with the head: stored deltas both ways
    "mixed": Network((3, 40, 40, 3), "tanh", "softmax"),
    # a fused run starting after a BLAS layer, through a 2-wide bottleneck
    "bottleneck": Network((20, 40, 2, 40, 3), "sigmoid", "identity"),
    "blas_head": Network((30, 40, 20, 25), "identity", "softmax"),
}


@pytest.mark.parametrize("fused_max_dim", [ALL_BLAS, FUSED_MAX_DIM, ALL_FUSED], ids=["blas", "default", "fused"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_both_paths_match_numpy(name, fused_max_dim):
    net = NETS[name]
    X, T, params = problem(net, 120)
    backend = NumbaBackend(fused_max_dim)
    for passes, objective, tol in [(1, Objective("sum", 0.01), 1e-12), (50, Objective("mean", 0.001), 1e-11)]:
        want = train(NumpyBackend(), net, X, T, params, passes, objective)
        got = train(backend, net, X, T, params, passes, objective)
        assert params_error(got, want) <= tol, (name, passes)


@pytest.mark.parametrize("fused_max_dim", [ALL_BLAS, ALL_FUSED], ids=["blas", "fused"])
def test_float32_paths_stay_float32_and_close(fused_max_dim):
    net = Network((4, 24, 3), "tanh", "softmax", "float32")
    X, T, params = problem(net, 64)
    want = train(NumpyBackend(), Network((4, 24, 3)), X, T, params, 20)
    got = train(NumbaBackend(fused_max_dim), net, X, T, params, 20)
    assert all(W.dtype == np.float32 and b.dtype == np.float32 for W, b in got)
    assert params_error(got, want) <= 1e-5


def test_parallel_chunks_match_numpy():
    net = Network((2, 300, 2))
    X, T, params = problem(net, 3000)
    plan = make_plan(net, 3000)
    assert plan.mlp1 and plan.mlp1_chunks > 1, "this case must exercise the chunked parallel path"
    want = train(NumpyBackend(), net, X, T, params, 3)
    assert params_error(train(NumbaBackend(), net, X, T, params, 3), want) <= 1e-12


def test_consecutive_intervals_equal_one_long_interval():
    net = Network((2, 8, 2))
    X, T, params = problem(net, 50)
    backend = NumbaBackend()
    data = backend.prepare_data(net, X, T)
    state = TrainState(backend.prepare_params(net, [(W.copy(), b.copy()) for W, b in params]))
    for _ in range(4):
        backend.train(net, state, data, Objective("sum", 0.01), SGD(0.01), 5)
    assert state.updates == 20
    once = train(backend, net, X, T, params, 20)
    assert all(np.array_equal(a, b) for pa, pb in zip(backend.params_to_numpy(state.params), once)
               for a, b in zip(pa, pb))


# ----------------------------------------------------------- determinism
DETERMINISM_SCRIPT = textwrap.dedent("""
    import hashlib, json, numpy as np
    from nnx.network import Network, Objective, TrainState
    from nnx.optim import SGD
    from nnx.backends import get_backend
    backend = get_backend()
    out = []
    for sizes in [(2, 300, 2), (3, 64, 64, 3)]:
        net = Network(sizes)
        rng = np.random.default_rng(0)
        X = rng.normal(size=(3000, sizes[0])); T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], 3000)]
        params = [(rng.normal(size=s) / np.sqrt(s[0]), np.zeros(s[1])) for s in net.layer_shapes()]
        state = TrainState(backend.prepare_params(net, params))
        backend.train(net, state, backend.prepare_data(net, X, T), Objective("mean", 0.01), SGD(0.5), 4)
        digest = hashlib.sha256(b"".join(a.tobytes() for pair in state.params for a in pair)).hexdigest()
        plan = backend.plan(net, 3000)
        out.append([digest, plan.mlp1_chunks if plan.mlp1 else int(plan.unit_chunks.max())])
    import numba
    print(json.dumps([numba.get_num_threads(), out]))
""")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=600)


def test_bit_identical_whatever_the_thread_count():
    results = []
    for threads in ("1", "2"):
        done = run_python(DETERMINISM_SCRIPT, NNX_BACKEND="numba", NUMBA_NUM_THREADS=threads)
        assert done.returncode == 0, done.stderr
        results.append(json.loads(done.stdout))
    assert [r[0] for r in results] == [1, 2]
    assert results[0][1][0][1] > 1  # several chunks, so threads really split the work
    assert results[0][1] == results[1][1]


# ------------------------------------------------- vectorisable transcendentals
@numba.njit(error_model="numpy")
def _apply(kind, x, out):
    for i in range(x.size):
        if kind == 0:
            out[i] = vexp(x[i])
        elif kind == 1:
            out[i] = vtanh(x[i])
        else:
            out[i] = vsigmoid(x[i])


def apply(kind: int, x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _apply(kind, x, out)
    return out


def ulps(got, want):
    return np.abs(got - want) / np.spacing(np.abs(want))


def test_exp_within_few_ulp_of_numpy_including_extremes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-708, 709, 100_000), rng.normal(0, 2, 100_000), [0.0, -0.0, 1e-300, 709.7]])
    assert ulps(apply(0, x), np.exp(x)).max() <= 4
    special = np.array([np.inf, -np.inf, np.nan, 709.9, 800.0, -745.3, -1e4])
    got = apply(0, special)
    assert got[0] == np.inf and got[1] == 0.0 and np.isnan(got[2])
    assert got[3] == np.inf and got[4] == np.inf and got[5] == 0.0 and got[6] == 0.0
    sub = np.array([-710.0, -720.0, -740.0])  # subnormal results
    assert np.allclose(apply(0, sub), np.exp(sub), rtol=1e-6, atol=0)


def test_tanh_and_sigmoid_within_few_ulp_of_numpy_including_extremes():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 3, 100_000), rng.uniform(-1, 1, 100_000), [0.624, 0.625, 0.626, 1e-300]])
    assert ulps(apply(1, x), np.tanh(x)).max() <= 4
    assert ulps(apply(2, x), 1 / (1 + np.exp(-x))).max() <= 4
    special = np.array([np.inf, -np.inf, np.nan, 400.0, -400.0, -0.0])
    got = apply(1, special)
    assert got[0] == 1.0 and got[1] == -1.0 and np.isnan(got[2]) and got[3] == 1.0 and got[4] == -1.0
    assert got[5] == 0.0 and np.signbit(got[5])
    sig = apply(2, special)
    assert sig[0] == 1.0 and sig[1] == 0.0 and np.isnan(sig[2])


@numba.njit(error_model="numpy")
def _log1p_exp_all(d, out):
    for i in range(d.size):
        out[i] = log1p_exp(d[i])


def test_log1p_exp_within_few_ulp_of_numpy_including_extremes():
    """log(1 + exp(d)) for d <= 0, the logged loss's log-sum-exp over two logits."""
    rng = np.random.default_rng(3)
    d = np.concatenate([-rng.exponential(3, 100_000), rng.uniform(-745, 0, 100_000), -np.geomspace(1e-300, 1, 1000),
                        [0.0, -0.0, -708.0, -740.0]])
    got = np.empty_like(d)
    _log1p_exp_all(d, got)
    want = np.log1p(np.exp(d))
    normal = want >= np.finfo(np.float64).tiny
    assert ulps(got[normal], want[normal]).max() <= 4
    # subnormal exp(d): precise to their few bits
    assert np.allclose(got[~normal], want[~normal], rtol=1e-6, atol=1e-6 * np.finfo(np.float64).tiny)
    special = np.array([-np.inf, np.nan, -746.0, -1e4])
    _log1p_exp_all(special, got[:4])
    assert got[0] == 0.0 and np.isnan(got[1]) and got[2] == 0.0 and got[3] == 0.0


def test_float32_transcendentals_stay_float32_within_few_ulp():
    """float32 input takes the float32 versions (no float64 inside float32 loops)."""
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(0, 3, 100_000), rng.uniform(-1, 1, 100_000), rng.uniform(-87, 87, 100_000),
                        [0.624, 0.625, 0.626, 1e-30, -1e-30]]).astype(np.float32)
    xd = x.astype(np.float64)

    def ulps32(got, want):
        assert got.dtype == np.float32
        return np.abs(got - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)

    assert ulps32(apply(0, x), np.exp(xd)).max() <= 4
    assert ulps32(apply(1, x), np.tanh(xd)).max() <= 4
    assert ulps32(apply(2, x), 1 / (1 + np.exp(-xd))).max() <= 4
    special = np.array([np.inf, -np.inf, np.nan, 400.0, -400.0, -0.0, 88.8, -104.0], np.float32)
    e = apply(0, special)
    assert e[0] == np.inf and e[1] == 0.0 and np.isnan(e[2]) and e[6] == np.inf and e[7] == 0.0
    t = apply(1, special)
    assert t[0] == 1.0 and t[1] == -1.0 and np.isnan(t[2]) and t[3] == 1.0 and t[4] == -1.0
    assert t[5] == 0.0 and np.signbit(t[5])
    sig = apply(2, special)
    assert sig[0] == 1.0 and sig[1] == 0.0 and np.isnan(sig[2])


# ------------------------------------------------------------- NaN and inf
@pytest.mark.parametrize("fused_max_dim", [ALL_BLAS, ALL_FUSED], ids=["blas", "fused"])
@pytest.mark.parametrize("hidden", ["relu", "tanh"])
def test_nan_and_inf_propagate_like_numpy(fused_max_dim, hidden):
    net = Network((3, 6, 3), hidden, "softmax")
    X, T, params = problem(net, 20)
    params[0][0][1, 2] = np.nan
    params[1][0][0, 1] = 1e308  # overflows to inf in the logits of some samples
    want = train(NumpyBackend(), net, X, T, params, 1)
    got = train(NumbaBackend(fused_max_dim), net, X, T, params, 1)
    for pa, pr in zip(got, want):
        for a, r in zip(pa, pr):
            assert np.array_equal(np.isnan(a), np.isnan(r)) and np.array_equal(np.isinf(a), np.isinf(r))


def test_divergence_is_reported_at_the_same_pass_as_numpy():
    X, y = nnx.datasets.moons(200, 0.2, 0)
    passes = []
    for name in ("numpy", "numba"):
        with nnx.use_backend(name):
            model = nnx.MLP([2, 3, 2])
            with pytest.raises(nnx.NonFiniteLossError) as info:
                # W <- W (1 - lr * l2) = -2 W each pass: the L2 term overflows within ~600 passes
                model.fit(X, y, passes=2000, lr=300.0, l2=0.01, reduction="sum", log_every=100)
            passes.append(info.value.pass_number)
            assert all(np.isfinite(W).all() for W, _ in model.params)
    assert passes[0] == passes[1]


# -------------------------------------------------- compile, import, fallback
def test_warm_up_reports_compile_time_and_is_cheap_once_compiled():
    backend = NumbaBackend()
    first = backend.warm_up(Network((2, 3, 2)), 16)
    again = backend.warm_up(Network((2, 3, 2)), 16)
    assert first >= 0.0 and 0.0 <= again < 1.0


def test_missing_numba_raises_with_reason_and_auto_falls_back():
    code = textwrap.dedent("""
        import sys, json
        sys.modules['numba'] = None
        sys.modules['cupy'] = None
        import nnx
        auto = nnx.get_backend().name
        import os
        os.environ['NNX_BACKEND'] = 'numba'
        try:
            nnx.get_backend()
            err = None
        except nnx.BackendUnavailableError as exc:
            err = str(exc)
        print(json.dumps([auto, err]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    auto, err = json.loads(done.stdout)
    assert auto == "numpy"
    assert err is not None and "numba is not installed" in err


def test_broken_numba_is_unavailable_with_the_reason():
    code = textwrap.dedent("""
        import sys, json, types
        fake = types.ModuleType('numba')
        fake.__version__ = '0.50.0'
        sys.modules['numba'] = fake
        sys.modules['cupy'] = None
        import nnx
        print(json.dumps([nnx.available_backends()['numba'], nnx.get_backend().name]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    reason, auto = json.loads(done.stdout)
    assert "0.50.0 is too old" in reason and auto == "numpy"


def test_numba_without_scipy_blas_is_unavailable_with_the_fix():
    """Numba's np.dot calls SciPy's BLAS; the backend is checked for it without importing SciPy."""
    code = textwrap.dedent("""
        import importlib.util, json, sys
        real = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "scipy" else real(name, *a)
        sys.modules['cupy'] = None
        import nnx
        print(json.dumps([nnx.available_backends()['numba'], nnx.get_backend().name, 'scipy.linalg' in sys.modules]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    reason, auto, scipy_imported = json.loads(done.stdout)
    assert "SciPy" in reason and "pip install scipy" in reason and auto == "numpy" and not scipy_imported


def test_the_backend_loads_scipys_blas_module_without_scipys_linear_algebra():
    """Numba's set-up imports ``scipy.linalg.cython_blas``; the backend loads that module alone (the
    package's ``__init__`` is a sixth of a second of every cold compile). BLAS layers then train
    through it, and a later ``import scipy.linalg`` works and has the same module as its attribute,
    as after an ordinary import."""
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        import nnx
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(64, 40)), rng.integers(0, 3, 64)
        losses = {}
        for backend in ("numba", "numpy"):
            model = nnx.MLP((40, 48, 3), seed=0)
            with nnx.use_backend(backend):
                model.fit(X, y, passes=3, lr=0.05, verbose=0)
            losses[backend] = model.history[3]
            if backend == "numba":
                alone = "scipy.linalg" not in sys.modules and "scipy.linalg.cython_blas" in sys.modules
        blas = sys.modules["scipy.linalg.cython_blas"]
        import scipy.linalg
        from scipy.linalg import cython_blas
        product = scipy.linalg.blas.dgemm(1.0, np.eye(2), np.full((2, 2), 3.0))
        print(json.dumps([alone, losses, cython_blas is blas and scipy.linalg.cython_blas is blas, product.tolist()]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    alone, losses, same_module, product = json.loads(done.stdout)
    assert alone, "the fit imported scipy.linalg"
    assert losses["numba"] == pytest.approx(losses["numpy"], rel=1e-10)
    assert same_module and product == [[3.0, 3.0], [3.0, 3.0]]


def test_numba_with_its_jit_disabled_is_unavailable_and_auto_trains_on_numpy():
    code = textwrap.dedent("""
        import json, sys
        sys.modules['cupy'] = None
        import nnx
        X, y = nnx.datasets.moons(50, seed=0)
        model = nnx.MLP([2, 3, 2]).fit(X, y, passes=3, verbose=0)
        print(json.dumps([nnx.available_backends()['numba'], nnx.get_backend().name, model.backend_name]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NNX_BACKEND"}
    env["NUMBA_DISABLE_JIT"] = "1"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    reason, auto, trained_on = json.loads(done.stdout)
    assert "NUMBA_DISABLE_JIT" in reason and auto == trained_on == "numpy"


# ------------------------------------------------- one code table, no identity fall-through
@numba.njit(error_model="numpy")
def _activation_values(code, libm, x, out, slope):
    for i in range(x.size):
        out[i] = activation(code, x[i], libm)
        slope[i] = derivative(code, out[i])


@numba.njit(error_model="numpy")
def _rows(code, x):
    v = x.copy().reshape((1, x.size))
    activate(code, v, 0, x.size)
    g = np.ones((1, x.size))
    grad_times_derivative(code, g, 0, v, 0, x.size)
    return v[0], g[0]


# Each activation name's value and derivative (from the output), as the tutorials write them.
FORMULAS = {
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda a: a * (1 - a)),
    "tanh": (np.tanh, lambda a: 1 - a * a),
    "relu": (lambda x: np.maximum(x, 0), lambda a: (a > 0).astype(float)),
    "identity": (lambda x: x, np.ones_like),
}


@pytest.mark.parametrize("name", list(FORMULAS))
def test_every_activation_code_of_the_table_computes_that_activation(name):
    """Codes come from nnx.network.ACTIVATION_CODES; the kernels' helpers and row loops agree with the name."""
    assert set(FORMULAS) == set(ACTIVATION_CODES)
    x = np.linspace(-4, 4, 101)
    f, df = FORMULAS[name]
    for libm in (False, True):
        out, slope = np.empty_like(x), np.empty_like(x)
        _activation_values(ACTIVATION_CODES[name], libm, x, out, slope)
        assert np.allclose(out, f(x), rtol=1e-14, atol=1e-15) and np.allclose(slope, df(f(x)), atol=1e-14)
    v, g = _rows(ACTIVATION_CODES[name], x)
    assert np.allclose(v, f(x), rtol=1e-14, atol=1e-15) and np.allclose(g, df(f(x)), atol=1e-14)


def test_an_unknown_activation_code_gives_nan_never_the_identity():
    unknown = max(ACTIVATION_CODES.values()) + 1
    x = np.linspace(-1, 1, 8)
    out, slope = np.empty_like(x), np.empty_like(x)
    _activation_values(unknown, False, x, out, slope)
    assert np.isnan(out).all() and np.isnan(slope).all()
    v, g = _rows(unknown, x)
    assert np.isnan(v).all() and np.isnan(g).all()


@pytest.mark.parametrize("head", ["softmax", "sigmoid", "identity"])
def test_every_head_code_of_the_table_computes_that_head(head):
    """The loss head each HEAD_CODES entry selects: its gradient (y - T) [* y (1 - y)] and its loss."""
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(6, 3))
    T = np.eye(3)[[0, 1, 2, 0, 1, 2]] if head == "softmax" else rng.uniform(0.1, 0.9, (6, 3))
    D = np.empty_like(Z)
    loss = rows_head(HEAD_CODES[head], Z, T, D, 1.0, True)
    if head == "softmax":
        y = np.exp(Z - Z.max(axis=1, keepdims=True))
        y /= y.sum(axis=1, keepdims=True)
        want_loss, want_delta = -(T * np.log(y)).sum(), y - T
    else:
        y = 1 / (1 + np.exp(-Z)) if head == "sigmoid" else Z
        want_loss = 0.5 * ((y - T) ** 2).sum()
        want_delta = (y - T) * (y * (1 - y)) if head == "sigmoid" else y - T
    assert np.allclose(D, want_delta, rtol=1e-13, atol=1e-15) and loss == pytest.approx(want_loss, rel=1e-13)


def test_an_unknown_head_code_gives_nan_never_the_identity():
    Z = np.linspace(-1, 1, 6).reshape(2, 3)
    D = np.zeros_like(Z)
    loss = rows_head(max(HEAD_CODES.values()) + 1, Z, np.zeros_like(Z), D, 1.0, True)
    assert np.isnan(D).all() and np.isnan(loss)


def test_the_backend_refuses_names_outside_the_table_before_any_kernel_runs():
    for net in (Network((2, 3, 2), "swish"), Network((2, 3, 2), "tanh", "softmin")):
        with pytest.raises(ValueError, match="unknown (activation|output head)"):
            make_plan(net, 10)


def _forward_float64(X, params, hidden, output):
    """The forward pass in NumPy float64, from the formulas."""
    (W1, b1), (W2, b2) = params
    z = X @ W1 + b1
    h = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0), "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[hidden](z)
    out = h @ W2 + b2
    if output == "softmax":
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-out)) if output == "sigmoid" else out


@pytest.mark.parametrize("hidden,output", [("tanh", "softmax"), ("relu", "sigmoid"), ("sigmoid", "identity")])
@pytest.mark.parametrize("n,width", [(300, 256), (2001, 256), (17, 4096)], ids=["serial", "chunked", "few-rows"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_forward_matches_the_formulas(hidden, output, n, width, dtype):
    """The compiled forward (one hidden row streamed per block of samples, serial or chunked
    across threads, blocks cut short at the end) against the float64 forward."""
    net = Network((2, width, 3 if output == "softmax" else 2), hidden=hidden, output=output, dtype=dtype)
    backend = NumbaBackend()
    assert backend._compiled_predict(net, n)
    X, _, params = problem(net, n, seed=width)
    got = backend.predict_output(net, [(W.astype(dtype), b.astype(dtype)) for W, b in params], X.astype(dtype))
    want = _forward_float64(X.astype(dtype).astype(np.float64),
                            [(W.astype(dtype).astype(np.float64), b.astype(dtype).astype(np.float64))
                             for W, b in params], hidden, output)
    assert got.dtype == np.dtype(dtype) and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == "float64" else 2e-5,
                               atol=1e-13 if dtype == "float64" else 1e-6)
