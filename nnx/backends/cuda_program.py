"""Training updates of the CuPy backend written against a small device interface.

A *device* gives ``xp`` (the array namespace), ``empty``, ``upload`` (host
values into an existing buffer), ``gemm`` (cuBLAS), ``launch`` (a kernel of
``nnx/kernels/*.cu`` by name) and ``ptr``. The real one wraps CuPy; the tests
drive the same programs with the kernel sources compiled for the CPU, so the
orchestration is checked without a GPU.

Everything that changes from one update to the next is read from device
memory (``UpdateRecord``): the interval's learning rates, sample order and
batch bounds, uploaded once per interval into buffers whose addresses stay
fixed for the fit, and counters that each update advances itself; Adam's bias
corrections are computed on the device from the step count. So a CUDA graph
captured once replays the updates of every step, schedule and interval.

``DenseProgram`` runs any network as cuBLAS products plus fused kernels, row
block by row block (see ``cuda_plan``); ``TinyProgram`` runs one-hidden-layer
networks with narrow ends through the fused kernels without storing N x H
activations, whole updates inside one thread block where they fit.
``Trainer`` runs a fit's intervals on them; ``PassReplayer`` turns its updates
into replays of captured CUDA graphs so an update costs a fraction of a launch.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..kernels import cuda_sources as src
from ..network import ACTIVATION_CODES, HEAD_CODES, Network
from . import cuda_plan as plan

_SCALARS = {"int": np.int32, "long long": np.int64}
_POINTEES = {"long long": np.dtype(np.int64), "double": np.dtype(np.float64)}
HYPER_SIZE = 6  # an optimiser's kernel_hyper(): float64[6]
_COMPILED = frozenset(src.COMPILED_OPTIMIZERS)


def compiles(optimizer) -> bool:
    """Whether the kernels implement ``optimizer``: its exact class is in the table (a subclass is
    another optimiser, whatever its ``code``)."""
    return type(optimizer) in _COMPILED


def _pointer_dtype(ctype: str, dtype: np.dtype) -> np.dtype:
    """The dtype of the array a pointer parameter takes: the element type for ``T*``, int64
    for ``long long*`` and for a table of device addresses (``T* const*``), float64 for ``double*``."""
    if ctype.endswith("* const*"):
        return np.dtype(np.int64)
    pointee = ctype.replace("const", "").replace("*", "").strip()
    return dtype if pointee == "T" else _POINTEES[pointee]


def kernel_args(name: str, dtype: np.dtype, args: tuple) -> tuple:
    """``args`` converted to the exact C types of kernel ``name`` (arrays pass through, checked).

    A code argument (an activation, head, optimiser or mode) must be one of its
    table's codes: anything else is refused here, before a launch.
    """
    spec = src.kernel(name)[1]
    if len(args) != len(spec.params):
        raise TypeError(f"{name} takes {len(spec.params)} arguments, got {len(args)}")
    out = []
    for param, value in zip(spec.params, args):
        ctype, role = src.c_type(param), src.role(param)
        if ctype.endswith("*"):
            want = _pointer_dtype(ctype, dtype)
            if getattr(value, "dtype", None) != want:
                raise TypeError(f"{name}: a {ctype} argument must be a {want} array, got {value!r:.60}")
            out.append(value)
        elif ctype == "T":
            out.append(dtype.type(value))
        else:
            if role is not None and (isinstance(value, (bool, np.bool_)) or value not in src.ROLES[role].values()):
                raise ValueError(f"{name}: {value!r} is not a {role} code of nnx's kernels; expected one of "
                                 f"{src.ROLES[role]}")
            out.append(_SCALARS[ctype](value))
    return tuple(out)


class GraphCaptureWarning(UserWarning):
    """Updates that should have replayed a captured CUDA graph launch every kernel instead.

    Results are unchanged; the host issues ``launches_per_pass`` launches per update.
    """


class Device(Protocol):
    xp: Any

    def empty(self, shape, dtype) -> Any: ...
    def upload(self, dst, values: np.ndarray) -> None: ...
    def gemm(self, transa: str, transb: str, a, b, out, beta: float) -> None: ...
    def launch(self, name: str, dtype: np.dtype, n_items: int, args: tuple, *, width: int | None = None,
               one_block: bool = False, threads: int = plan.THREADS, shared_mem: int = 0) -> None: ...
    def ptr(self, a) -> int: ...


@dataclass(frozen=True)
class StepConfig:
    """What an update's launches take as arguments, so what a captured graph keeps: the
    optimiser's code and its number of state arrays per parameter, the tutorial's L2, the
    reduction and whether updates train on minibatches. Everything else comes from memory."""

    code: int
    slots: int
    l2: float
    mean: bool
    batched: bool


def _counters(**values: int) -> np.ndarray:
    """An update record's counters (``src.COUNTERS`` by name; the rest 0)."""
    return np.array([values.get(name, 0) for name in src.COUNTERS], np.int64)


def _fixed_record(dev: Device, dtype: np.dtype, rows: int) -> tuple[Any, Any]:
    """Counters and coefficients for work outside training (losses, predictions, gradients):
    a batch of all ``rows`` rows, scale 1."""
    counters, coef = dev.empty(len(src.COUNTERS), np.int64), dev.empty(src.COEF_COUNT, dtype)
    dev.upload(counters, _counters(len=rows))
    _set_scale(dev, coef, 1.0)
    return counters, coef


def _set_scale(dev: Device, coef, scale: float) -> None:
    values = np.zeros(src.COEF_COUNT, coef.dtype)
    values[src.COEFFICIENTS.index("scale")] = scale
    dev.upload(coef, values)


def _check_batches(batches, order: np.ndarray, updates: int, n_samples: int) -> None:
    """ValueError unless ``batches`` describes ``updates`` non-empty batches of at most
    ``max_size`` rows of the ``n_samples`` samples, back to back over ``order``."""
    bounds = np.asarray(batches.bounds)
    sizes = np.diff(bounds)
    problem = None
    if bounds.size != updates + 1:
        problem = f"{updates} learning rates but {bounds.size - 1} batches"
    elif bounds[0] != 0 or bounds[-1] != order.size or (sizes <= 0).any():
        problem = "batch bounds must rise from 0 to the order's length"
    elif sizes.max(initial=0) > batches.max_size:
        problem = f"a batch of {int(sizes.max())} rows exceeds max_size {batches.max_size}"
    elif order.size and (order.min() < 0 or order.max() >= n_samples):
        problem = f"sample indices must lie in [0, {n_samples})"
    if problem is not None:
        raise ValueError(f"invalid minibatches for the CUDA kernels: {problem}")


class UpdateRecord:
    """The device memory a fit's updates read (the layout in ``nnx_common.cuh``).

    ``counters`` (int64) and ``coef`` (the element type) hold the current
    update's record, which ``nnx_begin_update`` (or the single-block kernel)
    fills from ``lrs``, ``bounds`` and ``hyper``; ``order`` holds the
    interval's sample indices; ``slot_table`` the device addresses of the
    optimiser's state arrays. The interval buffers grow (doubling) when an
    interval needs more room than any before; ``generation`` counts those
    moves, since graphs captured before one read the old addresses.
    """

    def __init__(self, dev: Device, dtype: np.dtype, n_layers: int):
        self.dev, self.dtype, self.n_layers = dev, np.dtype(dtype), n_layers
        self.counters = dev.empty(len(src.COUNTERS), np.int64)
        self.coef = dev.empty(src.COEF_COUNT, self.dtype)
        self.spare_counters = dev.empty(len(src.COUNTERS), np.int64)  # a warm-up's record: never read by a pass
        self.spare_coef = dev.empty(src.COEF_COUNT, self.dtype)
        self.hyper = dev.empty(HYPER_SIZE, np.float64)
        self.slot_table = dev.empty(n_layers * 2 * src.SLOTS_MAX, np.int64)
        self.lrs = self.order = self.bounds = None
        self.generation = 0
        self._table: tuple | None = None
        self._grow(1, 1)

    def _grow(self, updates: int, samples: int) -> None:
        if self.lrs is not None and self.lrs.size >= updates and self.order.size >= samples:
            return
        updates = max(updates, 2 * self.lrs.size if self.lrs is not None else 1)
        samples = max(samples, 2 * self.order.size if self.order is not None else 1)
        self.lrs = self.dev.empty(updates, np.float64)
        self.bounds = self.dev.empty(updates + 1, np.int64)
        self.order = self.dev.empty(samples, np.int64)
        self.generation += 1

    def load_interval(self, lrs: np.ndarray, batches, step: int, n_samples: int) -> None:
        """Upload an interval's learning rates (and batches) and start its counters at
        ``step`` updates made with the optimiser's state. Batches are checked first: the kernels
        index X with them and size their buffers by ``batches.max_size``."""
        n = int(lrs.size)
        order = None if batches is None else np.ascontiguousarray(batches.order, np.int64)
        if batches is not None:
            _check_batches(batches, order, n, n_samples)
        self._grow(n, 1 if order is None else max(1, order.size))
        self.dev.upload(self.lrs[:n], np.ascontiguousarray(lrs, np.float64))
        if batches is not None:
            self.dev.upload(self.bounds[:n + 1], np.ascontiguousarray(batches.bounds, np.int64))
            if order.size:
                self.dev.upload(self.order[:order.size], order)
        self.dev.upload(self.counters, _counters(step=step))
        self.dev.upload(self.spare_counters, _counters())

    def bind_optimizer(self, hyper: np.ndarray, slots: list[list[tuple[Any, Any]]]) -> None:
        """The optimiser's settings and its state arrays (per state name, per layer (W, b))."""
        hyper = np.ascontiguousarray(hyper, np.float64)
        if hyper.shape != (HYPER_SIZE,):
            raise ValueError(f"an optimiser's kernel_hyper() must be float64[{HYPER_SIZE}], got shape {hyper.shape}")
        if len(slots) > src.SLOTS_MAX:
            raise ValueError(f"the kernels keep at most {src.SLOTS_MAX} state arrays per parameter, not {len(slots)}")
        self.dev.upload(self.hyper, hyper)
        table = np.zeros((self.n_layers, 2, src.SLOTS_MAX), np.int64)
        for k, per_layer in enumerate(slots):
            for layer, (W, b) in enumerate(per_layer):
                table[layer, 0, k], table[layer, 1, k] = self.dev.ptr(W), self.dev.ptr(b)
        key = tuple(table.ravel().tolist())
        if key != self._table:
            self.dev.upload(self.slot_table, table.ravel())
            self._table = key

    def slot_table_of(self, layer: int):
        """Layer ``layer``'s half of the table: W's state arrays, then b's."""
        width = 2 * src.SLOTS_MAX
        return self.slot_table[layer * width:(layer + 1) * width]


class DenseProgram:
    """Any dense network: per row block, cuBLAS products and fused bias/activation/head kernels.

    With ``source`` (the full X and targets), ``X`` and ``T`` are batch buffers
    that each update gathers its minibatch into (``Trainer``); their rows past
    the batch are zeros with zero deltas, so one set of products (and one graph)
    serves every batch, the last, smaller one included.
    """

    uses_blas = True
    fused_passes = False

    def __init__(self, dev: Device, net: Network, params, X, T, chunks: plan.ChunkPlan, source=None):
        self.dev, self.net, self.params, self.X, self.T, self.plan = dev, net, params, X, T, chunks
        self.source = source
        dtype, rows = net.np_dtype, chunks.chunk
        widths = net.layer_sizes[1:]
        self.dtype = dtype
        self.acts = [dev.empty((rows, w), dtype) for w in widths]
        self.deltas = [dev.empty(rows * max(widths), dtype) for _ in range(2)]
        self.grads = [(dev.empty((i, o), dtype), dev.empty(o, dtype)) for i, o in net.layer_shapes()]
        self.ones = dev.empty(chunks.block, dtype)
        self.ones[...] = 1
        self.fixed = _fixed_record(dev, dtype, chunks.n_samples)

    @property
    def launches_per_pass(self) -> int:
        """Kernel and cuBLAS launches of one ``step``: gradients and updates."""
        return plan.program_launches(self.net, self.plan.n_samples)

    def _forward_block(self, start: int, stop: int, local: int) -> None:
        net, dev, rows = self.net, self.dev, stop - start
        a = self.X[start:stop]
        for layer, (W, b) in enumerate(self.params):
            z = self.acts[layer][local:local + rows]
            dev.gemm("N", "N", a, W, z, 0.0)
            if layer < net.n_layers - 1:
                dev.launch("nnx_bias_activation", self.dtype, z.size,
                           (z, b, rows, z.shape[1], ACTIVATION_CODES[net.hidden]))
            a = z

    def _head(self, local: int, start: int, stop: int, out, loss, targets, mode: int, record) -> None:
        rows, C = stop - start, self.net.n_outputs
        z = self.acts[-1][local:local + rows]
        self.dev.launch("nnx_head_rows", self.dtype, rows,
                        (z, 1, 0, self.params[-1][1], targets, out, loss, rows, start, C,
                         HEAD_CODES[self.net.output], mode, *record))

    def _backward_block(self, start: int, stop: int, local: int, first: bool, record) -> None:
        net, dev, rows = self.net, self.dev, stop - start
        cur = 0
        delta = self.deltas[cur][:rows * net.n_outputs].reshape(rows, net.n_outputs)
        self._head(local, start, stop, delta, delta, self.T[start:stop], src.MODE_DELTA, record)
        beta = 0.0 if first else 1.0
        for layer in range(net.n_layers - 1, -1, -1):
            W, _ = self.params[layer]
            dW, db = self.grads[layer]
            a_prev = self.X[start:stop] if layer == 0 else self.acts[layer - 1][local:local + rows]
            dev.gemm("T", "N", a_prev, delta, dW, beta)
            dev.gemm("N", "N", self.ones[:rows].reshape(1, rows), delta, db.reshape(1, -1), beta)
            if layer > 0:
                cur = 1 - cur
                prev = self.deltas[cur][:rows * W.shape[0]].reshape(rows, W.shape[0])
                dev.gemm("N", "T", delta, W, prev, 0.0)
                dev.launch("nnx_activation_backward", self.dtype, prev.size,
                           (prev, a_prev, prev.size, ACTIVATION_CODES[net.hidden]))
                delta = prev

    def accumulate_gradients(self, record) -> None:
        """Data-loss gradients of the batch into ``self.grads`` (blocks summed in order); ``record``
        (counters, coefficients) gives the batch's rows and the gradient's scale."""
        for blocks in self.plan.chunks():
            base = blocks[0][0]
            for start, stop in blocks:
                self._forward_block(start, stop, start - base)
            for start, stop in blocks:
                self._backward_block(start, stop, start - base, start == 0, record)

    def update(self, rec: UpdateRecord, config: StepConfig, *, empty: bool = False) -> None:
        """One optimiser update per layer (``empty``: the same launches over no items)."""
        for layer, ((W, b), (dW, db)) in enumerate(zip(self.params, self.grads)):
            n_w, n_b = (0, 0) if empty else (W.size, b.size)
            self.dev.launch("nnx_dense_update", self.dtype, n_w + n_b,
                            (W, dW, n_w, b, db, n_b, 1, 0, config.l2, config.code, rec.hyper, rec.coef,
                             rec.counters, rec.slot_table_of(layer)))

    def step(self, rec: UpdateRecord, config: StepConfig) -> None:
        """The update ``rec`` describes: gradients, then every layer's optimiser step."""
        self.accumulate_gradients((rec.counters, rec.coef))
        self.update(rec, config)

    def warm_up(self, rec: UpdateRecord, config: StepConfig) -> None:
        """Every launch of ``step`` once, changing nothing but scratch buffers."""
        self.accumulate_gradients((rec.counters, rec.coef))
        self.update(rec, config, empty=True)

    def head_rows(self, mode: int, out, loss) -> None:
        """Forward all rows and write the head output (OUTPUT) or per-row losses (LOSS)."""
        for blocks in self.plan.chunks():
            base = blocks[0][0]
            for start, stop in blocks:
                self._forward_block(start, stop, start - base)
                targets = out[start:stop] if self.T is None else self.T[start:stop]
                self._head(start - base, start, stop, out[start:stop], loss[start:stop], targets, mode, self.fixed)

    def gradients(self, scale: float, l2: float) -> list[tuple[Any, Any]]:
        _set_scale(self.dev, self.fixed[1], scale)
        self.accumulate_gradients(self.fixed)
        return [((dW + l2 * W) if l2 else dW.copy(), db.copy()) for (W, _), (dW, db) in zip(self.params, self.grads)]


class TinyProgram:
    """One hidden layer, narrow input and output: fused kernels, N x H never stored.

    With a single-block plan, ``run_passes`` runs whole updates in one launch
    (reading a minibatch's rows of X in place); otherwise ``step`` runs one
    update as sliced kernels, on batch buffers that the update gathers into
    when ``source`` (the full X and targets) is given.
    """

    uses_blas = False
    launches_per_pass = plan.TINY_PROGRAM_LAUNCHES

    def __init__(self, dev: Device, net: Network, params, X, T, tiny: plan.TinyPlan, source=None):
        self.dev, self.net, self.params, self.X, self.T, self.plan = dev, net, params, X, T, tiny
        self.source = source
        self.dtype = dtype = net.np_dtype
        p = tiny
        self.parts = dev.empty(p.slices_h * p.n * p.c, dtype)
        self.delta = dev.empty((p.n, p.c), dtype)
        self.grad_parts = dev.empty(p.slices_n * p.grad_size, dtype)
        self.act = ACTIVATION_CODES[net.hidden]
        self.head = HEAD_CODES[net.output]
        self.fixed = _fixed_record(dev, dtype, p.n)

    @property
    def fused_passes(self) -> bool:
        """Whether ``run_passes`` runs many updates in one launch."""
        return self.plan.one_block

    def _logits(self, counters) -> None:
        p, (W1, b1), (W2, _) = self.plan, *self.params
        self.dev.launch("nnx_tiny_logits", self.dtype, p.slices_h * p.n,
                        (self.X, W1, b1, W2, self.parts, p.n, p.d, p.h, p.c, p.slices_h, self.act, counters),
                        width=p.width)

    def _head_rows(self, targets, out, loss, mode: int, record) -> None:
        p = self.plan
        self.dev.launch("nnx_head_rows", self.dtype, p.n,
                        (self.parts, p.slices_h, p.n * p.c, self.params[1][1], targets, out, loss, p.n, 0, p.c,
                         self.head, mode, *record))

    def _grads(self, record) -> None:
        p, (W1, b1), (W2, _) = self.plan, *self.params
        self._logits(record[0])
        self._head_rows(self.T, self.delta, self.delta, src.MODE_DELTA, record)
        self.dev.launch("nnx_tiny_grads", self.dtype, p.slices_n * p.h,
                        (self.X, W1, b1, W2, self.delta, self.grad_parts, p.n, p.d, p.h, p.c, p.slices_n, self.act,
                         record[0]), width=p.width)

    def update(self, rec: UpdateRecord, config: StepConfig, *, empty: bool = False) -> None:
        """The optimiser's update of both layers from the gradient slices (``empty``: over no items)."""
        p, (W1, b1), (W2, b2) = self.plan, *self.params
        g, dh, size = self.grad_parts, p.d * p.h, p.grad_size
        counts = [(0, 0), (0, 0)] if empty else [(dh, p.h), (p.h * p.c, p.c)]
        layers = [(W1, g, b1, g[dh:]), (W2, g[dh + p.h:], b2, g[dh + p.h + p.h * p.c:])]
        for layer, ((W, dW, b, db), (n_w, n_b)) in enumerate(zip(layers, counts)):
            self.dev.launch("nnx_dense_update", self.dtype, n_w + n_b,
                            (W, dW, n_w, b, db, n_b, p.slices_n, size, config.l2, config.code, rec.hyper, rec.coef,
                             rec.counters, rec.slot_table_of(layer)))

    def step(self, rec: UpdateRecord, config: StepConfig) -> None:
        self._grads((rec.counters, rec.coef))
        self.update(rec, config)

    def warm_up(self, rec: UpdateRecord, config: StepConfig) -> None:
        self._grads((rec.counters, rec.coef))
        self.update(rec, config, empty=True)

    def run_passes(self, rec: UpdateRecord, config: StepConfig, passes: int) -> None:
        """All ``passes`` updates inside single-block launches (only for ``plan.one_block``)."""
        p, (W1, b1), (W2, b2) = self.plan, *self.params
        shared = p.shared_bytes(self.dtype.itemsize)
        done = 0
        while done < passes:
            k = min(plan.ONE_BLOCK_MAX_PASSES, passes - done)
            self.dev.launch("nnx_tiny_train", self.dtype, p.threads,
                            (self.X, self.T, W1, b1, W2, b2, rec.slot_table, p.n, p.batch_rows, p.d, p.h, p.c,
                             p.slices_h, p.slices_n, p.lanes, self.act, self.head, int(config.mean), config.l2,
                             config.code, config.slots, rec.hyper, rec.lrs, rec.order, rec.bounds,
                             int(config.batched), rec.counters, k),
                            width=p.width, one_block=True, threads=p.threads, shared_mem=shared)
            done += k

    def head_rows(self, mode: int, out, loss) -> None:
        self._logits(self.fixed[0])
        self._head_rows(self.T if self.T is not None else out, out, loss, mode, self.fixed)

    def gradients(self, scale: float, l2: float) -> list[tuple[Any, Any]]:
        p, (W1, _), (W2, _) = self.plan, *self.params
        _set_scale(self.dev, self.fixed[1], scale)
        self._grads(self.fixed)
        total = self.grad_parts.reshape(p.slices_n, p.grad_size).sum(axis=0)
        dh = p.d * p.h
        dW1, db1 = total[:dh].reshape(p.d, p.h), total[dh:dh + p.h]
        dW2, db2 = total[dh + p.h:dh + p.h + p.h * p.c].reshape(p.h, p.c), total[dh + p.h + p.h * p.c:]
        return [((dW1 + l2 * W1) if l2 else dW1.copy(), db1.copy()), ((dW2 + l2 * W2) if l2 else dW2.copy(),
                                                                       db2.copy())]


def program_bytes(net: Network, n_samples: int, rows: int | None = None, slots: int = 0) -> int:
    """Device bytes a program needs beyond the data and parameters, at least (a dense program's
    chunks grow to what is free): workspace, per-row losses, and the batch buffers of a
    minibatch that is gathered rather than read in place."""
    itemsize, d, c = net.np_dtype.itemsize, net.n_inputs, net.n_outputs
    if plan.is_tiny(net):
        tiny = plan.plan_tiny_net(net, n_samples, rows, slots)
        gathered = 0 if rows is None or tiny.one_block else rows * (d + c)
        return (tiny.workspace_elements() + n_samples * (c + 1) + gathered) * itemsize
    m = n_samples if rows is None else rows
    gathered = 0 if rows is None else rows * (d + c) * itemsize
    return plan.fixed_bytes(net, m) + min(plan.block_rows(net), m) * plan.row_bytes(net) + gathered


def build_program(dev: Device, net: Network, params, X, T, *, free_bytes: int, what: str, rows: int | None = None,
                  slots: int = 0, reuse=None):
    """The program that trains ``params`` on ``X``, ``T`` (T None: predictions only).

    ``rows``: minibatches of at most that many rows (None: all rows at once);
    ``slots``: the optimiser's state arrays per parameter. A small network runs
    the fused kernels (whole updates in one block where the plan allows,
    reading a minibatch in place); any other runs cuBLAS products and fused
    kernels in chunks sized to ``free_bytes``. A minibatch that is not read in
    place gets batch buffers that each update gathers into. ``reuse``, a
    full-batch program of the same data, is returned when it would be built
    again. Raises GpuMemoryError when not even the smallest workspace fits.
    """
    n, d, c = int(X.shape[0]), net.n_inputs, net.n_outputs
    dtype = net.np_dtype
    if plan.is_tiny(net):
        tiny = plan.plan_tiny_net(net, n, rows, slots)
        if rows is None and reuse is not None and reuse.plan == tiny:
            return reuse
        needed = program_bytes(net, n, rows, slots)
        if needed + plan.HEADROOM_BYTES > free_bytes:
            raise plan.GpuMemoryError(what, needed + plan.HEADROOM_BYTES, free_bytes,
                                      "Use fewer samples or free GPU memory held by other arrays or processes.")
        if rows is None or tiny.one_block:
            return TinyProgram(dev, net, params, X, T, tiny)
        Xb, Tb = _batch_buffers(dev, dtype, rows, d, c)
        return TinyProgram(dev, net, params, Xb, Tb, tiny, source=(X, T))
    if rows is None:
        if reuse is not None:
            return reuse
        return DenseProgram(dev, net, params, X, T, plan.plan_chunks(net, n, free_bytes, what=what))
    chunks = plan.plan_chunks(net, rows, free_bytes - rows * (d + c) * dtype.itemsize, what=what)
    Xb, Tb = _batch_buffers(dev, dtype, rows, d, c)
    return DenseProgram(dev, net, params, Xb, Tb, chunks, source=(X, T))


def _batch_buffers(dev: Device, dtype: np.dtype, rows: int, d: int, c: int) -> tuple[Any, Any]:
    """Minibatch buffers, zeroed: a warm-up before the first gather reads them."""
    Xb, Tb = dev.empty((rows, d), dtype), dev.empty((rows, c), dtype)
    Xb[...] = 0
    Tb[...] = 0
    return Xb, Tb


class Trainer:
    """A fit's updates on the device, interval by interval.

    ``build(rows, slots)`` makes the program for minibatches of at most
    ``rows`` rows (None: full batch) under an optimiser keeping ``slots``
    state arrays per parameter (they change a single-block plan's shared
    memory); each is built once and shares this trainer's ``UpdateRecord``,
    so a graph captured for it stays valid for the whole fit.
    """

    def __init__(self, dev: Device, net: Network, X, build: Callable[[int | None, int], Any]):
        self.dev, self.net, self.build = dev, net, build
        self.n = int(X.shape[0])
        self.record = UpdateRecord(dev, net.np_dtype, net.n_layers)
        self._programs: dict[tuple[int | None, int], Any] = {}

    def program(self, rows: int | None, slots: int):
        """The program for minibatches of ``rows`` rows (None: full batch) and ``slots`` state arrays."""
        key = (rows, slots)
        if key not in self._programs:
            self._programs[key] = self.build(rows, slots)
        return self._programs[key]

    def launches_per_pass(self, program) -> int:
        """Launches of one update on ``program``: its own, the record's and a gather's."""
        return program.launches_per_pass + 1 + (program.source is not None)

    def _begin(self, config: StepConfig, counters, coef) -> None:
        rec = self.record
        self.dev.launch("nnx_begin_update", self.net.np_dtype, 1,
                        (rec.lrs, rec.bounds, rec.hyper, counters, coef, config.code, int(config.mean),
                         int(config.batched), self.n), threads=32)

    def _gather(self, program, rows: int) -> None:
        X, T = program.source
        d, c = self.net.n_inputs, self.net.n_outputs
        self.dev.launch("nnx_gather_rows", self.net.np_dtype, rows * (d + c),
                        (X, T, self.record.order, self.record.counters, program.X, program.T, rows, d, c))

    def run_pass(self, program, config: StepConfig) -> None:
        """One update: its record, its batch (gathered where the program does not read in place), the step."""
        self._begin(config, self.record.counters, self.record.coef)
        if program.source is not None:
            self._gather(program, int(program.X.shape[0]))
        program.step(self.record, config)

    def warm_up(self, program, config: StepConfig) -> None:
        """Every launch of ``run_pass`` once, before any capture, changing no parameter, state or counter."""
        self._begin(config, self.record.spare_counters, self.record.spare_coef)
        if program.source is not None:
            self._gather(program, 0)
        program.warm_up(self.record, config)

    def train(self, slots: dict, optimizer, lrs: np.ndarray, batches, step: int, l2: float, mean: bool, *,
              replayer: PassReplayer | None = None, key: Hashable = None, tag: Hashable = None,
              blas_unavailable: str | None = None) -> None:
        """``len(lrs)`` updates of the parameters and of ``slots`` (the optimiser's state: name ->
        per layer (W, b)), full batch or on ``batches``, from ``step`` updates made with this state.

        With a ``replayer`` the updates replay captured graphs (key: ``key`` plus what the
        launches keep); without one each update launches its kernels.
        """
        if not compiles(optimizer):
            raise TypeError(f"the CUDA kernels do not implement {type(optimizer).__name__}; "
                            "the reference loop (Backend.train) runs it")
        names = optimizer.slots()
        rows = None if batches is None else int(batches.max_size)
        program = self.program(rows, len(names))
        config = StepConfig(int(optimizer.code), len(names), float(l2), bool(mean), batches is not None)
        rec = self.record
        rec.load_interval(lrs, batches, step, self.n)
        rec.bind_optimizer(optimizer.kernel_hyper(), [slots[name] for name in names])
        passes = int(lrs.size)
        if program.fused_passes:
            program.run_passes(rec, config, passes)
        elif replayer is None:
            for _ in range(passes):
                self.run_pass(program, config)
        else:
            replayer.run((key, rows, config, rec.generation), lambda: self.run_pass(program, config), passes,
                         launches=self.launches_per_pass(program), tag=tag,
                         eager_reason=blas_unavailable if program.uses_blas else None,
                         warm_up=lambda: self.warm_up(program, config))


class PassReplayer:
    """Runs ``passes`` of a program as replays of captured CUDA graphs.

    Before a configuration's first capture, ``warm_up`` launches every kernel
    of a pass once without changing any state (compiling and loading kernels
    and cuBLAS's first choices may not happen during capture). Then blocks of
    passes (``per_graph``, fewer when a graph would exceed ``max_nodes`` kernel
    nodes) are captured once and replayed, so launches per pass fall to
    1/per_graph, and intervals of one length replay the same graphs: a
    configuration captures once per block size, whatever the number of steps
    and intervals.

    A configuration runs eagerly instead when the caller gives an
    ``eager_reason`` (the device cannot capture this program), when one pass
    alone exceeds ``max_nodes``, or when a capture fails with one of
    ``capture_errors`` (the driver or a library refused it). The last two are
    recorded per ``tag`` in ``eager_reasons``; a refused capture is reported
    once per reason with a GraphCaptureWarning. Any other exception raised
    while capturing ends the capture and propagates: it is a bug, not a
    reason to run slower. Nothing executes while capturing, so a failed
    capture leaves the parameters untouched.
    """

    def __init__(self, stream, per_graph: int = plan.GRAPH_PASSES, max_graphs: int = 4, *,
                 capture_errors: tuple[type[BaseException], ...] = (), max_nodes: int = plan.MAX_GRAPH_NODES):
        self.stream, self.per_graph, self.max_graphs = stream, per_graph, max_graphs
        self.capture_errors, self.max_nodes = capture_errors, max_nodes
        self._graphs: OrderedDict[tuple, Any] = OrderedDict()
        self._warm: set = set()
        self._eager: dict[tuple, str] = {}
        self._warned: set[str] = set()
        self.eager_reasons: dict[Hashable, str] = {}
        self.captures = 0

    def run(self, key: tuple, run_pass: Callable[[], None], passes: int, *, launches: int,
            warm_up: Callable[[], None], tag: Hashable = None, eager_reason: str | None = None) -> None:
        """``passes`` calls of ``run_pass`` (``launches`` kernels each) for configuration ``key``."""
        if passes <= 0:
            return
        per_graph = plan.passes_per_graph(launches, self.per_graph, self.max_nodes)
        if eager_reason is not None:
            self._refused(key, tag, eager_reason)
        elif per_graph == 0:
            self._eager[key] = self.eager_reasons[tag] = (
                f"one pass launches {launches} kernels, more than a graph's cap of {self.max_nodes} nodes")
        if key in self._eager:
            for _ in range(passes):
                run_pass()
            return
        if key not in self._warm:
            warm_up()
            self._warm.add(key)
        for per, launches_of in plan.graph_blocks(passes, per_graph):
            graph = self._graph(key, tag, run_pass, per)
            for _ in range(launches_of):
                if graph is None:
                    for _ in range(per):
                        run_pass()
                else:
                    graph.launch(self.stream)

    def _refused(self, key: tuple, tag: Hashable, reason: str) -> None:
        """Run ``key`` eagerly from now on and say why, once per reason."""
        self._eager[key] = self.eager_reasons[tag] = reason
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"CUDA graphs are off for this network: {reason}. Results are unchanged, but every "
                          "pass launches each of its kernels from the host.", GraphCaptureWarning, stacklevel=4)

    def _graph(self, key: tuple, tag: Hashable, run_pass: Callable[[], None], passes: int):
        gkey = (key, passes)
        graph = self._graphs.get(gkey)
        if graph is not None:
            self._graphs.move_to_end(gkey)
            return graph
        self.stream.begin_capture()
        try:
            for _ in range(passes):
                run_pass()
        except BaseException as exc:
            self._end_broken_capture()
            if isinstance(exc, self.capture_errors):
                self._refused(key, tag, f"capturing a pass failed ({type(exc).__name__}: {exc})")
                return None
            raise
        try:
            graph = self.stream.end_capture()
        except self.capture_errors as exc:
            self._refused(key, tag, f"the driver rejected the captured graph ({type(exc).__name__}: {exc})")
            return None
        self.captures += 1
        self._graphs[gkey] = graph
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return graph

    def _end_broken_capture(self) -> None:
        """End a capture that an exception interrupted, so the stream can run work again."""
        try:
            self.stream.end_capture()
        except self.capture_errors:
            pass  # the capture was already invalidated: ending it is all that was needed

    def forget(self) -> None:
        """Drop every captured graph (their memory nodes go with them)."""
        self._graphs.clear()
        self._warm.clear()
        self._eager.clear()
