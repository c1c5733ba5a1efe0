"""Fits from several threads at once: the process survives, and every fit gives the bits of the same fit
run alone, on every backend; ``use_backend`` scopes stay with their own thread or asyncio task.

Two defects this guards against: Numba's ``workqueue`` threading layer aborted the whole process
(SIGABRT) when two threads entered parallel kernels at once, and one backend object per process
reused one set of parameter, gradient and scratch buffers for every fit of the same shape, so
concurrent fits silently overwrote each other's parameters.
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import nnx
from nnx.network import Network

THREADS = 3
REPEATS = 10

# ------------------------------------------------------------ the crash, in a subprocess
CRASH_SCRIPT = textwrap.dedent("""
    import json, sys, threading
    import numba, numpy as np
    import nnx
    from nnx.backends import numba_backend
    from nnx.backends.numba_backend import make_plan

    nnx.set_backend("numba")
    X, y = nnx.datasets.moons(4096, seed=0)
    passes, nets = int(sys.argv[1]), json.loads(sys.argv[2])

    def fit(sizes):
        return nnx.MLP(sizes).fit(X, y, passes=passes, log_every=10)

    together = [None] * len(nets)
    start = threading.Barrier(len(nets))

    def work(i):
        start.wait()
        together[i] = fit(nets[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(nets))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alone = [fit(sizes) for sizes in nets]
    same = [a.updates == b.updates == passes and a.history == b.history
            and all(np.array_equal(p, q) for pa, pb in zip(a.params, b.params) for p, q in zip(pa, pb))
            for a, b in zip(together, alone)]
    print(json.dumps({"same": same, "numba_threads": numba.get_num_threads(), "layer": numba.threading_layer(),
                      "serialised": numba_backend._parallel_guard() is numba_backend._PARALLEL_LOCK,
                      "parallel": [make_plan(m.net, 4096).parallel for m in alone]}))
""")


def run_crash_script(passes: int, nets: list[list[int]], **env) -> dict:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("NNX_BACKEND", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, str(passes), json.dumps(nets)],
                          capture_output=True, text=True, env=full_env, timeout=600)
    assert done.returncode == 0, f"exit code {done.returncode}\n{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def numba_available():
    reason = nnx.available_backends()["numba"]
    if reason is not None:
        pytest.skip(f"backend 'numba' unavailable here: {reason}")


def test_issue_reproduction_two_threads_survive_and_match_sequential_fits(numba_available):
    """The issue's own case (it aborted the process with SIGABRT, exit code 134), with 40 passes
    instead of 200: the abort came as soon as both threads were inside the chunked kernels, and
    the other 160 passes of four fits would add some 20 seconds."""
    result = run_crash_script(40, [[2, 1024, 2], [2, 1024, 3]])
    assert result["parallel"] == [True, True], "both fits must run the chunked (parallel) kernels"
    assert result["same"] == [True, True]
    assert result["layer"] == "workqueue" and result["serialised"]  # nnx's default layer, one kernel at a time


def omp_layer_reason() -> str | None:
    try:
        import numba.np.ufunc.omppool  # noqa: F401 - what Numba itself loads for the omp layer
    except ImportError as exc:
        return f"Numba's OpenMP threading layer cannot load here: {exc}"
    return None


def test_a_thread_safe_layer_runs_chunked_kernels_side_by_side(numba_available):
    """With NUMBA_THREADING_LAYER=omp (or tbb) nnx takes no lock: the layer itself takes
    parallel regions from several threads, and the numbers stay those of sequential fits."""
    reason = omp_layer_reason()
    if reason is not None:
        pytest.skip(reason)
    result = run_crash_script(20, [[2, 1024, 2], [2, 1024, 3]], NUMBA_THREADING_LAYER="omp")
    assert result["layer"] == "omp" and not result["serialised"]
    assert result["parallel"] == [True, True]
    assert result["same"] == [True, True]


@pytest.mark.parametrize("passes, nets, env", [
    (20, [[2, 1024, 2], [2, 1024, 3]], {"NUMBA_NUM_THREADS": "1"}),
    # a deeper network: a chunked fused layer, a BLAS layer (np.dot from both threads), a fused head
    (20, [[2, 128, 16, 2], [2, 128, 16, 3]], {}),
], ids=["one-numba-thread", "deeper"])
def test_crash_variants_survive_and_match_sequential_fits(numba_available, passes, nets, env):
    result = run_crash_script(passes, nets, **env)
    assert result["parallel"] == [True, True]
    if env:
        assert result["numba_threads"] == 1
    assert result["same"] == [True, True]


# ----------------------------------------------------- silent corruption, on every backend
# Same-shape models (the plan cache was keyed by shape and sample count) with different seeds.
# (layer sizes, samples, passes, log_every): each logging point is a separate backend call, so
# short intervals give a shared buffer many chances to be overwritten between calls.
CASES = {
    "serial": ([2, 64, 2], 2000, 24, 3),     # the issue's case: one-hidden-layer kernel on one thread
    "chunked": ([2, 64, 2], 4096, 6, 2),     # the same shape, enough samples to split across threads
    "deep": ([2, 32, 32, 2], 1000, 24, 3),   # fused layer, BLAS layer, fused head
}


def fit(backend_name: str, sizes, seed: int, X, y, passes: int = 30, log_every: int = 3) -> nnx.MLP:
    # a use_backend scope belongs to the thread that opens it, so each fit opens its own
    with nnx.use_backend(backend_name):
        return nnx.MLP(sizes, seed=seed).fit(X, y, passes=passes, lr=0.1, log_every=log_every)


def assert_bit_identical(model: nnx.MLP, reference: nnx.MLP) -> None:
    assert model.updates == reference.updates
    assert model.history == reference.history
    for (W, b), (W0, b0) in zip(model.params, reference.params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def run_in_threads(jobs) -> list:
    """Run callables in threads released together; return their results, re-raising any error."""
    results, errors = [None] * len(jobs), []
    start = threading.Barrier(len(jobs))

    def work(i):
        try:
            start.wait()
            results[i] = jobs[i]()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_cases_cover_the_serial_chunked_and_blas_kernels():
    """The cases above exercise what they claim on the Numba backend."""
    from nnx.backends.numba_backend import layer_paths, make_plan

    serial, chunked, deep = (make_plan(Network(tuple(case[0])), case[1]) for case in CASES.values())
    assert serial.mlp1 and not serial.parallel
    assert chunked.mlp1 and chunked.parallel and chunked.mlp1_chunks > 1
    assert "blas" in layer_paths(Network(tuple(CASES["deep"][0]))) and not deep.mlp1


@pytest.mark.parametrize("case", sorted(CASES))
def test_concurrent_same_shape_fits_equal_sequential_fits(backend, case):
    sizes, n, passes, log_every = CASES[case]
    X, y = nnx.datasets.moons(n, seed=0)
    alone = [fit(backend.name, sizes, seed, X, y, passes, log_every) for seed in range(THREADS)]
    assert not np.array_equal(alone[0].params[0][0], alone[1].params[0][0])  # the seeds give different fits
    for _ in range(REPEATS):
        together = run_in_threads([lambda s=seed: fit(backend.name, sizes, s, X, y, passes, log_every)
                                   for seed in range(THREADS)])
        for model, reference in zip(together, alone):
            assert_bit_identical(model, reference)


def test_concurrent_fits_of_one_shape_on_different_backends_match_their_own_sequential_fits():
    names = [name for name, reason in nnx.available_backends().items() if reason is None]
    X, y = nnx.datasets.moons(2000, seed=0)
    jobs = [(name, seed) for name in names for seed in (0, 1)]
    alone = [fit(name, [2, 64, 2], seed, X, y) for name, seed in jobs]
    for _ in range(REPEATS // 2):
        together = run_in_threads([lambda j=j: fit(j[0], [2, 64, 2], j[1], X, y) for j in jobs])
        for model, reference, (name, _) in zip(together, alone, jobs):
            assert model.backend_name == name
            assert_bit_identical(model, reference)


# ------------------------------------------------------------------ use_backend scopes
@pytest.fixture
def two_backends():
    names = [name for name, reason in nnx.available_backends().items() if reason is None]
    if len(names) < 2:
        pytest.skip(f"needs two usable backends; only {names} here")
    nnx.set_backend(names[0])
    yield names[0], names[1]
    nnx.set_backend(None)


def test_use_backend_scopes_in_threads_are_independent(two_backends):
    outer, other = two_backends
    wanted = [other, outer, other, None]  # None: a thread that opens no scope of its own
    inside = threading.Barrier(len(wanted))
    X, y = nnx.datasets.moons(100, seed=0)

    def work(name):
        seen = []
        if name is None:
            inside.wait()
            for _ in range(200):
                seen.append(nnx.get_backend().name)
            inside.wait()
            return seen, None, None
        with nnx.use_backend(name):
            inside.wait()  # every scope is open at once
            for _ in range(200):
                seen.append(nnx.get_backend().name)
            trained = nnx.MLP([2, 3, 2]).fit(X, y, passes=5).backend_name
            inside.wait()
        return seen, trained, nnx.get_backend().name

    with nnx.use_backend(outer):
        results = run_in_threads([lambda n=name: work(n) for name in wanted])
        assert nnx.get_backend().name == outer
    for name, (seen, trained, after) in zip(wanted, results):
        if name is None:
            assert set(seen) == {outer}  # other threads' scopes never show here
            continue
        assert set(seen) == {name}
        assert trained == name
        assert after == outer  # the scope closed back to the process-wide choice
    assert nnx.get_backend().name == outer
    assert "set_backend" in nnx.explain_backend()


def test_use_backend_scopes_in_asyncio_tasks_are_independent(two_backends):
    outer, other = two_backends

    async def scoped(name, together: asyncio.Barrier):
        seen = []
        with nnx.use_backend(name):
            await together.wait()  # both tasks are inside their scopes now
            for _ in range(20):
                seen.append(nnx.get_backend().name)
                await asyncio.sleep(0)  # let the other task run inside its scope
            await together.wait()
        seen.append(nnx.get_backend().name)  # after the scope: back to what the task started with
        return seen

    async def main():
        together = asyncio.Barrier(2)
        with nnx.use_backend(other):
            first = asyncio.create_task(scoped(outer, together))  # created inside: starts from `other`
        second = asyncio.create_task(scoped(other, together))  # created outside: starts from `outer`
        return await asyncio.gather(first, second), nnx.get_backend().name

    (first, second), after = asyncio.run(main())
    assert first == [outer] * 20 + [other]
    assert second == [other] * 20 + [outer]
    assert after == outer
    assert nnx.get_backend().name == outer
