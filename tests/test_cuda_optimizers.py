"""The CUDA optimiser step and the code tables, run on the CPU through the kernel emulation.

Golden values: each optimiser, three steps from fixed parameters and gradients
in float64, through the kernels a GPU update runs (``nnx_begin_update`` fills
the update's record from the learning rates and the step count in device
memory, ``nnx_dense_update`` applies ``nnx_optimizer_step``), against NumPy
implementations of PyTorch's documented algorithms written here from the
documentation's pseudo-code, not from nnx's code. Plain SGD is checked bit for
bit against the tutorials' update. The code tables: every activation, head
and optimiser code the Python tables define computes, in the kernels, what
its name says; unknown codes never reach a kernel.
"""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from nnx.backends.cuda_program import UpdateRecord, compiles, kernel_args
from nnx.backends.numpy_backend import NumpyBackend
from nnx.kernels import cuda_sources as src
from nnx.network import ACTIVATION_CODES, HEAD_CODES
from nnx.optim import OPTIMIZERS, SGD, Adam, AdamW, RMSprop

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is needed to build the kernel emulation")

REF = NumpyBackend()


@pytest.fixture
def device(lib):
    import cuda_emulation

    dev = cuda_emulation.EmulatedDevice(lib)
    yield dev
    assert dev.guards_intact(), "a kernel wrote outside its buffer"


# ------------------------------------------------- PyTorch's algorithms, from its documentation
def torch_sgd(p, g, state, t, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        state["b"] = g if t == 1 else momentum * state.get("b", 0) + (1 - dampening) * g
        g = g + momentum * state["b"] if nesterov else state["b"]
    return p - lr * g


def torch_adam(p, g, state, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    if decoupled:
        p = p - lr * weight_decay * p
    elif weight_decay:
        g = g + weight_decay * p
    state["m"] = b1 * state.get("m", 0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0) + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1 ** t)
    if amsgrad:
        state["vmax"] = np.maximum(state.get("vmax", 0), state["v"])
        v_hat = state["vmax"] / (1 - b2 ** t)
    else:
        v_hat = state["v"] / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps)


def torch_rmsprop(p, g, state, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    if weight_decay:
        g = g + weight_decay * p
    state["v"] = alpha * state.get("v", 0) + (1 - alpha) * g * g
    v_tilde = state["v"]
    if centered:
        state["ga"] = alpha * state.get("ga", 0) + (1 - alpha) * g
        v_tilde = v_tilde - state["ga"] ** 2
    if momentum > 0:
        state["b"] = momentum * state.get("b", 0) + g / (np.sqrt(v_tilde) + eps)
        return p - lr * state["b"]
    return p - lr * g / (np.sqrt(v_tilde) + eps)


def _documented(optimizer):
    """PyTorch's documented step for this optimiser's settings."""
    if type(optimizer) is SGD:
        kw = dict(momentum=optimizer.momentum, dampening=optimizer.dampening, nesterov=optimizer.nesterov,
                  weight_decay=optimizer.weight_decay)
        return lambda p, g, st, t, lr: torch_sgd(p, g, st, t, lr, **kw)
    if type(optimizer) in (Adam, AdamW):
        kw = dict(betas=optimizer.betas, eps=optimizer.eps, weight_decay=optimizer.weight_decay,
                  amsgrad=optimizer.amsgrad, decoupled=type(optimizer) is AdamW)
        return lambda p, g, st, t, lr: torch_adam(p, g, st, t, lr, **kw)
    kw = dict(alpha=optimizer.alpha, eps=optimizer.eps, weight_decay=optimizer.weight_decay,
              momentum=optimizer.momentum, centered=optimizer.centered)
    return lambda p, g, st, t, lr: torch_rmsprop(p, g, st, t, lr, **kw)


CONFIGS = {
    "sgd": SGD(0.1),
    "sgd-momentum": SGD(0.1, momentum=0.9, dampening=0.3, weight_decay=0.01),
    "sgd-nesterov": SGD(0.1, momentum=0.8, nesterov=True),
    "adam": Adam(0.01),
    "adam-amsgrad-decay": Adam(0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05, amsgrad=True),
    "adamw": AdamW(0.01),
    "adamw-amsgrad": AdamW(0.03, weight_decay=0.1, amsgrad=True),
    "rmsprop": RMSprop(0.01),
    "rmsprop-centered-momentum-decay": RMSprop(0.005, alpha=0.9, momentum=0.7, centered=True, weight_decay=0.02),
    "rmsprop-centered": RMSprop(0.01, centered=True),
}
STEPS = 3


def _run_kernels(device, optimizer, params, grads, lrs, l2, first_step, dtype, n_parts=1):
    """``len(lrs)`` updates of one layer (W, b) through nnx_begin_update and nnx_dense_update, from
    ``first_step`` updates made with a fresh (zero) state; the gradient arrives as n_parts partial sums."""
    W0, b0 = params
    rec = UpdateRecord(device, dtype, 1)
    rec.load_interval(np.asarray(lrs, np.float64), None, first_step, 10)
    W, b = device.empty(W0.shape, dtype), device.empty(b0.shape, dtype)
    W[...], b[...] = W0, b0
    state = {name: (device.empty(W0.shape, dtype), device.empty(b0.shape, dtype)) for name in optimizer.slots()}
    for sw, sb in state.values():
        sw[...], sb[...] = 0, 0
    rec.bind_optimizer(optimizer.kernel_hyper(), [[pair] for pair in state.values()])
    size = W0.size + b0.size
    parts = device.empty(n_parts * size, dtype)  # per part: dW | db, as the sliced kernels lay them out
    for (gW, gb) in grads:
        parts[...] = np.tile(np.concatenate([gW.ravel(), gb]) / n_parts, n_parts).astype(dtype)
        device.launch("nnx_begin_update", dtype, 1, (rec.lrs, rec.bounds, rec.hyper, rec.counters, rec.coef,
                                                     optimizer.code, 1, 0, 10))
        device.launch("nnx_dense_update", dtype, size,
                      (W, parts, W.size, b, parts[W.size:], b.size, n_parts, size, l2, optimizer.code, rec.hyper,
                       rec.coef, rec.counters, rec.slot_table_of(0)))
    return W, b, rec


@pytest.mark.parametrize("first_step", [0, 997], ids=["fresh", "after-997"])
@pytest.mark.parametrize("name", CONFIGS)
def test_three_steps_match_pytorchs_documented_algorithm(device, name, first_step):
    optimizer = CONFIGS[name]
    rng = np.random.default_rng(7)
    W0, b0 = rng.normal(size=(3, 4)), rng.normal(size=4)
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=4)) for _ in range(STEPS)]
    lrs = optimizer.lr * np.array([1.0, 0.7, 0.4])  # a schedule: each step reads its own lr
    l2 = 0.03
    W, b, rec = _run_kernels(device, optimizer, (W0, b0), grads, lrs, l2, first_step, np.float64)
    step = _documented(optimizer)
    want_W, want_b, state_W, state_b = W0.copy(), b0.copy(), {}, {}
    for k, ((gW, gb), lr) in enumerate(zip(grads, lrs)):
        t = first_step + k + 1
        want_W = step(want_W, gW + l2 * want_W, state_W, t, lr)  # the tutorial's L2 on weights only
        want_b = step(want_b, gb, state_b, t, lr)
    for got, want in ((W, want_W), (b, want_b)):
        assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))
    counters = dict(zip(src.COUNTERS, rec.counters.tolist()))
    assert counters["next"] == STEPS and counters["step"] == first_step + STEPS


@pytest.mark.parametrize("name", ["adam", "rmsprop-centered-momentum-decay", "sgd-momentum"])
def test_float32_steps_match_within_float32_rounding(device, name):
    optimizer = CONFIGS[name]
    rng = np.random.default_rng(8)
    W0, b0 = rng.normal(size=(5, 3)), rng.normal(size=3)
    grads = [(rng.normal(size=(5, 3)), rng.normal(size=3)) for _ in range(STEPS)]
    W32, b32, _ = _run_kernels(device, optimizer, (W0, b0), grads, [optimizer.lr] * STEPS, 0.0, 0, np.float32)
    W64, b64, _ = _run_kernels(device, optimizer, (W0, b0), grads, [optimizer.lr] * STEPS, 0.0, 0, np.float64)
    assert W32.dtype == np.float32
    for got, want in ((W32, W64), (b32, b64)):
        assert np.max(np.abs(got - want)) <= 1e-6 * np.max(np.abs(want))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_plain_sgd_is_the_tutorials_update_bit_for_bit(device, dtype):
    """g = dW + l2 W; g *= -lr; W += g, in the element type: the update nnx always ran."""
    rng = np.random.default_rng(9)
    W0, b0 = rng.normal(size=(4, 6)).astype(dtype), rng.normal(size=6).astype(dtype)
    grads = [(rng.normal(size=(4, 6)).astype(dtype), rng.normal(size=6).astype(dtype)) for _ in range(STEPS)]
    lrs, l2 = [0.5, 0.25, 0.125 + 1e-3], 1e-3
    W, b, _ = _run_kernels(device, SGD(0.5), (W0, b0), grads, lrs, l2, 0, dtype)
    want_W, want_b = W0.copy(), b0.copy()
    for (gW, gb), lr in zip(grads, lrs):
        g = gW.copy()
        g += want_W * dtype(l2)
        g *= -dtype(lr)
        want_W += g
        g = gb.copy()
        g *= -dtype(lr)
        want_b += g
    assert np.array_equal(W, want_W) and np.array_equal(b, want_b)


def test_partial_gradients_are_added_in_order_before_the_step(device):
    optimizer = CONFIGS["adam-amsgrad-decay"]
    rng = np.random.default_rng(10)
    W0, b0 = rng.normal(size=(2, 3)), rng.normal(size=3)
    grads = [(rng.normal(size=(2, 3)), rng.normal(size=3)) for _ in range(STEPS)]
    one = _run_kernels(device, optimizer, (W0, b0), grads, [0.02] * STEPS, 0.0, 0, np.float64)
    four = _run_kernels(device, optimizer, (W0, b0), grads, [0.02] * STEPS, 0.0, 0, np.float64, n_parts=4)
    for got, want in zip(four[:2], one[:2]):
        assert np.max(np.abs(got - want)) <= 1e-14 * np.max(np.abs(want))


def test_the_update_record_follows_the_interval(device):
    """nnx_begin_update: each update's lr, batch, scale and Adam corrections, from device memory."""
    from nnx.batching import Batches

    optimizer = Adam(0.01, betas=(0.5, 0.75))
    rec = UpdateRecord(device, np.float64, 2)
    lrs = np.array([0.3, 0.2, 0.1])
    batches = Batches(np.array([4, 0, 2, 1, 3], np.int64), np.array([0, 2, 4, 5], np.int64), 2)
    rec.load_interval(lrs, batches, 6, 5)
    rec.bind_optimizer(optimizer.kernel_hyper(), [])
    for u in range(3):
        device.launch("nnx_begin_update", np.float64, 1, (rec.lrs, rec.bounds, rec.hyper, rec.counters, rec.coef,
                                                          optimizer.code, 1, 1, 5))
        counters = dict(zip(src.COUNTERS, rec.counters.tolist()))
        coef = dict(zip(src.COEFFICIENTS, rec.coef.tolist()))
        t, rows = 6 + u + 1, [2, 2, 1][u]
        assert counters == {"next": u + 1, "step": t, "start": [0, 2, 4][u], "len": rows}
        assert coef["lr"] == lrs[u] and coef["scale"] == 1 / rows
        assert coef["step_size"] == pytest.approx(lrs[u] / (1 - 0.5 ** t), rel=1e-15)
        assert coef["root_bc2"] == pytest.approx(np.sqrt(1 - 0.75 ** t), rel=1e-15)


# ------------------------------------------------------------------ the code tables
def test_every_optimiser_the_kernels_implement_is_an_exact_class_of_the_table():
    assert set(src.COMPILED_OPTIMIZERS) == set(OPTIMIZERS.values())
    assert src.ROLES["optimizer"] == {cls.kind: cls.code for cls in OPTIMIZERS.values()}
    assert all(compiles(cls(0.1) if cls is SGD else cls()) for cls in src.COMPILED_OPTIMIZERS)

    class Tuned(Adam):
        pass

    assert not compiles(Tuned())  # a subclass is another optimiser, even with Adam's code


def test_the_kernels_are_compiled_with_the_python_tables_and_restate_none():
    defines = src.defines(src.DENSE_OPS.code())
    tables = {"ACT": ACTIVATION_CODES, "HEAD": HEAD_CODES, "MODE": src.MODES,
              "OPT": {cls.kind: cls.code for cls in OPTIMIZERS.values()}}
    for prefix, table in tables.items():
        assert {k: v for k, v in defines.items() if k.startswith(f"NNX_{prefix}_")} == {
            f"NNX_{prefix}_{name.upper()}": code for name, code in table.items()}
    assert [defines[f"NNX_CTR_{name.upper()}"] for name in src.COUNTERS] == list(range(len(src.COUNTERS)))
    assert [defines[f"NNX_COEF_{name.upper()}"] for name in src.COEFFICIENTS] == list(range(len(src.COEFFICIENTS)))
    for source in src.SOURCES:
        assert source.code().startswith(src.prelude())
    for filename in [s.filename for s in src.SOURCES] + [src.HEADER]:
        text = src.read_text(filename)
        assert not re.findall(r"^\s*#define NNX_(ACT|HEAD|OPT|MODE|CTR|COEF)_", text, re.MULTILINE), filename
        assert not re.findall(r"\bcase\s+\d", text), f"{filename} switches on a literal code"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_each_activation_code_computes_its_named_activation(device, dtype):
    z = np.linspace(-4, 4, 21).astype(dtype).reshape(7, 3)
    for name, code in ACTIVATION_CODES.items():
        out = device.empty(z.shape, dtype)
        out[...] = z
        bias = device.empty(3, dtype)
        bias[...] = 0
        device.launch("nnx_bias_activation", dtype, out.size, (out, bias, 7, 3, code))
        want = REF.activation_forward(name, z.copy(), np.empty_like(z))
        np.testing.assert_allclose(out, want, rtol=4 * np.finfo(dtype).eps, atol=0, err_msg=name)
        grad = device.empty(z.shape, dtype)
        grad[...] = 1
        device.launch("nnx_activation_backward", dtype, grad.size, (grad, want, grad.size, code))
        want_grad = REF.activation_backward(name, np.ones_like(z), want, np.empty_like(z))
        np.testing.assert_allclose(grad, want_grad, rtol=4 * np.finfo(dtype).eps, atol=0, err_msg=name)


def test_each_head_code_computes_its_named_head(device):
    rng = np.random.default_rng(11)
    z = rng.normal(size=(6, 3)) * 3
    T = np.eye(3)[rng.integers(0, 3, 6)]
    counters, coef = device.empty(len(src.COUNTERS), np.int64), device.empty(src.COEF_COUNT, np.float64)
    device.upload(counters, np.array([0, 0, 0, 6], np.int64))
    device.upload(coef, np.array([0, 0.5, 0, 0, 0, 0, 0, 0], np.float64))
    zero_bias = np.zeros(3)
    for name, code in HEAD_CODES.items():
        out, loss = device.empty((6, 3), np.float64), device.empty(6, np.float64)
        device.launch("nnx_head_rows", np.float64, 6, (z, 1, 0, zero_bias, T, out, loss, 6, 0, 3, code,
                                                       src.MODE_OUTPUT, counters, coef))
        want = REF.head_output(name, z.copy(), np.empty_like(z))
        np.testing.assert_allclose(out, want, rtol=1e-15, atol=1e-16, err_msg=name)
        device.launch("nnx_head_rows", np.float64, 6, (z, 1, 0, zero_bias, T, out, loss, 6, 0, 3, code,
                                                       src.MODE_DELTA, counters, coef))
        np.testing.assert_allclose(out, REF.head_delta(name, want, T, 0.5, np.empty_like(z), np.empty_like(z)),
                                   rtol=1e-15, atol=1e-16, err_msg=name)
        device.launch("nnx_head_rows", np.float64, 6, (z, 1, 0, zero_bias, T, out, loss, 6, 0, 3, code,
                                                       src.MODE_LOSS, counters, coef))
        assert loss.sum() == pytest.approx(REF.head_loss_sum(name, z, T), rel=1e-14), name


def test_a_head_zeroes_the_deltas_of_rows_past_the_batch(device):
    z, T = np.ones((4, 2)), np.eye(2)[[0, 1, 0, 1]]
    counters, coef = device.empty(len(src.COUNTERS), np.int64), device.empty(src.COEF_COUNT, np.float64)
    device.upload(counters, np.array([0, 0, 0, 3], np.int64))  # a batch of 3 rows in a buffer of 4
    device.upload(coef, np.array([0, 1, 0, 0, 0, 0, 0, 0], np.float64))
    out, loss = device.empty((2, 2), np.float64), device.empty(2, np.float64)
    device.launch("nnx_head_rows", np.float64, 2, (z[2:], 1, 0, np.zeros(2), T[2:], out, loss, 2, 2, 2,
                                                   HEAD_CODES["softmax"], src.MODE_DELTA, counters, coef))
    assert out[0].tolist() == [-0.5, 0.5] and out[1].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("role", ["act", "head", "optimizer", "mode"])
def test_an_unknown_code_is_refused_before_any_launch(device, role):
    name = {"act": "nnx_bias_activation", "head": "nnx_head_rows", "optimizer": "nnx_dense_update",
            "mode": "nnx_head_rows"}[role]
    spec = src.kernel(name)[1]
    index = [src.role(p) for p in spec.params].index(role)
    good = {"act": 1, "head": 0, "optimizer": 0, "mode": 0}
    args = []
    for param in spec.params:
        ctype = src.c_type(param)
        if ctype.endswith("*"):
            args.append(np.zeros(8, np.int64 if "long long" in ctype or "const*" in ctype else
                                 (np.float64 if "double" in ctype or "T" in ctype else None)))
        elif src.role(param) is not None:
            args.append(good[src.role(param)])
        else:
            args.append(0)
    kernel_args(name, np.dtype(np.float64), tuple(args))  # the well-formed launch passes
    for bad in (max(src.ROLES[role].values()) + 1, -1, True):
        args[index] = bad
        with pytest.raises(ValueError, match=f"is not a {role} code"):
            kernel_args(name, np.dtype(np.float64), tuple(args))
        with pytest.raises(ValueError, match=f"is not a {role} code"):
            device.launch(name, np.float64, 8, tuple(args))
    assert device.launches == []
