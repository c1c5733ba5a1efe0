"""The CuPy backend's passes, run on the CPU: real kernel sources, NumPy for cuBLAS.

``cuda_emulation`` compiles ``nnx/kernels/*.cu`` for the host, so these tests
check the kernels' arithmetic and indexing and the orchestration in
``cuda_program`` (row blocks, chunks, slices, launch order) against the NumPy
backend under the parity rules, plus the CUDA-graph replay logic with a
recording stand-in for a CUDA stream. The single-block kernel runs on real
threads (one per CUDA thread, barriers for ``__syncthreads``); its races are
hunted with ThreadSanitizer in ``test_cuda_races``. What they cannot check
(cuBLAS itself, real graph capture, the GPU's math library) is covered by the
``gpu`` tests.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from nnx.backends import cuda_plan as plan
from nnx.backends.cuda_program import DenseProgram, GraphCaptureWarning, PassReplayer, TinyProgram, kernel_args
from nnx.backends.numpy_backend import NumpyBackend
from nnx.kernels import cuda_sources as src
from nnx.network import Network, Objective, TrainState
from nnx.optim import SGD

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the kernel emulation")

REF = NumpyBackend()


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    import cuda_emulation

    return cuda_emulation.build(tmp_path_factory.mktemp("kernels"))


@pytest.fixture
def device(lib):
    import cuda_emulation

    dev = cuda_emulation.EmulatedDevice(lib)
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
    return max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-300))
               for pa, pb in zip(a_params, b_params) for a, b in zip(pa, pb))


def _reference(net, data, params, passes, objective, lr):
    state = TrainState(_copy(params))
    REF.train(net, state, data, objective, SGD(lr), passes)
    return state.params


def _program(kind, device, net, data, params, **kw):
    n = data.n_samples
    if kind == "dense":
        return DenseProgram(device, net, params, data.X, data.T, kw.get("chunks") or plan.plan_chunks(net, n, 1 << 40))
    tiny = kw.get("tiny") or plan.plan_tiny_net(net, n)
    return TinyProgram(device, net, params, data.X, data.T, tiny)


def _train(program, passes, objective, lr, n, fused=False):
    scale = 1.0 if objective.reduction == "sum" else 1.0 / n
    if fused:
        program.run_passes(passes, scale, lr, objective.l2)
    else:
        for _ in range(passes):
            program.run_pass(scale, lr, objective.l2)
    return program.params


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


@pytest.mark.parametrize("kind,sizes,hidden,output", CASES)
@pytest.mark.parametrize("reduction,l2", [("mean", 1e-3), ("sum", 0.0)])
def test_float64_one_pass_and_many_match_numpy(device, kind, sizes, hidden, output, reduction, l2):
    net, data, params = _problem(sizes, hidden, output, "float64", 120)
    objective, lr = Objective(reduction, l2), 0.5 if reduction == "mean" else 0.004
    for passes, tol in ((1, 1e-12), (200, 1e-10)):
        got = _train(_program(kind, device, net, data, _copy(params)), passes, objective, lr, 120)
        assert _rel_err(_reference(net, data, params, passes, objective, lr), got) <= tol


@pytest.mark.parametrize("kind,sizes,hidden,output", CASES[:2] + CASES[4:6])
def test_float32_matches_numpy_within_1e_4(device, kind, sizes, hidden, output):
    net, data, params = _problem(sizes, hidden, output, "float32", 120)
    objective = Objective("mean", 1e-3)
    got = _train(_program(kind, device, net, data, _copy(params)), 100, objective, 0.5, 120)
    assert _rel_err(_reference(net, data, params, 100, objective, 0.5), got) <= 1e-4


@pytest.mark.parametrize("hidden,output", [("tanh", "softmax"), ("relu", "sigmoid")])
def test_single_block_kernel_runs_whole_passes_in_one_launch(device, hidden, output):
    net, data, params = _problem((2, 3, 3) if output == "softmax" else (2, 5, 2), hidden, output, "float64", 200)
    program = _program("tiny", device, net, data, _copy(params))
    assert program.fused_passes
    objective = Objective("mean", 1e-3)
    got = _train(program, 300, objective, 1.0, 200, fused=True)
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
    first = _train(_program("tiny", device, net, data, _copy(params)), 1, objective, 0.5, n, fused=True)
    assert _rel_err(_reference(net, data, params, 1, objective, 0.5), first) <= one
    runs = [_train(_program("tiny", device, net, data, _copy(params)), 20, objective, 0.5, n, fused=True)
            for _ in range(2)]
    assert _rel_err(_reference(net, data, params, 20, objective, 0.5), runs[0]) <= tol
    assert all(np.array_equal(a, b) for pa, pb in zip(*runs) for a, b in zip(pa, pb))


def test_sliced_tiny_plan_matches_numpy(device):
    net, data, params = _problem((2, 64, 2), "tanh", "softmax", "float64", 96)
    tiny = plan.TinyPlan(96, 2, 64, 2, slices_h=5, slices_n=7, one_block=False)
    objective = Objective("mean", 1e-3)
    got = _train(_program("tiny", device, net, data, _copy(params), tiny=tiny), 20, objective, 0.5, 96)
    assert _rel_err(_reference(net, data, params, 20, objective, 0.5), got) <= 1e-12


def test_chunking_gives_bit_identical_parameters(device):
    net, data, params = _problem((4, 9, 6, 3), "tanh", "softmax", "float64", 100)
    objective = Objective("mean", 1e-3)
    results = []
    for chunk in (16, 32, 112):
        program = _program("dense", device, net, data, _copy(params), chunks=plan.ChunkPlan(100, 16, chunk))
        results.append(_train(program, 10, objective, 0.5, 100))
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
    dense = _program("dense", device, net, data, _copy(params))
    _train(dense, 1, objective, 0.1, 200)
    assert len(device.launches) == 12  # 6 cuBLAS products + 6 fused kernels, captured into graphs
    device.launches.clear()
    _train(_program("tiny", device, net, data, _copy(params), tiny=plan.TinyPlan(200, 2, 3, 3, 1, 4, False)),
           1, objective, 0.1, 200)
    assert len(device.launches) == 5


def test_kernel_args_are_converted_to_the_declared_c_types():
    a = np.zeros(4)
    args = kernel_args("nnx_activation_backward", np.dtype("float64"), (a, a, 4, 1))
    assert [type(x) for x in args[2:]] == [np.int64, np.int32]
    args = kernel_args("nnx_dense_update", np.dtype("float32"), (a.astype(np.float32),) * 2 + (3,) +
                       (a.astype(np.float32),) * 2 + (1, 1, 0, 0.1, 0.0))
    assert type(args[-1]) is np.float32 and type(args[-4]) is np.int32
    with pytest.raises(TypeError, match="float32 array"):
        kernel_args("nnx_activation_backward", np.dtype("float32"), (a, a, 4, 1))
    with pytest.raises(TypeError, match="takes 4 arguments"):
        kernel_args("nnx_activation_backward", np.dtype("float64"), (a, a, 4))


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
    replayer.run(("cfg",), run_pass, passes, launches=5)
    assert len(done) == passes
    assert stream.captures <= 2 and stream.launched <= passes // 64 + 1


def test_replayer_captures_once_and_replays():
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, per_graph=10)
    for _ in range(5):
        replayer.run(("cfg",), run_pass, 20, launches=5)
    assert len(done) == 100
    assert stream.captures == 2  # 10 passes, and the 9 after the eager warm-up pass
    replayer.run(("other lr",), run_pass, 21, launches=5)
    assert len(done) == 121 and stream.captures == 3


def test_replayer_caps_the_kernel_nodes_of_a_graph():
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, per_graph=64, max_nodes=1000)
    replayer.run(("cfg",), run_pass, 41, launches=100)  # 10 passes (1,000 nodes) per graph
    assert len(done) == 41 and stream.captures == 1 and stream.launched == 4
    assert replayer.eager_reasons == {}


def test_replayer_runs_a_pass_over_the_node_cap_eagerly_and_says_why(recwarn):
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, max_nodes=1000)
    replayer.run(("cfg",), run_pass, 30, launches=1001, tag="net")
    assert len(done) == 30 and stream.captures == 0 and stream.launched == 0
    assert "1001 kernels" in replayer.eager_reasons["net"] and "1000 nodes" in replayer.eager_reasons["net"]
    assert not recwarn.list  # a planned choice: the launches are few against the work of such a pass


def test_replayer_reports_a_refused_capture_once_and_runs_eagerly():
    stream = _RecordingStream(fail_capture=True)
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream, per_graph=8, capture_errors=(RuntimeError,))
    with pytest.warns(GraphCaptureWarning, match="cudaErrorStreamCaptureInvalidated") as caught:
        replayer.run(("cfg",), run_pass, 50, launches=5, tag="net")
        replayer.run(("cfg",), run_pass, 50, launches=5, tag="net")
    assert len(caught) == 1
    assert len(done) == 100 and stream.launched == 0 and stream.recording is None
    assert "RuntimeError: cudaErrorStreamCaptureInvalidated" in replayer.eager_reasons["net"]


def test_replayer_with_a_stated_reason_never_captures():
    stream = _RecordingStream()
    done, run_pass = _counter(stream)
    replayer = PassReplayer(stream)
    with pytest.warns(GraphCaptureWarning, match="no capturable cuBLAS here"):
        replayer.run(("cfg",), run_pass, 70, launches=19, tag="net", eager_reason="no capturable cuBLAS here")
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
        replayer.run(("cfg",), run_pass, 10, launches=5, tag="net")
    assert calls == [False, True] and stream.recording is None and replayer.eager_reasons == {}


@pytest.mark.parametrize("sizes,n,block", [((4, 7, 5, 3), 100, None), ((4, 9, 6, 3), 100, 16),
                                           ((2, 3, 3), 200, "tiny"), ((2, 64, 2), 200, "tiny")])
def test_launch_count_formula_matches_the_programs(device, monkeypatch, sizes, n, block):
    net, data, params = _problem(sizes, "tanh", "softmax", "float64", n)
    if block == "tiny":
        tiny = plan.plan_tiny(n, sizes[0], sizes[1], sizes[2])
        program = _program("tiny", device, net, data, _copy(params),
                           tiny=plan.TinyPlan(n, sizes[0], sizes[1], sizes[2], 1, 4, False))
        steady = 1 / plan.ONE_BLOCK_MAX_PASSES if tiny.one_block else 1 / plan.GRAPH_PASSES
    else:
        assert not plan.is_tiny(net)
        if block is not None:
            monkeypatch.setattr(plan, "BLOCK_BYTES", block * plan.row_bytes(net))
        program = _program("dense", device, net, data, _copy(params), chunks=plan.plan_chunks(net, n, 1 << 40))
        steady = 1 / plan.passes_per_graph(program.launches_per_pass)
    _train(program, 1, Objective("mean", 0.0), 0.1, n)
    assert len(device.launches) == plan.eager_launches_per_pass(net, n) == program.launches_per_pass
    assert plan.launches_per_pass(net, n) == steady
    assert plan.launches_per_pass(net, n, graphs=False) in (steady, len(device.launches))
