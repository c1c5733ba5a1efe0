"""The CuPy backend's updates, run on the CPU: real kernel sources, NumPy for cuBLAS.

``cuda_emulation`` compiles ``nnx/kernels/*.cu`` for the host, so these tests
check the kernels' arithmetic and indexing and the orchestration in
``cuda_program`` (update records, row blocks, chunks, slices, minibatch
gathers, launch order) against the NumPy backend under the parity rules:
every optimiser, full batch and minibatches, on each path (the single-block
kernel, the sliced kernels, cuBLAS products with fused kernels). CUDA-graph
replay is checked twice: the replay logic with a recording stand-in for a
stream, and the programs' own updates captured by an emulated stream and
replayed across steps, schedules and intervals. The single-block kernel runs
on real threads (one per CUDA thread, barriers for ``__syncthreads``); its
races are hunted with ThreadSanitizer in ``test_cuda_races``. What they cannot
check (cuBLAS itself, real graph capture, the GPU's math library) is covered
by the ``gpu`` tests.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

import nnx
from nnx.backends import cuda_plan as plan
from nnx.backends.base import learning_rates
from nnx.backends.cuda_program import (DenseProgram, GraphCaptureWarning, PassReplayer, TinyProgram, Trainer,
                                       build_program, kernel_args)
from nnx.backends.numpy_backend import NumpyBackend
from nnx.batching import BatchStream
from nnx.kernels import cuda_sources as src
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD, Adam, Cosine, RMSprop
from nnx.optim import learning_rates as schedule_rates
from optimizer_cases import OPTIMIZERS
from tolerances import params_error

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the kernel emulation")

REF = NumpyBackend()


@pytest.fixture
def device(lib):
    import cuda_emulation

    dev = cuda_emulation.EmulatedDevice(lib, stream=cuda_emulation.EmulatedStream())
    yield dev
    assert dev.guards_intact(), "a kernel wrote outside its buffer"


def _problem(sizes, hidden, output, dtype, n, seed=0):
    rng = np.random.default_rng(seed)
    net = Network(tuple(sizes), hidden, output, dtype)
    X = rng.normal(size=(n, sizes[0]))
    if output == "softmax":
        T = np.eye(sizes[-1])[rng.integers(0, sizes[-1], n)]
    else:
        T = rng.uniform(size=(n, sizes[-1]))
    params = [(rng.normal(size=(i, o)) / np.sqrt(i), rng.normal(size=o) * 0.1) for i, o in net.layer_shapes()]
    data = REF.prepare_data(net, X, T)
    return net, data, [(W.astype(dtype), b.astype(dtype)) for W, b in params]


def _copy(params):
    return [(W.copy(), b.copy()) for W, b in params]


def _rel_err(a_params, b_params) -> float:
    """Largest difference, each array scaled by its own largest magnitude (the parity rule)."""
    return params_error(b_params, a_params)


def _state(params, optimizer) -> TrainState:
    """A fresh training state: copies of ``params``, the optimiser's state arrays at zero."""
    return TrainState(_copy(params), slots={name: [(np.zeros_like(W), np.zeros_like(b)) for W, b in params]
                                            for name in optimizer.slots()})


def _reference(net, data, params, passes, objective, lr):
    state = TrainState(_copy(params))
    REF.train(net, state, data, objective, SGD(lr), passes)
    return state.params


def _trainer(device, net, data, params, build=None) -> Trainer:
    """What the CuPy backend builds for a fit: programs from ``build_program`` (or ``build``)."""
    if build is None:
        def build(rows, slots):
            return build_program(device, net, params, data.X, data.T, free_bytes=device.free_bytes(), what="a test",
                                 rows=rows, slots=slots)
    return Trainer(device, net, data.X, build)


def _run(trainer, state, objective, optimizer, lrs, batches=None, replayer=None) -> TrainState:
    """``CupyBackend.train`` on the emulated device: the trainer's updates, then the state's counts."""
    lrs = learning_rates(optimizer, lrs)
    trainer.train(state.slots, optimizer, lrs, batches, state.step, objective.l2, objective.reduction == "mean",
                  replayer=replayer, key="fit", tag="net")
    state.updates += lrs.size
    state.step += lrs.size
    return state


def _program(kind, device, net, data, params, **kw):
    n = data.n_samples
    if kind == "dense":
        return DenseProgram(device, net, params, data.X, data.T, kw.get("chunks") or plan.plan_chunks(net, n, 1 << 40))
    tiny = kw.get("tiny") or plan.plan_tiny_net(net, n)
    return TinyProgram(device, net, params, data.X, data.T, tiny)


def _train(device, net, data, params, passes, objective, lr, program=None):
    """``passes`` full-batch plain SGD updates at ``lr`` (through ``program`` when given)."""
    state = TrainState(_copy(params))
    build = None if program is None else (lambda rows, slots: program(state.params))
    return _run(_trainer(device, net, data, state.params, build), state, objective, SGD(lr), passes).params


CASES = [
    ("dense", (2, 3, 3), "tanh", "softmax"),
    ("dense", (4, 7, 5, 3), "relu", "softmax"),
    ("dense", (3, 6, 5, 2), "sigmoid", "sigmoid"),
    ("dense", (5, 4, 1), "identity", "identity"),
    ("tiny", (2, 3, 3), "tanh", "softmax"),
    ("tiny", (2, 40, 2), "relu", "sigmoid"),
    ("tiny", (3, 50, 4), "sigmoid", "identity"),
    ("tiny", (8, 17, 8), "identity", "softmax"),
]


def _path(kind, net, data, device):
    """A program factory for ``kind``: dense, or the sliced small-network kernels."""
    if kind == "dense":
        return lambda p: _program("dense", device, net, data, p)
    return lambda p: _program("tiny", device, net, data, p, tiny=_sliced_plan(net, data))


def _sliced_plan(net, data) -> plan.TinyPlan:
    n, h = data.n_samples, net.layer_sizes[1]
    return plan.TinyPlan(n, net.n_inputs, h, net.n_outputs, slices_h=min(3, h), slices_n=4, one_block=False)


@pytest.mark.parametrize("kind,sizes,hidden,output", CASES)
@pytest.mark.parametrize("reduction,l2", [("mean", 1e-3), ("sum", 0.0)])
def test_float64_one_pass_and_many_match_numpy(device, kind, sizes, hidden, output, reduction, l2):
    net, data, params = _problem(sizes, hidden, output, "float64", 120)
    objective, lr = Objective(reduction, l2), 0.5 if reduction == "mean" else 0.004
    for passes, tol in ((1, 1e-12), (200, 1e-10)):
        got = _train(device, net, data, params, passes, objective, lr, _path(kind, net, data, device))
        assert _rel_err(_reference(net, data, params, passes, objective, lr), got) <= tol


@pytest.mark.parametrize("kind,sizes,hidden,output", CASES[:2] + CASES[4:6])
def test_float32_matches_numpy_within_1e_4(device, kind, sizes, hidden, output):
    net, data, params = _problem(sizes, hidden, output, "float32", 120)
    objective = Objective("mean", 1e-3)
    got = _train(device, net, data, params, 100, objective, 0.5, _path(kind, net, data, device))
    assert _rel_err(_reference(net, data, params, 100, objective, 0.5), got) <= 1e-4


@pytest.mark.parametrize("hidden,output", [("tanh", "softmax"), ("relu", "sigmoid")])
def test_single_block_kernel_runs_whole_passes_in_one_launch(device, hidden, output):
    net, data, params = _problem((2, 3, 3) if output == "softmax" else (2, 5, 2), hidden, output, "float64", 200)
    assert plan.plan_tiny_net(net, 200).one_block
    objective = Objective("mean", 1e-3)
    got = _train(device, net, data, params, 300, objective, 1.0)
    assert device.launches == ["nnx_tiny_train"]
    assert _rel_err(_reference(net, data, params, 300, objective, 1.0), got) <= 1e-10


# Single-block plans that take each path of nnx_tiny_train (the plan is asserted, so a change
# to the planner cannot quietly stop a path from being tested).
ONE_BLOCK_CASES = [
    ((2, 3, 2), 200, "float64", "tanh", "softmax", dict(threads=256, slices_h=1, lanes=8)),  # tutorial 003
    ((2, 4, 2), 16, "float64", "sigmoid", "identity", dict(slices_h=4)),  # partial logits over slices of H
    ((2, 20, 2), 200, "float64", "relu", "sigmoid", dict(slices_n=6, lanes=2)),  # slices shrunk to fit
    ((2, 4, 2), 1000, "float32", "tanh", "softmax", dict(threads=512, lanes=16)),  # more samples than 256
    ((3, 5, 4), 100, "float64", "identity", "softmax", dict(threads=256)),  # width 4
    ((8, 6, 8), 64, "float64", "tanh", "sigmoid", dict(threads=256, slices_h=4)),  # width 8
]


@pytest.mark.parametrize("sizes,n,dtype,hidden,output,expected", ONE_BLOCK_CASES,
                         ids=[f"{'x'.join(map(str, c[0]))}-N{c[1]}-{c[2]}" for c in ONE_BLOCK_CASES])
def test_single_block_kernel_on_real_threads_matches_numpy_and_repeats_its_bits(
        device, sizes, n, dtype, hidden, output, expected):
    net, data, params = _problem(sizes, hidden, output, dtype, n)
    tiny = plan.plan_tiny_net(net, n)
    assert tiny.one_block and {k: getattr(tiny, k) for k in expected} == expected
    assert tiny.width == src.tiny_width(sizes[0], sizes[-1])
    objective = Objective("mean", 1e-3)
    one, tol = (1e-12, 1e-10) if dtype == "float64" else (1e-5, 1e-4)
    first = _train(device, net, data, params, 1, objective, 0.5)
    assert _rel_err(_reference(net, data, params, 1, objective, 0.5), first) <= one
    runs = [_train(device, net, data, params, 20, objective, 0.5) for _ in range(2)]
    assert _rel_err(_reference(net, data, params, 20, objective, 0.5), runs[0]) <= tol
    assert all(np.array_equal(a, b) for pa, pb in zip(*runs) for a, b in zip(pa, pb))


def test_sliced_tiny_plan_matches_numpy(device):
    net, data, params = _problem((2, 64, 2), "tanh", "softmax", "float64", 96)
    tiny = plan.TinyPlan(96, 2, 64, 2, slices_h=5, slices_n=7, one_block=False)
    objective = Objective("mean", 1e-3)
    got = _train(device, net, data, params, 20, objective, 0.5, lambda p: _program("tiny", device, net, data, p,
                                                                                   tiny=tiny))
    assert _rel_err(_reference(net, data, params, 20, objective, 0.5), got) <= 1e-12


def test_chunking_gives_bit_identical_parameters(device):
    net, data, params = _problem((4, 9, 6, 3), "tanh", "softmax", "float64", 100)
    objective = Objective("mean", 1e-3)
    results = []
    for chunk in (16, 32, 112):
        chunks = plan.ChunkPlan(100, 16, chunk)
        results.append(_train(device, net, data, params, 10, objective, 0.5,
                              lambda p, c=chunks: _program("dense", device, net, data, p, chunks=c)))
    for other in results[1:]:
        for (W, b), (W2, b2) in zip(results[0], other):
            assert np.array_equal(W, W2) and np.array_equal(b, b2)
    assert _rel_err(_reference(net, data, params, 10, objective, 0.5), results[0]) <= 1e-12


@pytest.mark.parametrize("kind,sizes,hidden,output", CASES)
def test_loss_outputs_and_gradients_match_numpy(device, kind, sizes, hidden, output):
    net, data, params = _problem(sizes, hidden, output, "float64", 50)
    program = _program(kind, device, net, data, params)
    out, loss = device.empty((50, net.n_outputs), np.float64), device.empty(50, np.float64)
    program.head_rows(src.MODE_LOSS, out, loss)
    assert np.isclose(loss.sum() / 50, REF.data_loss(net, params, data), rtol=1e-12, atol=0)
    predict = DenseProgram(device, net, params, data.X, None, plan.plan_chunks(net, 50, 1 << 40)) \
        if kind == "dense" else TinyProgram(device, net, params, data.X, None, plan.plan_tiny_net(net, 50))
    predict.head_rows(src.MODE_OUTPUT, out, loss)
    np.testing.assert_allclose(out, REF.predict_output(net, params, data.X), rtol=1e-12, atol=1e-15)
    objective = Objective("mean", 1e-2)
    got = program.gradients(1 / 50, objective.l2)
    assert _rel_err(REF.gradients(net, params, data, objective), got) <= 1e-12


def test_launches_per_pass_are_a_small_constant(device):
    net, data, params = _problem((2, 3, 3), "tanh", "softmax", "float64", 200)
    objective = Objective("mean", 0.0)
    _train(device, net, data, params, 1, objective, 0.1, lambda p: _program("dense", device, net, data, p))
    assert len(device.launches) == 13  # the record, 6 cuBLAS products + 6 fused kernels, captured into graphs
    device.launches.clear()
    _train(device, net, data, params, 1, objective, 0.1, lambda p: _program(
        "tiny", device, net, data, p, tiny=plan.TinyPlan(200, 2, 3, 3, 1, 4, False)))
    assert len(device.launches) == 6


def test_kernel_args_are_converted_to_the_declared_c_types():
    a = np.zeros(4)
    args = kernel_args("nnx_activation_backward", np.dtype("float64"), (a, a, 4, 1))
    assert [type(x) for x in args[2:]] == [np.int64, np.int32]
    f32, counters, table = a.astype(np.float32), np.zeros(4, np.int64), np.zeros(6, np.int64)
    args = kernel_args("nnx_dense_update", np.dtype("float32"),
                       (f32, f32, 3, f32, f32, 1, 1, 0, 0.1, Adam.code, a, f32, counters, table))
    assert type(args[8]) is np.float32 and type(args[6]) is np.int32 and type(args[9]) is np.int32
    with pytest.raises(TypeError, match="float32 array"):
        kernel_args("nnx_activation_backward", np.dtype("float32"), (a, a, 4, 1))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        kernel_args("nnx_activation_backward", np.dtype("float64"), (a, a, 4))
    with pytest.raises(TypeError, match=r"a T\* const\* argument must be a int64 array"):
        kernel_args("nnx_dense_update", np.dtype("float64"), (a, a, 3, a, a, 1, 1, 0, 0.1, 0, a, a, counters, a))
    with pytest.raises(TypeError, match=r"const long long\* argument must be a int64 array"):
        kernel_args("nnx_dense_update", np.dtype("float64"), (a, a, 3, a, a, 1, 1, 0, 0.1, 0, a, a, a, table))


# ----------------------------------------------- optimisers, minibatches and schedules
# Each path of the CuPy backend: tutorial 003's net on the single-block kernel and on the sliced
# kernels, and a 3-hidden-layer ReLU net on cuBLAS products with fused kernels.
PATHS = {
    "single-block": ((2, 3, 2), "tanh"),
    "sliced": ((2, 3, 2), "tanh"),
    "dense": ((2, 16, 16, 16, 2), "relu"),
}
N_SAMPLES = 200


def _moons(sizes, hidden, dtype="float64"):
    X, y = nnx.datasets.moons(N_SAMPLES, 0.2, 0)
    model = nnx.MLP(list(sizes), hidden=hidden, dtype=dtype, seed=3)
    net = model.net
    return net, REF.prepare_data(net, X, np.eye(2)[y]), [(W.astype(dtype), b.astype(dtype)) for W, b in model.params]


def _interval(optimizer, stream, step, count, per_epoch, schedule):
    """The learning rates and batches of the next ``count`` updates, as the training driver makes them."""
    lrs = schedule_rates(schedule, optimizer.lr, step, count, per_epoch)
    return lrs, (stream.take(count) if stream is not None else None)


def _fit_both(device, path, optimizer, batch_size, intervals, *, replayer=None, schedule=Cosine(T_max=40)):
    """The same fit on the emulated device and on the NumPy backend, interval by interval."""
    sizes, hidden = PATHS[path]
    net, data, params = _moons(sizes, hidden)
    if path != "single-block":
        assert plan.is_tiny(net) == (path != "dense")
    per_epoch = 1 if batch_size is None else -(-N_SAMPLES // batch_size)
    streams = [None if batch_size is None else BatchStream(np.random.default_rng(11), N_SAMPLES, batch_size, True)
               for _ in range(2)]
    got, want = _state(params, optimizer), _state(params, optimizer)
    trainer = _trainer(device, net, data, got.params)
    objective = Objective("mean", 0.01)
    for count in intervals:
        lrs, batches = _interval(optimizer, streams[0], got.step, count, per_epoch, schedule)
        _run(trainer, got, objective, optimizer, lrs, batches, replayer)
        lrs, batches = _interval(optimizer, streams[1], want.step, count, per_epoch, schedule)
        REF.train(net, want, data, objective, optimizer, lrs, batches)
    return got, want, trainer


def _state_error(got: TrainState, want: TrainState) -> float:
    errors = [params_error(got.params, want.params)]
    errors += [params_error(got.slots[name], want.slots[name]) for name in want.slots]
    return max(errors)


@pytest.mark.parametrize("batch_size", [None, 32], ids=["full", "batch32"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimiser_on_every_path_trains_like_numpy(device, monkeypatch, name, path, batch_size):
    """One epoch to 1e-12, then ten to 1e-10: parameters and the optimiser's state, under a
    cosine schedule, with the tutorial's L2 and the per-batch mean."""
    if path == "sliced":
        monkeypatch.setattr(plan, "ONE_BLOCK_MAX_WORK", 0)
    optimizer = OPTIMIZERS[name]()
    per_epoch = 1 if batch_size is None else -(-N_SAMPLES // batch_size)
    got, want, trainer = _fit_both(device, path, optimizer, batch_size, [per_epoch])
    assert got.step == want.step == per_epoch
    assert _state_error(got, want) <= 1e-12
    program = trainer.program(None if batch_size is None else batch_size, len(optimizer.slots()))
    assert program.fused_passes == (path == "single-block")
    assert (program.source is not None) == (batch_size is not None and path != "single-block")
    got, want, _ = _fit_both(device, path, optimizer, batch_size, [per_epoch] * 10)
    assert _state_error(got, want) <= 1e-10


@pytest.mark.parametrize("path,name,batch_size", [("dense", "adam", 32), ("sliced", "rmsprop", None),
                                                  ("sliced", "momentum", 48), ("dense", "adamw", None)])
def test_graphs_are_captured_once_and_replayed_across_steps_and_intervals(device, monkeypatch, path, name,
                                                                          batch_size):
    """Ten intervals of one epoch each: one capture (a graph of one epoch's updates), replayed
    with each interval's learning rates and batches read from device memory; the same bits as
    launching every kernel, and NumPy's numbers."""
    import cuda_emulation

    if path == "sliced":
        monkeypatch.setattr(plan, "ONE_BLOCK_MAX_WORK", 0)
    optimizer = OPTIMIZERS[name]()
    per_epoch = 1 if batch_size is None else -(-N_SAMPLES // batch_size)
    if batch_size is None:
        per_epoch = 5  # intervals of five full-batch updates
    replayer = PassReplayer(device.stream, capture_errors=())
    got, want, trainer = _fit_both(device, path, optimizer, batch_size, [per_epoch] * 10, replayer=replayer)
    assert device.stream.captures == 1 and replayer.captures == 1
    assert device.stream.replays == 10
    program = trainer.program(batch_size, len(optimizer.slots()))
    per_update = trainer.launches_per_pass(program)
    assert len(device.launches) == per_update * (1 + per_epoch)  # the warm-up, then one capture
    assert _state_error(got, want) <= 1e-10
    eager_device = cuda_emulation.EmulatedDevice(device.lib)
    eager, _, _ = _fit_both(eager_device, path, optimizer, batch_size, [per_epoch] * 10)
    assert len(eager_device.launches) == per_update * per_epoch * 10
    for name_ in ["params"]:
        assert all(np.array_equal(a, b) for pa, pb in zip(getattr(got, name_), getattr(eager, name_))
                   for a, b in zip(pa, pb))
    assert all(np.array_equal(a, b) for key in got.slots for pa, pb in zip(got.slots[key], eager.slots[key])
               for a, b in zip(pa, pb))


def test_a_longer_interval_moves_the_buffers_and_captures_again(device):
    optimizer = Adam(0.01)
    replayer = PassReplayer(device.stream)
    got, want, trainer = _fit_both(device, "dense", optimizer, 50, [4, 4, 9, 9, 4], replayer=replayer)
    assert trainer.record.generation == 3  # 1-element buffers, room for 4 updates, then for 9
    assert device.stream.captures == 3  # 4 updates, then 9 and 4 at the new addresses
    assert _state_error(got, want) <= 1e-10


def test_a_minibatch_larger_than_the_data_and_a_last_smaller_batch(device):
    """Batches of 64 on 200 samples end with 8 rows; batches of 500 are the whole set, shuffled."""
    for batch_size in (64, 500):
        got, want, _ = _fit_both(device, "dense", SGD(0.1, momentum=0.5), batch_size, [3, 5])
        assert _state_error(got, want) <= 1e-12


def test_a_fit_split_in_intervals_equals_one_interval_bit_for_bit(device):
    """What the training driver relies on for resumed fits: the updates do not depend on how
    an epoch is cut into intervals (the bias corrections come from the step, not from the cut)."""
    whole, _, _ = _fit_both(device, "dense", Adam(0.01), 32, [21])
    split, _, _ = _fit_both(device, "dense", Adam(0.01), 32, [5, 9, 7])
    assert whole.step == split.step == 21
    for key in ("params",):
        assert all(np.array_equal(a, b) for pa, pb in zip(getattr(whole, key), getattr(split, key))
                   for a, b in zip(pa, pb))
    single_whole, _, _ = _fit_both(device, "single-block", RMSprop(0.01, centered=True), 32, [21])
    single_split, _, _ = _fit_both(device, "single-block", RMSprop(0.01, centered=True), 32, [5, 9, 7])
    assert all(np.array_equal(a, b) for pa, pb in zip(single_whole.params, single_split.params)
               for a, b in zip(pa, pb))


def test_single_block_plans_make_room_for_the_optimisers_state_and_the_batch():
    plain = plan.plan_tiny(200, 2, 3, 2, 8)
    adam = plan.plan_tiny(200, 2, 3, 2, 8, slots=3)
    batched = plan.plan_tiny(200, 2, 3, 2, 8, rows=32, slots=2)
    assert plain.one_block and adam.one_block and batched.one_block and batched.batched
    assert adam.shared_bytes(8) - plain.shared_bytes(8) == 3 * plain.grad_size * 8
    assert batched.batch_rows == 32 and batched.slices_n == 32 and batched.slices_h == 3
    assert plan.plan_tiny(4000, 2, 2, 2, 8, rows=32).one_block is False  # 4,000 samples overflow shared memory
    assert plan.plan_tiny(4000, 2, 2, 2, 8, rows=32).n == 32  # the sliced plan is over the batch buffer


def test_an_optimiser_the_kernels_do_not_implement_is_refused(device):
    class Tuned(SGD):
        pass

    net, data, params = _problem((2, 3, 2), "tanh", "softmax", "float64", 20)
    trainer = _trainer(device, net, data, _copy(params))
    with pytest.raises(TypeError, match="do not implement Tuned"):
        trainer.train({}, Tuned(0.1), np.full(3, 0.1), None, 0, 0.0, True)
    assert device.launches == []


# ------------------------------------------------------------ graph replay
class _Graph:
    def __init__(self, stream, ops):
        self.stream, self.ops = stream, ops

    def launch(self, stream):
        assert stream is self.stream
        self.stream.launched += 1
        for op in self.ops:
            op()


class _RecordingStream:
    """Stands in for a CUDA stream: while capturing, work is recorded instead of run."""

    def __init__(self, fail_capture=False):
        self.recording, self.launched, self.captures, self.fail_capture = None, 0, 0, fail_capture

    def begin_capture(self):
        assert self.recording is None
        self.recording = []

    def end_capture(self):
        ops, self.recording = self.recording, None
        if self.fail_capture:
            raise RuntimeError("cudaErrorStreamCaptureInvalidated")
        self.captures += 1
        return _Graph(self, ops)


def _counter(stream):
    done = []

    def run_pass():
        op = lambda: done.append(1)  # noqa: E731
        if stream.recording is not None:
            stream.recording.append(op)
        else:
            op()
    return done, run_pass


@pytest.mark.parametrize("passes", [0, 1, 2, 63, 64, 65, 200, 1000])
def test_replayer_runs_exactly_the_requested_passes(passes):
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, per_graph=64)
    replayer.run(("cfg",), run_pass, passes, launches=5, warm_up=lambda: None)
    assert len(done) == passes
    assert stream.captures <= 2 and stream.launched <= passes // 64 + 1


def test_replayer_captures_once_and_replays():
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    warm = []
    replayer = PassReplayer(stream, per_graph=10)
    for _ in range(5):
        replayer.run(("cfg",), run_pass, 20, launches=5, warm_up=lambda: warm.append(1))
    assert len(done) == 100 and len(warm) == 1
    assert stream.captures == 1 and stream.launched == 10  # one graph of 10 passes, replayed
    replayer.run(("other config",), run_pass, 21, launches=5, warm_up=lambda: warm.append(1))
    assert len(done) == 121 and stream.captures == 3 and len(warm) == 2  # 10 passes, and 1


def test_replayer_caps_the_kernel_nodes_of_a_graph():
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, per_graph=64, max_nodes=1000)
    replayer.run(("cfg",), run_pass, 41, launches=100, warm_up=lambda: None)  # 10 passes (1,000 nodes) per graph
    assert len(done) == 41 and stream.captures == 2 and stream.launched == 5
    assert replayer.eager_reasons == {}


def test_replayer_runs_a_pass_over_the_node_cap_eagerly_and_says_why(recwarn):
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, max_nodes=1000)
    replayer.run(("cfg",), run_pass, 30, launches=1001, tag="net", warm_up=lambda: None)
    assert len(done) == 30 and stream.captures == 0 and stream.launched == 0
    assert "1001 kernels" in replayer.eager_reasons["net"] and "1000 nodes" in replayer.eager_reasons["net"]
    assert not recwarn.list  # a planned choice: the launches are few against the work of such a pass


def test_replayer_reports_a_refused_capture_once_and_runs_eagerly():
    stream = _RecordingStream(fail_capture=True)
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, per_graph=8, capture_errors=(RuntimeError,))
    with pytest.warns(GraphCaptureWarning, match="cudaErrorStreamCaptureInvalidated") as caught:
        replayer.run(("cfg",), run_pass, 50, launches=5, tag="net", warm_up=lambda: None)
        replayer.run(("cfg",), run_pass, 50, launches=5, tag="net", warm_up=lambda: None)
    assert len(caught) == 1
    assert len(done) == 100 and stream.launched == 0 and stream.recording is None
    assert "RuntimeError: cudaErrorStreamCaptureInvalidated" in replayer.eager_reasons["net"]


def test_replayer_with_a_stated_reason_never_captures():
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream)
    with pytest.warns(GraphCaptureWarning, match="no capturable cuBLAS here"):
        replayer.run(("cfg",), run_pass, 70, launches=19, tag="net", eager_reason="no capturable cuBLAS here",
                     warm_up=lambda: None)
    assert len(done) == 70 and stream.captures == 0 and replayer.eager_reasons["net"] == "no capturable cuBLAS here"


def test_a_bug_raised_while_capturing_ends_the_capture_and_propagates():
    stream = _RecordingStream()
    calls = []

    def run_pass():
        calls.append(stream.recording is not None)
        if stream.recording is not None:
            raise TypeError("a bug, not a refused capture")

    replayer = PassReplayer(stream, capture_errors=(RuntimeError,))
    with pytest.raises(TypeError, match="a bug"):
        replayer.run(("cfg",), run_pass, 10, launches=5, tag="net", warm_up=lambda: calls.append("warm-up"))
    assert calls == ["warm-up", True] and stream.recording is None and replayer.eager_reasons == {}


@pytest.mark.parametrize("sizes,n,block,batch", [((4, 7, 5, 3), 100, None, None), ((4, 9, 6, 3), 100, 16, None),
                                                 ((4, 9, 6, 3), 100, 16, 40), ((2, 3, 3), 200, "tiny", None),
                                                 ((2, 64, 2), 200, "tiny", 50)])
def test_launch_count_formula_matches_the_programs(device, monkeypatch, sizes, n, block, batch):
    net, data, params = _problem(sizes, "tanh", "softmax", "float64", n)
    if block == "tiny":
        monkeypatch.setattr(plan, "ONE_BLOCK_MAX_WORK", 0)
        steady = 1 / plan.GRAPH_PASSES
    else:
        assert not plan.is_tiny(net)
        if block is not None:
            monkeypatch.setattr(plan, "BLOCK_BYTES", block * plan.row_bytes(net))
        steady = 1 / plan.passes_per_graph(plan.eager_launches_per_pass(net, n, batch))
    batches = None if batch is None else BatchStream(np.random.default_rng(0), n, batch, True).take(1)
    _run(_trainer(device, net, data, _copy(params)), _state(params, SGD(0.1)), Objective("mean", 0.0), SGD(0.1),
         np.array([0.1]), batches)
    assert len(device.launches) == plan.eager_launches_per_pass(net, n, batch)
    assert device.launches[:2] == ["nnx_begin_update"] + (["nnx_gather_rows"] if batch else ["gemm" if block != "tiny"
                                                                                             else "nnx_tiny_logits"])
    assert plan.launches_per_pass(net, n, batch_rows=batch) == steady
    assert plan.launches_per_pass(net, n, graphs=False, batch_rows=batch) == len(device.launches)


@pytest.mark.parametrize("order,bounds,max_size,updates,problem", [
    (np.arange(20), [0, 10, 20], 8, 2, "a batch of 10 rows exceeds max_size 8"),
    (np.array([0, 1, 25]), [0, 3], 3, 1, r"sample indices must lie in \[0, 20\)"),
    (np.arange(4), [0, 2, 2, 4], 2, 3, "batch bounds must rise from 0"),
    (np.arange(4), [0, 2, 4], 2, 3, "3 learning rates but 2 batches"),
])
def test_batches_the_kernels_cannot_take_are_refused_before_any_launch(device, order, bounds, max_size, updates,
                                                                        problem):
    from nnx.batching import Batches

    net, data, params = _problem((2, 16, 16, 2), "relu", "softmax", "float64", 20)
    state = _state(params, Adam())
    batches = Batches(np.asarray(order, np.int64), np.asarray(bounds, np.int64), max_size)
    with pytest.raises(ValueError, match=f"invalid minibatches for the CUDA kernels: {problem}"):
        _run(_trainer(device, net, data, state.params), state, Objective(), Adam(), np.full(updates, 0.01), batches)
    assert device.launches == [] and state.step == 0
    assert params_error(state.params, params) == 0
