"""Passes of the CuPy backend written against a small device interface.

A *device* gives ``xp`` (the array namespace), ``empty``, ``gemm`` (cuBLAS),
``launch`` (a kernel of ``nnx/kernels/*.cu`` by name) and ``ptr``. The real
one wraps CuPy; the tests drive the same programs with the kernel sources
compiled for the CPU, so the orchestration is checked without a GPU.

``DenseProgram`` runs any network as cuBLAS products plus fused kernels, row
block by row block (see ``cuda_plan``); ``TinyProgram`` runs one-hidden-layer
networks with narrow ends through the fused kernels without storing N x H
activations. ``PassReplayer`` turns ``run_pass`` into replays of captured CUDA
graphs so a pass costs a fraction of one launch.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Protocol

import numpy as np

from ..kernels import cuda_sources as src
from ..network import ACTIVATION_CODES, HEAD_CODES, Network
from . import cuda_plan as plan

_SCALARS = {"int": np.int32, "long long": np.int64}


def kernel_args(name: str, dtype: np.dtype, args: tuple) -> tuple:
    """``args`` converted to the exact C types of kernel ``name`` (arrays pass through)."""
    spec = src.kernel(name)[1]
    if len(args) != len(spec.params):
        raise TypeError(f"{name} takes {len(spec.params)} arguments, got {len(args)}")
    out = []
    for param, value in zip(spec.params, args):
        if param.endswith("*"):
            if getattr(value, "dtype", None) != dtype:
                raise TypeError(f"{name}: a {param} argument must be a {dtype} array, got {value!r:.60}")
            out.append(value)
        elif param == "T":
            out.append(dtype.type(value))
        else:
            out.append(_SCALARS[param](value))
    return tuple(out)


class GraphCaptureWarning(UserWarning):
    """Passes that should have replayed a captured CUDA graph launch every kernel instead.

    Results are unchanged; the host issues ``launches_per_pass`` launches per pass.
    """


class Device(Protocol):
    xp: Any

    def empty(self, shape, dtype) -> Any: ...
    def gemm(self, transa: str, transb: str, a, b, out, beta: float) -> None: ...
    def launch(self, name: str, dtype: np.dtype, n_items: int, args: tuple, *, width: int | None = None,
               one_block: bool = False, threads: int = plan.THREADS, shared_mem: int = 0) -> None: ...
    def ptr(self, a) -> int: ...


class DenseProgram:
    """Any dense network: per row block, cuBLAS products and fused bias/activation/head kernels."""

    uses_blas = True

    def __init__(self, dev: Device, net: Network, params, X, T, chunks: plan.ChunkPlan):
        self.dev, self.net, self.params, self.X, self.T, self.plan = dev, net, params, X, T, chunks
        dtype, rows = net.np_dtype, chunks.chunk
        widths = net.layer_sizes[1:]
        self.dtype = dtype
        self.acts = [dev.empty((rows, w), dtype) for w in widths]
        self.deltas = [dev.empty(rows * max(widths), dtype) for _ in range(2)]
        self.grads = [(dev.empty((i, o), dtype), dev.empty(o, dtype)) for i, o in net.layer_shapes()]
        self.ones = dev.empty(chunks.block, dtype)
        self.ones[...] = 1

    @property
    def launches_per_pass(self) -> int:
        """Kernel and cuBLAS launches of one ``run_pass``."""
        return plan.eager_launches_per_pass(self.net, self.plan.n_samples)

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

    def _head(self, local: int, start: int, stop: int, out, loss, targets, scale: float, mode: int) -> None:
        rows, C = stop - start, self.net.n_outputs
        z = self.acts[-1][local:local + rows]
        self.dev.launch("nnx_head_rows", self.dtype, rows,
                        (z, 1, 0, self.params[-1][1], targets, out, loss, rows, C, HEAD_CODES[self.net.output],
                         scale, mode))

    def _backward_block(self, start: int, stop: int, local: int, first: bool, scale: float) -> None:
        net, dev, rows = self.net, self.dev, stop - start
        cur = 0
        delta = self.deltas[cur][:rows * net.n_outputs].reshape(rows, net.n_outputs)
        self._head(local, start, stop, delta, delta, self.T[start:stop], scale, src.MODE_DELTA)
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

    def accumulate_gradients(self, scale: float) -> None:
        """Data-loss gradients of the whole batch into ``self.grads`` (blocks summed in order)."""
        for blocks in self.plan.chunks():
            base = blocks[0][0]
            for start, stop in blocks:
                self._forward_block(start, stop, start - base)
            for start, stop in blocks:
                self._backward_block(start, stop, start - base, start == 0, scale)

    def run_pass(self, scale: float, lr: float, l2: float) -> None:
        self.accumulate_gradients(scale)
        for (W, b), (dW, db) in zip(self.params, self.grads):
            self.dev.launch("nnx_dense_update", self.dtype, W.size + b.size,
                            (W, dW, W.size, b, db, b.size, 1, 0, lr, l2))

    def head_rows(self, mode: int, out, loss) -> None:
        """Forward the batch and write the head output (OUTPUT) or per-row losses (LOSS)."""
        for blocks in self.plan.chunks():
            base = blocks[0][0]
            for start, stop in blocks:
                self._forward_block(start, stop, start - base)
                targets = out[start:stop] if self.T is None else self.T[start:stop]
                self._head(start - base, start, stop, out[start:stop], loss[start:stop], targets, 1.0, mode)

    def gradients(self, scale: float, l2: float) -> list[tuple[Any, Any]]:
        self.accumulate_gradients(scale)
        return [((dW + l2 * W) if l2 else dW.copy(), db.copy()) for (W, _), (dW, db) in zip(self.params, self.grads)]


class TinyProgram:
    """One hidden layer, narrow input and output: fused kernels, N x H never stored."""

    uses_blas = False
    launches_per_pass = 5  # logits, head, gradients, two updates

    def __init__(self, dev: Device, net: Network, params, X, T, tiny: plan.TinyPlan):
        self.dev, self.net, self.params, self.X, self.T, self.plan = dev, net, params, X, T, tiny
        self.dtype = dtype = net.np_dtype
        p = tiny
        self.parts = dev.empty(p.slices_h * p.n * p.c, dtype)
        self.delta = dev.empty((p.n, p.c), dtype)
        self.grad_parts = dev.empty(p.slices_n * p.grad_size, dtype)
        self.act = ACTIVATION_CODES[net.hidden]
        self.head = HEAD_CODES[net.output]

    @property
    def fused_passes(self) -> bool:
        """Whether ``run_passes`` runs many passes in one launch."""
        return self.plan.one_block

    def _logits(self) -> None:
        p, (W1, b1), (W2, _) = self.plan, *self.params
        self.dev.launch("nnx_tiny_logits", self.dtype, p.slices_h * p.n,
                        (self.X, W1, b1, W2, self.parts, p.n, p.d, p.h, p.c, p.slices_h, self.act), width=p.width)

    def _head_rows(self, targets, out, loss, scale: float, mode: int) -> None:
        p = self.plan
        self.dev.launch("nnx_head_rows", self.dtype, p.n,
                        (self.parts, p.slices_h, p.n * p.c, self.params[1][1], targets, out, loss, p.n, p.c,
                         self.head, scale, mode))

    def _grads(self, scale: float) -> None:
        p, (W1, b1), (W2, _) = self.plan, *self.params
        self._logits()
        self._head_rows(self.T, self.delta, self.delta, scale, src.MODE_DELTA)
        self.dev.launch("nnx_tiny_grads", self.dtype, p.slices_n * p.h,
                        (self.X, W1, b1, W2, self.delta, self.grad_parts, p.n, p.d, p.h, p.c, p.slices_n, self.act),
                        width=p.width)

    def run_pass(self, scale: float, lr: float, l2: float) -> None:
        p, (W1, b1), (W2, b2) = self.plan, *self.params
        self._grads(scale)
        g, dh, size = self.grad_parts, p.d * p.h, p.grad_size
        self.dev.launch("nnx_dense_update", self.dtype, dh + p.h,
                        (W1, g, dh, b1, g[dh:], p.h, p.slices_n, size, lr, l2))
        self.dev.launch("nnx_dense_update", self.dtype, p.h * p.c + p.c,
                        (W2, g[dh + p.h:], p.h * p.c, b2, g[dh + p.h + p.h * p.c:], p.c, p.slices_n, size, lr, l2))

    def run_passes(self, passes: int, scale: float, lr: float, l2: float) -> None:
        """All ``passes`` inside single-block launches (only for ``plan.one_block``)."""
        p, (W1, b1), (W2, b2) = self.plan, *self.params
        shared = p.shared_bytes(self.dtype.itemsize)
        done = 0
        while done < passes:
            k = min(plan.ONE_BLOCK_MAX_PASSES, passes - done)
            self.dev.launch("nnx_tiny_train", self.dtype, p.threads,
                            (self.X, self.T, W1, b1, W2, b2, p.n, p.d, p.h, p.c, p.slices_h, p.slices_n, p.lanes,
                             self.act, self.head, scale, lr, l2, k),
                            width=p.width, one_block=True, threads=p.threads, shared_mem=shared)
            done += k

    def head_rows(self, mode: int, out, loss) -> None:
        self._logits()
        self._head_rows(self.T if self.T is not None else out, out, loss, 1.0, mode)

    def gradients(self, scale: float, l2: float) -> list[tuple[Any, Any]]:
        p, (W1, _), (W2, _) = self.plan, *self.params
        self._grads(scale)
        total = self.grad_parts.reshape(p.slices_n, p.grad_size).sum(axis=0)
        dh = p.d * p.h
        dW1, db1 = total[:dh].reshape(p.d, p.h), total[dh:dh + p.h]
        dW2, db2 = total[dh + p.h:dh + p.h + p.h * p.c].reshape(p.h, p.c), total[dh + p.h + p.h * p.c:]
        return [((dW1 + l2 * W1) if l2 else dW1.copy(), db1.copy()), ((dW2 + l2 * W2) if l2 else dW2.copy(),
                                                                       db2.copy())]


class PassReplayer:
    """Runs ``passes`` of a program as replays of captured CUDA graphs.

    The first pass for a configuration runs eagerly (it compiles the kernels,
    which may not happen during capture); then blocks of passes (``per_graph``,
    fewer when a graph would exceed ``max_nodes`` kernel nodes) are captured
    once and replayed, so launches per pass fall to 1/per_graph.

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
            tag: Hashable = None, eager_reason: str | None = None) -> None:
        """``passes`` calls of ``run_pass`` (``launches`` kernels each) for configuration ``key``."""
        if passes <= 0:
            return
        per_graph = plan.passes_per_graph(launches, self.per_graph, self.max_nodes)
        if eager_reason is not None:
            self._refused(key, tag, eager_reason)
        elif per_graph == 0:
            self._eager[key] = self.eager_reasons[tag] = (
                f"one pass launches {launches} kernels, more than a graph's cap of {self.max_nodes} nodes")
        if key not in self._warm:
            run_pass()
            self._warm.add(key)
            passes -= 1
        if key in self._eager:
            for _ in range(passes):
                run_pass()
            return
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
