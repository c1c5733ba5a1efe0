"""Races in the single-block kernel, hunted on the CPU with ThreadSanitizer.

``nnx_tiny_train`` is the one kernel whose threads share memory: its phases
hand activations, deltas, partial gradients, a minibatch's sample indices and
the next update's record to each other through shared memory, separated by
``__syncthreads()``, and its lanes combine sums by warp shuffles.
``cuda_emulation.build_race_checker`` compiles the real source with
``-fsanitize=thread`` and runs the block as the GPU does (one thread per CUDA
thread, a barrier per ``__syncthreads``), so a missing barrier shows as a data
race report even when the numbers happen to come out right. The last test
removes each barrier in turn and expects the report, so the checker is known
to see races (and every barrier is known to be needed).
"""
from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from nnx.backends import cuda_plan as plan
from nnx.backends.numpy_backend import NumpyBackend
from nnx.batching import BatchStream
from nnx.network import ACTIVATION_CODES, HEAD_CODES, Network, Objective, TrainState
from nnx.optim import SGD, Adam, RMSprop

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the race checker")

REF = NumpyBackend()
# The tutorial's plan (one hidden slice, 8 lanes per parameter, full batch, plain SGD), one with fewer
# rows than threads (hidden slices, so the partial-logits barrier is exercised too) under Adam on
# minibatches (the batch's sample indices and the alternating update records are shared too), and
# the tutorial's net under centered RMSprop with momentum on batches of 32 (three state arrays).
CASES = {
    "tutorial": ((2, 3, 2), 200, "tanh", "softmax", SGD(0.5), None),
    "hidden-slices-adam-batches": ((2, 4, 2), 40, "sigmoid", "identity", Adam(0.05, amsgrad=True), 16),
    "rmsprop-batches": ((2, 3, 2), 200, "tanh", "softmax", RMSprop(0.01, momentum=0.5, centered=True), 32),
}
PASSES = 3


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    import cuda_emulation

    tmp = tmp_path_factory.mktemp("race")
    try:
        return cuda_emulation.build_race_checker(tmp), tmp
    except subprocess.CalledProcessError as exc:
        if "sanitize" in (exc.stderr or "") or "tsan" in (exc.stderr or ""):
            pytest.skip(f"this g++ cannot build with -fsanitize=thread: {exc.stderr.strip()[:200]}")
        raise


def _problem(sizes, n, hidden, output):
    rng = np.random.default_rng(1)
    net = Network(sizes, hidden, output, "float64")
    X = rng.normal(size=(n, sizes[0]))
    T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)] if output == "softmax" else rng.uniform(size=(n, sizes[-1]))
    params = [(rng.normal(size=(i, o)) / np.sqrt(i), rng.normal(size=o) * 0.1) for i, o in net.layer_shapes()]
    return net, X, T, params


def _run(checker, case, skip_line=-1):
    """One launch of PASSES updates; (the NumPy backend's state after them, the checker's run, its output)."""
    import cuda_emulation

    exe, tmp = checker
    sizes, n, hidden, output, optimizer, batch_size = CASES[case]
    net, X, T, params = _problem(sizes, n, hidden, output)
    batches = None if batch_size is None else BatchStream(np.random.default_rng(2), n, batch_size, True).take(PASSES)
    tiny = plan.plan_tiny_net(net, n, batch_size, len(optimizer.slots()))
    assert tiny.one_block
    lrs = optimizer.lr * np.linspace(1.0, 0.5, PASSES)
    (W1, b1), (W2, b2) = params
    zeros = [np.zeros_like(a) for _ in optimizer.slots() for a in (W1, b1, W2, b2)]
    inp, out = tmp / "in.bin", tmp / "out.bin"
    codes = dict(act=ACTIVATION_CODES[hidden], head=HEAD_CODES[output], mean=1, code=optimizer.code)
    cuda_emulation.write_race_input(inp, tiny, np.dtype(np.float64), [X, T, W1, b1, W2, b2], zeros, codes, 1e-3,
                                    optimizer.kernel_hyper(), lrs, batches, np.array([0, 5, 0, 0]), skip_line)
    run = subprocess.run([str(exe), str(inp), str(out)], capture_output=True, text=True, timeout=120)
    state = TrainState([(W.copy(), b.copy()) for W, b in params], step=5,
                       slots={k: [(np.zeros_like(W), np.zeros_like(b)) for W, b in params] for k in optimizer.slots()})
    REF.train(net, state, REF.prepare_data(net, X, T), Objective("mean", 1e-3), optimizer, lrs, batches)
    return state, run, out


@pytest.mark.parametrize("case", CASES)
def test_single_block_kernel_has_no_data_race_and_matches_numpy(checker, case):
    state, run, out = _run(checker, case)
    assert "ThreadSanitizer" not in run.stderr, run.stderr[:3000]
    assert run.returncode == 0, run.stderr[:3000]
    got = np.fromfile(out, dtype=np.float64)
    arrays = [a for pair in state.params for a in pair]
    arrays += [a for name in state.slots for pair in state.slots[name] for a in pair]
    want = np.concatenate([a.ravel() for a in arrays])
    counters = got[want.size:].view(np.int64)
    assert counters[:2].tolist() == [PASSES, 5 + PASSES]  # where the interval stands: next update, step
    got = got[:want.size]
    offset = 0
    for a in arrays:
        part = got[offset:offset + a.size]
        assert np.max(np.abs(part - a.ravel())) <= 1e-12 * np.max(np.abs(a)), (case, offset)
        offset += a.size


def _barrier_lines() -> list[int]:
    """Line numbers (1-based, in the checker's source) of every __syncthreads() in nnx_tiny_train."""
    import cuda_emulation

    lines = cuda_emulation.source((cuda_emulation.src.TINY_MLP,), with_main=True).splitlines()
    start = next(i for i, line in enumerate(lines) if "nnx_tiny_train(const T* X" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("}"))
    return [i + 1 for i in range(start, end) if "__syncthreads();" in lines[i]]


def test_every_barrier_is_needed_and_its_absence_is_reported(checker):
    """With hidden slices every barrier of the kernel runs; leaving any one out must be a reported race."""
    lines = _barrier_lines()
    assert len(lines) == 5  # after staging, after partial logits, after the head, after gradients, after updates
    for line in lines:
        _, run, _ = _run(checker, "hidden-slices-adam-batches", skip_line=line)
        assert run.returncode != 0 and re.search(r"WARNING: ThreadSanitizer: data race", run.stderr), \
            f"no race reported without the __syncthreads() on line {line}:\n{run.stderr[:2000]}"
