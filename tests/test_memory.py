"""Memory: every fit, prediction and loss evaluation states its need before any work, the need is a
real upper bound of what it allocates, and a need above what is available is refused with
``nnx.OutOfMemoryError`` (figures and advice) with the model left as it was.

Peaks are measured independently of how nnx computes its estimates: with ``tracemalloc``, which
sees every NumPy array (NumPy reports its data buffers to it), and on the GPU with a CuPy memory
hook, which sees every block of CuPy's device memory pool.
"""
from __future__ import annotations

import numpy as np
import pytest

import nnx
from nnx import memory
from nnx.backends.base import Backend
from nnx.errors import format_bytes
from nnx.network import Network
from memory_peaks import peak_bytes, reserved_bytes

GiB = 1 << 30
MiB = 1 << 20


def problem(sizes, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, sizes[0])), rng.integers(0, sizes[-1], n)


# (layer sizes, samples, dtype): large enough that the buffers, not Python's bookkeeping, dominate
CASES = {
    "one-hidden-layer": ([2, 1024, 2], 4096, "float64"),
    "float32": ([2, 256, 2], 1000, "float32"),
    "deep-fused-and-blas": ([2, 256, 16, 2], 4096, "float64"),
    "wide-inputs": ([10, 200, 200, 5], 1000, "float64"),
}
LOOSEST = 4.0  # an estimate more than this many times the real peak would refuse fits that fit


@pytest.mark.parametrize("case", sorted(CASES))
def test_estimates_bound_the_measured_peaks_of_fit_predict_and_loss(backend, case):
    sizes, n, dtype = CASES[case]
    X, y = problem(sizes, n)
    model = nnx.MLP(sizes, dtype=dtype)
    model.fit(X, y, passes=1, log_every=1)  # compiles (Numba) before anything is measured
    model.predict_proba(X)
    model.loss(X, y)

    peaks = {
        "fit": peak_bytes(backend, lambda: model.fit(X, y, passes=3, log_every=1)),
        "predict": peak_bytes(backend, lambda: model.predict_proba(X)),
        "loss": peak_bytes(backend, lambda: model.loss(X, y)),
    }
    estimates = {
        "fit": memory.fit_bytes(backend, model.net, n),
        "predict": memory.predict_bytes(backend, model.net, n),
        "loss": memory.loss_bytes(backend, model.net, n),
    }
    for what, peak in peaks.items():
        assert peak <= estimates[what], f"{what}: measured {peak} bytes, estimated {estimates[what]}"
        allocated = estimates[what] - reserved_bytes(backend)
        assert allocated <= LOOSEST * peak, f"{what}: estimated {allocated} allocated, measured only {peak}"


def test_a_diverging_fit_stays_within_its_estimate(backend):
    """Finding the pass that diverged replays the interval; it must reuse the fit's buffers."""
    sizes, n = [2, 64, 64, 1], 1000
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(n, 2)), rng.normal(size=n)

    def diverge():
        model = nnx.MLP(sizes, hidden="relu", output="identity")
        with pytest.raises(nnx.NonFiniteLossError):
            model.fit(X, y, passes=20, lr=3.0, log_every=10)
        return model

    diverge()  # compiles first
    peak = peak_bytes(backend, diverge)
    assert peak <= memory.fit_bytes(backend, nnx.MLP(sizes, hidden="relu", output="identity").net, n)


def test_numpy_estimate_counts_the_activations_of_every_layer():
    """The reference backend keeps N x width activations, deltas and scratch for each layer."""
    net = nnx.MLP([2, 300, 40, 3]).net
    n = 1000
    activations = 8 * n * (300 + 40 + 3)
    assert memory.fit_bytes("numpy", net, n) >= 3 * activations
    assert memory.predict_bytes("numpy", net, n) >= activations


# ------------------------------------------------------------------------- refusals
def model_state(model: nnx.MLP):
    return [(W.copy(), b.copy()) for W, b in model.params], model.updates, dict(model.history)


def assert_unchanged(model: nnx.MLP, state) -> None:
    params, updates, history = state
    assert model.updates == updates and model.history == history
    for (W, b), (W0, b0) in zip(model.params, params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


@pytest.fixture
def no_work(monkeypatch):
    """Any attempt to move data to a backend or train fails the test: refusals come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the memory check refused it")

    for method in ("prepare_data", "prepare_params", "train", "train_and_loss", "predict_output", "data_loss"):
        monkeypatch.setattr(Backend, method, refuse)


def assert_refusal_message(exc: nnx.OutOfMemoryError, needed: int, available: int) -> None:
    message = str(exc)
    assert exc.needed == needed and exc.available == available
    assert format_bytes(needed) in message and format_bytes(available) in message
    assert "dtype='float32'" in message and "fewer hidden units" in message  # what to change
    assert "left as it was" in message


def test_fit_predict_and_loss_above_the_available_memory_are_refused_before_any_work(backend, monkeypatch):
    X, y = problem([2, 64, 2], 500)
    model = nnx.MLP([2, 64, 2]).fit(X, y, passes=20, log_every=10)
    before = model_state(model)
    need = memory.fit_bytes(backend, model.net, 500)

    monkeypatch.setattr(backend, "available_bytes", lambda: need)  # exactly enough: it trains
    model.fit(X, y, passes=10, log_every=10)
    assert model.updates == 30
    before = model_state(model)

    monkeypatch.setattr(backend, "available_bytes", lambda: need - 1)
    with pytest.raises(nnx.OutOfMemoryError) as refused:
        model.fit(X, y, passes=10, log_every=10)
    assert_refusal_message(refused.value, need, need - 1)
    assert "training a 2-64-2 float64 network on 500 samples" in str(refused.value)
    assert_unchanged(model, before)

    monkeypatch.setattr(backend, "available_bytes", lambda: 1000)
    for action, estimate in [(lambda: model.predict(X), memory.predict_bytes),
                             (lambda: model.predict_proba(X), memory.predict_bytes),
                             (lambda: model.loss(X, y), memory.loss_bytes)]:
        with pytest.raises(MemoryError) as refused:  # a MemoryError, for code that catches those
            action()
        assert_refusal_message(refused.value, estimate(backend, model.net, 500), 1000)
    assert_unchanged(model, before)


def test_unknown_available_memory_refuses_nothing(backend, monkeypatch):
    monkeypatch.setattr(backend, "available_bytes", lambda: None)
    X, y = problem([2, 8, 2], 100)
    assert nnx.MLP([2, 8, 2]).fit(X, y, passes=3, log_every=1).updates == 3


ISSUE_NET = [2, 2_000_000, 2]  # the issue's case: 30.5 GiB of float32 activations at N = 4096
ISSUE_N = 4096


def test_issue_case_is_refused_on_numpy_before_any_work(monkeypatch, no_work):
    monkeypatch.setattr(memory, "host_available_bytes", lambda: 16 * GiB)  # deterministic, whatever the machine
    model = nnx.MLP(ISSUE_NET, dtype="float32")
    before = model_state(model)
    X, y = nnx.datasets.moons(ISSUE_N, seed=0)
    activations = ISSUE_N * ISSUE_NET[1] * 4  # one N x H float32 array
    with nnx.use_backend("numpy"):
        with pytest.raises(nnx.OutOfMemoryError) as refused:
            model.fit(X, y, passes=200, log_every=10)
        assert refused.value.needed >= 3 * activations  # activations, deltas and scratch at least
        assert_refusal_message(refused.value, refused.value.needed, 16 * GiB)
        for action in (lambda: model.predict(X), lambda: model.loss(X, y)):  # one N x H forward: 30.5 GiB
            with pytest.raises(nnx.OutOfMemoryError) as refused:
                action()
            assert refused.value.needed >= activations
    assert_unchanged(model, before)


def test_issue_case_on_numba_needs_no_activations(numba_backend, monkeypatch):
    """The compiled loop computes the loss itself and the compiled forward streams blocks of
    samples, so neither fit, loss nor predict needs the N x H activations: the need grows by
    the data alone (a few copies of 2 inputs and 2 outputs) per sample, not by H values."""
    from nnx.backends import numba_backend as module

    monkeypatch.setattr(module, "_max_threads", lambda: 2)  # block buffers are per Numba thread
    net = Network(tuple(ISSUE_NET), dtype="float32")
    activations = ISSUE_N * ISSUE_NET[1] * 4
    for estimate in (memory.fit_bytes, memory.loss_bytes, memory.predict_bytes):
        need = estimate(numba_backend, net, ISSUE_N)
        per_sample = (estimate(numba_backend, net, 2 * ISSUE_N) - need) / ISSUE_N
        assert per_sample <= 16 * 8 * (2 + 2), estimate.__name__  # at most 16 float64 copies of a sample
        assert need < activations / 16, estimate.__name__


@pytest.fixture
def numba_backend():
    reason = nnx.available_backends()["numba"]
    if reason is not None:
        pytest.skip(f"backend 'numba' unavailable here: {reason}")
    with nnx.use_backend("numba") as active:
        yield active


# ---------------------------------------------------------------------- the errors
def test_out_of_memory_errors_are_memory_errors_exported_from_nnx():
    assert issubclass(nnx.OutOfMemoryError, MemoryError)
    assert issubclass(nnx.GpuMemoryError, nnx.OutOfMemoryError)
    assert {"OutOfMemoryError", "GpuMemoryError"} <= set(nnx.__all__)
    exc = nnx.GpuMemoryError("training", 3 * GiB, GiB, "Use fewer samples.")
    assert "GPU memory" in str(exc) and "3.00 GiB" in str(exc) and "1.00 GiB" in str(exc)
    with pytest.raises(MemoryError):
        raise exc


# ------------------------------------------------------------------ host memory, cgroups
@pytest.fixture
def fake_host(tmp_path, monkeypatch):
    """A fake /proc and /sys/fs/cgroup: write files with ``put``; MemAvailable is 16 GiB."""
    def put(relative: str, text: str) -> None:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    put("proc/meminfo", "MemTotal:       33554432 kB\nMemFree:         1000000 kB\n"
                        f"MemAvailable:   {16 * GiB // 1024} kB\n")
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "proc/meminfo"))
    monkeypatch.setattr(memory, "SELF_CGROUP", str(tmp_path / "proc/self/cgroup"))
    monkeypatch.setattr(memory, "CGROUP_ROOT", str(tmp_path / "cgroup"))
    (tmp_path / "cgroup").mkdir()
    return put


def test_host_memory_without_cgroup_limit_is_memavailable(fake_host):
    assert memory.host_available_bytes() == 16 * GiB  # no /proc/self/cgroup at all
    fake_host("proc/self/cgroup", "0::/\n")
    fake_host("cgroup/memory.max", "max\n")
    fake_host("cgroup/memory.current", f"{GiB}\n")
    assert memory.host_available_bytes() == 16 * GiB


def test_cgroup_v2_limit_caps_memavailable_counting_reclaimable_cache_as_free(fake_host):
    """A container with its own cgroup namespace sees its cgroup at the root."""
    fake_host("proc/self/cgroup", "0::/\n")
    fake_host("cgroup/memory.max", f"{2 * GiB}\n")
    fake_host("cgroup/memory.current", f"{1536 * MiB}\n")  # 1.5 GiB charged, a third of it file cache
    fake_host("cgroup/memory.stat", f"anon {1024 * MiB}\nfile {512 * MiB}\ninactive_file {512 * MiB}\nbroken\n\n")
    assert memory.host_available_bytes() == 1 * GiB


def test_nested_cgroup_limits_apply_from_every_parent(fake_host):
    """A batch job (no namespace): its own folder and its parents, the tightest room wins."""
    fake_host("proc/self/cgroup", "0::/jobs/job_7/step_0\n")
    fake_host("cgroup/jobs/job_7/step_0/memory.max", "max\n")
    fake_host("cgroup/jobs/job_7/step_0/memory.current", f"{100 * MiB}\n")
    fake_host("cgroup/jobs/job_7/memory.max", f"{4 * GiB}\n")
    fake_host("cgroup/jobs/job_7/memory.current", f"{3 * GiB}\n")
    fake_host("cgroup/jobs/memory.max", f"{8 * GiB}\n")
    fake_host("cgroup/jobs/memory.current", f"{2 * GiB}\n")
    assert memory.host_available_bytes() == 1 * GiB
    fake_host("cgroup/jobs/memory.current", f"{7680 * MiB}\n")  # the parent is nearly full
    assert memory.host_available_bytes() == 512 * MiB


def test_cgroup_v1_limit_and_its_unlimited_marker(fake_host):
    fake_host("proc/self/cgroup", "5:cpuset:/\n4:memory:/docker/abc123\n3:cpu,cpuacct:/docker/abc123\n")
    # the container's own cgroup is mounted as the hierarchy's root (no /docker/abc123 below it)
    fake_host("cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n")
    fake_host("cgroup/memory/memory.usage_in_bytes", f"{GiB}\n")
    assert memory.host_available_bytes() == 16 * GiB
    fake_host("cgroup/memory/memory.limit_in_bytes", f"{3 * GiB}\n")
    fake_host("cgroup/memory/memory.stat", f"cache {GiB}\ninactive_file 10\ntotal_inactive_file {512 * MiB}\n")
    assert memory.host_available_bytes() == 3 * GiB - 512 * MiB


def test_cgroup_usage_above_its_limit_leaves_nothing(fake_host):
    fake_host("proc/self/cgroup", "0::/\n")
    fake_host("cgroup/memory.max", f"{GiB}\n")
    fake_host("cgroup/memory.current", f"{GiB + 4096}\n")
    assert memory.host_available_bytes() == 0


def test_a_cgroup_limit_refuses_a_fit_that_memavailable_would_allow(fake_host):
    fake_host("proc/self/cgroup", "0::/\n")
    fake_host("cgroup/memory.max", f"{64 * MiB}\n")
    fake_host("cgroup/memory.current", f"{32 * MiB}\n")
    X, y = problem([2, 1000, 2], 4000)
    model = nnx.MLP([2, 1000, 2])
    with nnx.use_backend("numpy"):  # needs about 130 MiB: far below MemAvailable, above the cgroup's room
        with pytest.raises(nnx.OutOfMemoryError) as refused:
            model.fit(X, y, passes=1)
    assert refused.value.available == 32 * MiB
    assert model.updates == 0 and model.history == {}
