"""The GPU check's Python steps (``benchmarks/gpu_check.sh`` runs them, each under a timeout).

``probe``          the environment (GPU, driver, CUDA, CuPy, NVRTC, CPU) as JSON; exits 3, saying
                   why, when the CuPy backend cannot compile or run a kernel, so the check stops early.
``prewarm-numba``  compiles the Numba kernels the CPU rows need into the on-disk cache, in the
                   background while the GPU steps run.
``smoke``          every kernel compiled (registers, local memory); the single-block, sliced and
                   dense paths in float32 and float64, 200 passes with graphs, without graphs and
                   on NumPy (bits and errors), run twice (determinism); the same paths under
                   SGD with Nesterov momentum, AMSGrad Adam and centered RMSprop, full batch and
                   minibatches, ten intervals under a cosine schedule (bits, errors, graph
                   captures); CUDA-event timings of tutorial 003, moons N=4,096 x H=65,536, the
                   blas-bound net against its bare cuBLAS products, and the ``minibatch`` and
                   ``mnist-shaped`` fits (Adam on minibatches); the plans' neighbours (threads
                   of the single-block kernel, work items of a sliced launch) timed beside the
                   default. The JSON is rewritten after every section, so a timeout keeps what
                   was measured.

Each figure is measured here; ``gpu_results.py`` turns the JSON into ``RESULTS.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import nnx
from nnx.bench.machine import cpu_model, usable_cores
from nnx.bench.targets import make_data
from nnx.bench.workloads import WORKLOADS, Case, scaled_lr
from nnx.initializers import initial_params
from nnx.batching import BatchStream
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD, Adam, Cosine, RMSprop, learning_rates

PASSES = 200
TUTORIAL_PASSES = 20_000
OP_BY_OP_PASSES = 200
# Parity after 200 passes, relative to each array's largest magnitude (the project's rule).
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}
# (name, layer sizes, samples, hidden, head): one network per path of the CuPy backend.
PATHS = [("single-block", (2, 3, 2), 200, "tanh", "softmax"),
         ("sliced", (2, 64, 2), 1000, "tanh", "softmax"),
         ("dense", (6, 40, 30, 4), 300, "relu", "softmax")]
BLAS_CASE = Case("blas-bound", 65536, (784, 4096, 10), scaled_lr(65536, 4096), data="random")
# The optimisers section: each path with batches of 32 as well as full batch (the sliced net is wide
# enough that a batch of 32 rows still takes the sliced kernels), and the runs made on each.
OPTIMIZER_PATHS = [("single-block", (2, 3, 2), 200, "tanh"),
                   ("sliced", (2, 512, 2), 1000, "tanh"),
                   ("dense", (6, 40, 30, 4), 300, "relu")]
OPTIMIZER_RUNS = [("sgd nesterov", lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3), 32, "float64"),
                  ("adam amsgrad", lambda: Adam(0.01, amsgrad=True), 32, "float64"),
                  ("adam amsgrad", lambda: Adam(0.01, amsgrad=True), 32, "float32"),
                  ("rmsprop centered", lambda: RMSprop(0.005, momentum=0.5, centered=True), None, "float64")]
INTERVALS = 10           # intervals per run: one epoch each (five updates at full batch)
FULL_BATCH_INTERVAL = 5
# The optimiser workloads: moons, 2-3-2, Adam, batch 32, 2,000 epochs; and 60,000 Gaussian
# inputs, 784-256-10 float32, Adam, batch 128, one epoch.
# (case, dtype, batch size, epochs timed)
FITS = ((Case("minibatch", 200, (2, 3, 2), 0.01, reduction="mean", l2=0.0), "float64", 32, 2000),
        (Case("mnist-shaped", 60000, (784, 256, 10), 1e-3, hidden="relu", reduction="mean", l2=0.0, data="random"),
         "float32", 128, 1))
MOONS_CASE = next(c for c in WORKLOADS["large-hidden"].cases("full") if c.n_hidden == 65536)
TUTORIAL_CASE = WORKLOADS["tutorial"].cases("full")[0]


def _write(path: Path, document: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str))
    os.replace(tmp, path)


# ------------------------------------------------------------------ probe
def probe(out: Path) -> int:
    """The environment as JSON; 3 when the CuPy backend is unavailable (the reason is printed)."""
    env: dict = {"python": platform.python_version(), "numpy": np.__version__, "nnx": nnx.__version__,
                 "cpu": cpu_model(), "cores": usable_cores(), "platform": platform.platform()}
    try:
        import numba
        env["numba"] = numba.__version__
    except ImportError:
        env["numba"] = None
    env["nvidia_smi"] = _nvidia_smi()
    reason = nnx.available_backends()["cupy"]
    env["cupy_unavailable"] = reason
    if reason is None:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"]
        env["gpu"] = {"name": name.decode() if isinstance(name, bytes) else str(name),
                      "sms": int(props["multiProcessorCount"]),
                      "memory_gib": round(int(props["totalGlobalMem"]) / 2**30, 1),
                      "compute_capability": f"{props['major']}.{props['minor']}"}
        env["cuda_driver"] = _version(cupy.cuda.runtime.driverGetVersion())
        env["cuda_runtime"] = _version(cupy.cuda.runtime.runtimeGetVersion())
        env["nvrtc"] = ".".join(map(str, cupy.cuda.nvrtc.getVersion()))
        env["cupy"] = cupy.__version__
    _write(out, env)
    print(json.dumps(env, indent=2, default=str))
    if reason is not None:
        print(f"CuPy cannot compile or run a CUDA kernel here: {reason}", file=sys.stderr)
        return 3
    return 0


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _nvidia_smi() -> dict | None:
    fields = "name,driver_version,memory.total,compute_cap,clocks.max.sm,power.limit"
    try:
        run = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    if run.returncode != 0:
        return {"error": run.stderr.strip() or f"exit status {run.returncode}"}
    first = run.stdout.strip().splitlines()[0]
    return dict(zip(fields.split(","), (v.strip() for v in first.split(","))))


# --------------------------------------------------------- numba prewarm
def prewarm_numba() -> int:
    """Compile (or load) the Numba kernels of 2-H-2 tanh/softmax nets in both dtypes into the cache."""
    from nnx.backends.numba_backend import NumbaBackend

    backend = NumbaBackend()
    for dtype in ("float64", "float32"):
        for sizes in ((2, 3, 2), (2, 4096, 2)):
            seconds = backend.warm_up(Network(sizes, "tanh", "softmax", dtype), 64)
            print(f"numba {dtype} {sizes}: {seconds:.1f} s", flush=True)
    return 0


# ------------------------------------------------------------------ smoke
def _params(sizes, dtype, init="normal_fan_in"):
    return [(W.astype(dtype), b.astype(dtype)) for W, b in initial_params(sizes, init, 0)]


def _problem(sizes, n, output, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, sizes[0]))
    y = rng.integers(0, sizes[-1], n)
    T = np.eye(sizes[-1])[y] if output == "softmax" else y.reshape(-1, 1).astype(float)
    return X, T


def _train(backend, net, X, T, params, passes, objective, lr):
    """``passes`` updates from copies of ``params`` (a CPU backend would train the arrays it is given)."""
    data = backend.prepare_data(net, X, T)
    state = TrainState(backend.prepare_params(net, [(W.copy(), b.copy()) for W, b in params]))
    backend.train(net, state, data, objective, SGD(lr), passes)
    backend.synchronize()
    return backend.params_to_numpy(state.params)


def _rel_err(ref, got) -> float:
    return max(float(np.max(np.abs(a.astype(np.float64) - b)) / max(float(np.max(np.abs(a))), 1e-300))
               for pa, pb in zip(ref, got) for a, b in zip(pa, pb))


def _same_bits(a, b) -> bool:
    return all(np.array_equal(x, y) for pa, pb in zip(a, b) for x, y in zip(pa, pb))


def kernels_section() -> dict:
    """Compile every module; registers and local memory of every kernel instance."""
    from nnx.backends.cupy_backend import CupyDevice, _module
    from nnx.kernels import cuda_sources as src

    device, rows, compile_s = CupyDevice(), [], {}
    for source in src.SOURCES:
        start = time.perf_counter()
        _module(source).get_function(source.name_expressions()[0])  # NVRTC compiles the whole module here
        compile_s[source.filename] = round(time.perf_counter() - start, 3)
        for kernel in source.kernels:
            for dtype in ("float32", "float64"):
                for width in kernel.widths or (None,):
                    fn = device.function(kernel.name, np.dtype(dtype), width)
                    rows.append({"kernel": kernel.instance(src.ELEMENT_TYPES[dtype], width),
                                 "registers": int(fn.num_regs), "local_bytes": int(fn.local_size_bytes),
                                 "static_shared_bytes": int(fn.shared_size_bytes),
                                 "max_threads_per_block": int(fn.max_threads_per_block)})
    return {"compile_s": compile_s, "instances": rows,
            "ok": all(r["local_bytes"] == 0 for r in rows)}


def _cupy_backend(**switches):
    from nnx.backends.cupy_backend import CupyBackend

    return CupyBackend(**switches)


def paths_section(make_backend=_cupy_backend, passes: int = PASSES) -> list[dict]:
    """Each path and dtype: graphs vs no graphs (bits), twice (bits), against NumPy (error).

    ``make_backend(**switches)`` builds the backend under test (the CuPy backend; the
    tests hand in a CPU stand-in to check this script without a GPU).
    """
    from nnx.backends.numpy_backend import NumpyBackend

    out = []
    for name, sizes, n, hidden, output in PATHS:
        for dtype in ("float32", "float64"):
            net = Network(sizes, hidden, output, dtype)
            X, T = _problem(sizes, n, output)
            objective, lr = Objective("mean", 1e-3), 0.5
            params = _params(sizes, dtype)
            graphs_backend = make_backend()
            graphs = _train(graphs_backend, net, X, T, params, passes, objective, lr)
            again = _train(make_backend(), net, X, T, params, passes, objective, lr)
            eager = _train(make_backend(graphs=False), net, X, T, params, passes, objective, lr)
            ref = _train(NumpyBackend(), net, X, T, params, passes, objective, lr)
            err = _rel_err(ref, graphs)
            replayer = getattr(graphs_backend, "_replayer", None)
            row = {"path": name, "sizes": list(sizes), "n": n, "dtype": dtype, "passes": passes,
                   "graphs_equal_eager": _same_bits(graphs, eager), "repeat_equal": _same_bits(graphs, again),
                   "rel_err_vs_numpy": err, "tolerance": TOLERANCE[dtype],
                   "launches_per_pass": graphs_backend.launches_per_pass(net, n),
                   "graph_fallback": graphs_backend.graph_fallback(net),
                   "captures": replayer.captures if replayer is not None else 0}
            row["ok"] = row["graphs_equal_eager"] and row["repeat_equal"] and err <= TOLERANCE[dtype] \
                and row["graph_fallback"] is None
            out.append(row)
            print(f"  {name} {dtype}: err {err:.2e}, graphs==eager {row['graphs_equal_eager']}, "
                  f"repeat {row['repeat_equal']}, launches/pass {row['launches_per_pass']:.4g}", flush=True)
    return out


def _seam_fit(backend, case: Case, dtype: str, optimizer, batch_size: int | None):
    """A fit at the seam, run as the training driver runs it: (net, state, plan, run). ``plan(k, per)``
    draws k intervals of ``per`` updates (learning rates under a cosine schedule, the epochs' shuffled
    batches) before anything is timed; ``run(planned)`` trains them one after another."""
    net = Network(case.layer_sizes, case.hidden, case.output, dtype)
    X, _, T = make_data(case)
    data = backend.prepare_data(net, X, T)
    params = _params(case.layer_sizes, dtype, case.init)
    state = TrainState(backend.prepare_params(net, params), slots={  # fresh zeros per state array (NumPy keeps them)
        name: backend.prepare_params(net, [(np.zeros_like(W), np.zeros_like(b)) for W, b in params])
        for name in optimizer.slots()})
    stream = None if batch_size is None else BatchStream(np.random.default_rng(0), case.n_samples, batch_size, True)
    per_epoch = 1 if batch_size is None else -(-case.n_samples // batch_size)
    objective = Objective(case.reduction, case.l2)
    schedule = Cosine(T_max=7 * per_epoch)

    def plan(intervals: int, per: int) -> list:
        step, planned = state.step, []
        for _ in range(intervals):
            planned.append((learning_rates(schedule, optimizer.lr, step, per, per_epoch),
                            None if stream is None else stream.take(per)))
            step += per
        return planned

    def run(planned: list) -> None:
        for lrs, batches in planned:
            backend.train(net, state, data, objective, optimizer, lrs, batches)

    return net, state, plan, run


def _path_taken(net: Network, n: int, batch_size: int | None, slots: int) -> str:
    from nnx.backends import cuda_plan

    if not cuda_plan.is_tiny(net):
        return "dense"
    rows = None if batch_size is None else min(batch_size, n)
    return "single-block" if cuda_plan.plan_tiny_net(net, n, rows, slots).one_block else "sliced"


def optimizers_section(make_backend=_cupy_backend, intervals: int = INTERVALS) -> list[dict]:
    """Each path under each optimiser run: ``intervals`` intervals with graphs, twice, without graphs
    and on NumPy: bits, errors (parameters and optimiser state) and the graphs captured."""
    from nnx.backends.numpy_backend import NumpyBackend

    out = []
    for path, sizes, n, hidden in OPTIMIZER_PATHS:
        case = Case("optimizers", n, sizes, 0.0, hidden=hidden, reduction="mean", l2=1e-3, data="random")
        for name, make_optimizer, batch_size, dtype in OPTIMIZER_RUNS:
            per = FULL_BATCH_INTERVAL if batch_size is None else -(-n // batch_size)
            runs = {}
            for label, backend in (("graphs", make_backend()), ("again", make_backend()),
                                   ("eager", make_backend(graphs=False)), ("numpy", NumpyBackend())):
                optimizer = make_optimizer()
                net, state, plan, run = _seam_fit(backend, case, dtype, optimizer, batch_size)
                run(plan(intervals, per))
                backend.synchronize()
                runs[label] = (backend, [backend.params_to_numpy(state.params)] +
                               [backend.params_to_numpy(state.slots[k]) for k in optimizer.slots()])
            graphs, again, eager, ref = (runs[k][1] for k in ("graphs", "again", "eager", "numpy"))
            err = max(_rel_err(r, g) for r, g in zip(ref, graphs))
            backend = runs["graphs"][0]
            replayer = getattr(backend, "_replayer", None)
            taken = _path_taken(net, n, batch_size, len(make_optimizer().slots()))
            row = {"path": path, "path_taken": taken, "sizes": list(sizes), "n": n, "dtype": dtype, "optimizer": name,
                   "batch_size": batch_size, "intervals": intervals, "updates": intervals * per,
                   "graphs_equal_eager": all(_same_bits(g, e) for g, e in zip(graphs, eager)),
                   "repeat_equal": all(_same_bits(g, a) for g, a in zip(graphs, again)),
                   "rel_err_vs_numpy": err, "tolerance": TOLERANCE[dtype],
                   "launches_per_pass": backend.launches_per_pass(net, n, batch_size=batch_size,
                                                                  n_slots=len(make_optimizer().slots())),
                   "graph_fallback": backend.graph_fallback(net),
                   "captures": replayer.captures if replayer is not None else 0}
            # one graph for the run's interval length, whatever the number of steps and intervals
            row["ok"] = (row["graphs_equal_eager"] and row["repeat_equal"] and err <= TOLERANCE[dtype]
                         and row["graph_fallback"] is None and taken == path
                         and row["captures"] <= (0 if path == "single-block" else 1))
            out.append(row)
            print(f"  {path} {name} batch {batch_size} {dtype}: err {err:.2e}, graphs==eager "
                  f"{row['graphs_equal_eager']}, repeat {row['repeat_equal']}, captures {row['captures']}",
                  flush=True)
    return out


def _events_seconds(run) -> float:
    """Device time of ``run()`` between two CUDA events on the current stream."""
    import cupy

    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    run()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3


def _timed_train(backend, case: Case, dtype: str, passes: int, timer=_events_seconds) -> dict:
    """Per-pass device time of ``passes`` passes after ``passes + 1`` untimed ones: those compile the
    kernels and capture every graph the timed passes replay (one eager pass, then the same blocks)."""
    net = Network(case.layer_sizes, case.hidden, case.output, dtype)
    X, _, T = make_data(case)
    data = backend.prepare_data(net, X, T)
    state = TrainState(backend.prepare_params(net, _params(case.layer_sizes, dtype, case.init)))
    objective, optimizer = Objective(case.reduction, case.l2), SGD(case.lr)
    backend.train(net, state, data, objective, optimizer, passes + 1)
    backend.synchronize()
    seconds = timer(lambda: backend.train(net, state, data, objective, optimizer, passes))
    finite = all(np.isfinite(a).all() for pair in backend.params_to_numpy(state.params) for a in pair)
    row = {"case": case.id, "dtype": dtype, "passes": passes, "seconds": seconds, "us_per_pass": seconds / passes * 1e6,
           "finite": bool(finite)}
    if getattr(backend, "fused", False):
        row["launches_per_pass"] = backend.launches_per_pass(net, case.n_samples)
        row["graph_fallback"] = backend.graph_fallback(net)
    return row


def _bare_products_seconds(case: Case, dtype: str, passes: int, xp=None, timer=_events_seconds) -> float:
    """Time per pass of the pass's matrix products alone (forward, dW, deltas), through ``xp``'s
    matrix product: CuPy's cuBLAS by default."""
    if xp is None:
        import cupy as xp
    X = xp.asarray(make_data(case)[0], dtype=dtype)
    Ws = [xp.asarray(W, dtype=dtype) for W, _ in _params(case.layer_sizes, dtype, case.init)]
    n = case.n_samples
    acts = [xp.empty((n, w), dtype) for w in case.layer_sizes[1:]]
    deltas = [xp.full((n, w), 0.01, dtype) for w in case.layer_sizes[1:]]
    grads = [xp.empty_like(W) for W in Ws]

    def products():
        for _ in range(passes):
            a = X
            for W, out in zip(Ws, acts):
                a = xp.matmul(a, W, out=out)
            for layer in range(len(Ws) - 1, -1, -1):
                a_prev = X if layer == 0 else acts[layer - 1]
                xp.matmul(a_prev.T, deltas[layer], out=grads[layer])
                if layer > 0:
                    xp.matmul(deltas[layer], Ws[layer].T, out=deltas[layer - 1])
    timer(products)  # cuBLAS heuristics and first-touch, untimed
    return timer(products) / passes


def _timed_fit(backend, case: Case, dtype: str, optimizer, batch_size: int, epochs: int, timer=_events_seconds):
    """Per-update device time of ``epochs`` intervals of one epoch each (learning rates and batches
    drawn beforehand), after one untimed epoch that compiles the kernels and captures the graphs."""
    net, state, plan, run = _seam_fit(backend, case, dtype, optimizer, batch_size)
    per = -(-case.n_samples // batch_size)
    run(plan(1, per))
    backend.synchronize()
    planned = plan(epochs, per)
    seconds = timer(lambda: run(planned))
    finite = all(np.isfinite(a).all() for pair in backend.params_to_numpy(state.params) for a in pair)
    row = {"case": case.id, "dtype": dtype, "optimizer": type(optimizer).__name__, "batch_size": batch_size,
           "epochs": epochs, "passes": epochs * per, "seconds": seconds, "us_per_pass": seconds / (epochs * per) * 1e6,
           "epochs_per_s": epochs / seconds, "finite": bool(finite)}
    if getattr(backend, "fused", False):
        row["launches_per_pass"] = backend.launches_per_pass(net, case.n_samples, batch_size=batch_size,
                                                             n_slots=len(optimizer.slots()))
        row["graph_fallback"] = backend.graph_fallback(net)
    return row


def timings_section(emit, make_backend=_cupy_backend, timer=_events_seconds, xp=None,
                    cases: tuple[Case, Case, Case] = (TUTORIAL_CASE, MOONS_CASE, BLAS_CASE),
                    passes: tuple[int, int, int, int] = (TUTORIAL_PASSES, OP_BY_OP_PASSES, 64, 12),
                    fits: tuple[tuple[Case, str, int, int], ...] = FITS) -> dict:
    """CUDA-event timings; ``emit`` saves what is done so far. (The tests hand in CPU stand-ins
    for the backend, timer and array module, and small cases.)"""
    tutorial, moons, blas = cases
    tutorial_passes, op_passes, moons_passes, blas_passes = passes
    out: dict = {}
    for dtype in ("float64", "float32"):
        out[f"tutorial {dtype}"] = {
            "cupy": _timed_train(make_backend(), tutorial, dtype, tutorial_passes, timer),
            "cupy/no-graphs": _timed_train(make_backend(graphs=False), tutorial, dtype, tutorial_passes, timer),
            "cupy/op-by-op": _timed_train(make_backend(fused=False), tutorial, dtype, op_passes, timer)}
        emit(out)
    for dtype in ("float32", "float64"):
        out[f"moons {moons.id} {dtype}"] = {"cupy": _timed_train(make_backend(), moons, dtype, moons_passes, timer)}
        emit(out)
    row = _timed_train(make_backend(), blas, "float32", blas_passes, timer)
    products = _bare_products_seconds(blas, "float32", blas_passes, xp, timer)
    out[f"blas-bound {blas.id} float32"] = {
        "cupy": row, "cupy/products-only": {"us_per_pass": products * 1e6, "passes": blas_passes},
        "share_of_products": products * 1e6 / row["us_per_pass"]}
    emit(out)
    for case, dtype, batch_size, epochs in fits:
        out[f"{case.workload} {case.id} {dtype}"] = {
            "cupy": _timed_fit(make_backend(), case, dtype, Adam(case.lr), batch_size, epochs, timer),
            "cupy/no-graphs": _timed_fit(make_backend(graphs=False), case, dtype, Adam(case.lr), batch_size,
                                         max(1, epochs // 10), timer)}
        emit(out)
    return out


# The plans' neighbours: threads of the single-block kernel (tutorial 003) and work items per sliced
# launch (moons, N=4,096 x H=16,384 float32), each timed and checked against the default plan.
PLAN_THREADS = (128, 256, 384, 512)
PLAN_ITEMS = (1 << 17, 1 << 18, 1 << 19)
PLAN_MOONS_CASE = next(c for c in WORKLOADS["large-hidden"].cases("full") if c.n_hidden == 16384)
PLAN_PARITY_PASSES = 300


@contextlib.contextmanager
def _plan_setting(name: str, value):
    """cuda_plan's ``name`` set to ``value`` for the block (``plan_tiny`` looks both up per call)."""
    from nnx.backends import cuda_plan

    saved = getattr(cuda_plan, name)
    setattr(cuda_plan, name, value)
    try:
        yield
    finally:
        setattr(cuda_plan, name, saved)


def plans_section(make_backend=_cupy_backend, timer=_events_seconds,
                  cases: tuple[Case, Case] = (TUTORIAL_CASE, PLAN_MOONS_CASE),
                  passes: tuple[int, int] = (TUTORIAL_PASSES, 64), parity_passes: int = PLAN_PARITY_PASSES) -> list[dict]:
    """Per-pass time of each plan setting beside the default's, and its parameters' error against the
    default's after ``parity_passes`` (only the order of sums may differ): where a neighbour is
    faster, the plan's constants want tuning on this GPU."""
    from nnx.backends import cuda_plan

    tutorial, moons = cases
    one_block = cuda_plan.plan_one_block
    chosen = {dtype: cuda_plan.plan_tiny_net(Network(tutorial.layer_sizes, dtype=dtype), tutorial.n_samples).threads
              for dtype in ("float64", "float32")}
    settings = [(tutorial, dtype, f"threads={t}", t == chosen[dtype],
                 ("plan_one_block", functools.partial(one_block, threads=t)))
                for dtype in ("float64", "float32") for t in PLAN_THREADS]
    settings += [(moons, "float32", f"items={items}", items == cuda_plan.TINY_TARGET_ITEMS,
                  ("TINY_TARGET_ITEMS", items)) for items in PLAN_ITEMS]
    rows, defaults = [], {}
    for case, dtype, setting, is_default, (name, value) in settings:
        net = Network(case.layer_sizes, case.hidden, case.output, dtype)
        X, _, T = make_data(case)
        with _plan_setting(name, value):
            timed = _timed_train(make_backend(), case, dtype, passes[case is moons], timer)
            params = _train(make_backend(), net, X, T, _params(case.layer_sizes, dtype, case.init), parity_passes,
                            Objective(case.reduction, case.l2), case.lr)
        rows.append({"case": case.id, "dtype": dtype, "setting": setting, "default": is_default,
                     "us_per_pass": timed["us_per_pass"], "passes": timed["passes"], "params": params})
        if is_default:
            defaults[(case.id, dtype)] = params
    for row in rows:
        row["rel_err_vs_default"] = _rel_err(defaults[(row["case"], row["dtype"])], row.pop("params"))
        print(f"  {row['case']} {row['dtype']} {row['setting']}{' (default)' if row['default'] else ''}: "
              f"{row['us_per_pass']:.4g} us a pass, err vs default {row['rel_err_vs_default']:.1e}", flush=True)
    return rows


def smoke(out: Path) -> int:
    document: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "errors": {}}
    sections = [("kernels", kernels_section), ("paths", paths_section),
                ("timings", lambda: timings_section(lambda partial: _write(out, {**document, "timings": partial}))),
                ("optimizers", optimizers_section), ("plans", plans_section)]
    for name, run in sections:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        try:
            document[name] = run()
        except Exception as exc:  # noqa: BLE001 - a diagnostic run records every failure and goes on
            document["errors"][name] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            print(document["errors"][name], file=sys.stderr, flush=True)
        document[f"{name}_s"] = round(time.perf_counter() - start, 2)
        _write(out, document)
    failed = bool(document["errors"]) or not document.get("kernels", {}).get("ok", False) \
        or not all(row["ok"] for section in ("paths", "optimizers") for row in document.get(section, []))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("probe", "prewarm-numba", "smoke"))
    parser.add_argument("--out", type=Path, help="the JSON to write (probe, smoke)")
    args = parser.parse_args(argv)
    if args.step == "prewarm-numba":
        return prewarm_numba()
    if args.out is None:
        parser.error(f"{args.step} needs --out")
    return probe(args.out) if args.step == "probe" else smoke(args.out)


if __name__ == "__main__":
    sys.exit(main())
