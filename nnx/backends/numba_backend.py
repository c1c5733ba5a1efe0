"""The Numba backend: the whole training loop compiled, one call per log interval.

``train`` hands a flat description of the network to a compiled entry point
(``nnx.kernels.cpu_mlp1`` for one hidden layer, ``cpu_train`` for deeper
networks), which runs every pass of the interval without returning to
Python. Each layer takes one of two paths, chosen by its dimensions:

* fused: ``min(fan_in, fan_out) <= fused_max_dim`` (2 inputs, 2 classes...), or
  both sides at most twice that (16 x 16 hidden layers): consecutive such layers
  form a run that streams blocks of samples through explicit loops and never
  stores its N x H activations;
* BLAS: layers large in every dimension call ``np.dot`` with the bias,
  activation and derivative fused around the products.

A fit compiles only the entry point its plan names (``_Plan.kernel``) and the
chunk kernel that entry point calls (``_Plan.chunk_kernel``), on first use,
never at ``import nnx``, and Numba caches them in nnx's per-user folder
(``nnx.cache``); ``warm_up`` compiles them up front and reports the
seconds, so the CLI and benchmarks show compile time apart from run time. The
same compiled call returns the loss at the new parameters, so logging costs
no NumPy forward; the one-hidden-layer kernels also take the losses of logging
points inside a call from the next update's forward pass (``train_recording``),
so logging every few updates costs no forward at all. Plans (buffers) belong to one fit (``TrainState.scratch``),
so fits in several threads never share them.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import BackendUnavailableError
from ..batching import Batches
from ..network import ACTIVATION_CODES, HEAD_CODES, Network, Objective, TrainState
from ..optim import SGD, Adam, AdamW, Optimizer, RMSprop
from ..progress import ANNOUNCE_COMPILES
from . import compile_aside, scipy_blas
from .base import BOOKKEEPING_BYTES, Backend, Data, learning_rates, validated_targets_bytes

# Layers whose smaller side is at most this many units take the fused path, and so do layers
# at most twice this on both sides: a product that small gains nothing from BLAS, and the
# layer joins its neighbours' fused run (benchmarks/test_bench_plan.py: 2-16-16-2, 4-16-16-3,
# 10-16-3 and 2-12-12-12-2 ran 1.2-2.0x faster a pass than with those layers on BLAS, on 2
# cores; 32 x 32 layers were slower fused at N=200).
FUSED_MAX_DIM = 8
# Target elements of one fused block (feature x sample buffers). Longer blocks
# amortise the per-row reductions over samples (64 samples for H=4096 measured best).
BLOCK_ELEMS = 800_000
MAX_BLOCK = 512
# Numba's default ``workqueue`` threading layer aborts the process when two threads
# enter parallel regions at once; nnx runs its parallel kernels one at a time.
_PARALLEL_LOCK = threading.Lock()
# One-hidden-layer fits with at most TINY_MAX_SAMPLES samples (rows of a minibatch) and
# TINY_MAX_WORK samples x hidden units run sample by sample (XOR's 4 x 2): with so few samples,
# blocks (padded to 16) would be all loop set-up and remainder. At 8 samples sample by sample was
# still 1.2-1.3x faster, at 12 the blocks were as fast or faster, and from 16 on 1.3-2.3x faster
# (benchmarks/test_bench_plan.py: 2-2-1 to 2-16-1, float64 and float32).
TINY_MAX_SAMPLES = 8
TINY_MAX_WORK = 256
# Predictions with fewer N x widest-layer elements take NumPy's forward (no compile).
COMPILED_PREDICT_MIN = 1 << 16
# Fused runs smaller than this many multiply-adds per pass stay on one thread.
PARALLEL_MIN_WORK = 1 << 20
MAX_CHUNKS = 16
# Updates between logging points unless a fit asks otherwise (MLP.fit's log_every): an
# interval's minibatch indices are counted for this many updates.
DEFAULT_LOG_EVERY = 1000
# Scalars of one optimiser step (nnx.kernels.cpu_update.N_COEF; kept here so memory checks
# never import the kernels).
N_COEF = 9


@dataclass
class _Plan:
    """Flat layout, unit split and buffers for one network and sample count."""

    sizes: np.ndarray
    codes: np.ndarray
    head: int
    w_off: np.ndarray
    b_off: np.ndarray
    act_off: np.ndarray
    pg_off: np.ndarray
    unit_kind: np.ndarray
    unit_t0: np.ndarray
    unit_t1: np.ndarray
    unit_bs: np.ndarray
    unit_chunks: np.ndarray
    unit_chunk_len: np.ndarray
    theta: np.ndarray
    grads: np.ndarray
    acts: np.ndarray
    deltas: np.ndarray
    scratch: np.ndarray
    pg: np.ndarray
    # minibatch buffers (1-element placeholders for full-batch plans): the gathered batch,
    # sample-major (bx, bt) and feature-major where fused layers read it (bxt, btt); the
    # one-hidden-layer kernel reads it feature-major from bx, bt, padded to MLP1_GRANULE
    bx: np.ndarray
    bxt: np.ndarray
    bt: np.ndarray
    btt: np.ndarray
    coef: np.ndarray  # the optimiser step's scalars, in the parameters' dtype
    # rows the buffers hold: every sample (full batch) or the largest minibatch
    rows: int = 0
    batched: bool = False
    # one hidden layer with both layers fused: the dedicated whole-loop kernel (cpu_mlp1)
    mlp1: bool = False
    mlp1_bs: int = 0
    mlp1_chunks: int = 1
    mlp1_chunk_len: int = 0
    # the compiled entry point this plan runs (a name in cpu_mlp1 or cpu_train), whether it
    # runs chunks on several threads, and the C-callable kernel the entry point calls (a name in
    # that module's ``CHUNK_KERNELS``; "" for ``train_tiny`` and ``train_passes_blas``)
    kernel: str = ""
    parallel: bool = False
    chunk_kernel: str = ""
    chunk_address: int = 0  # the chunk kernel's, once compiled or loaded
    ready: bool = False  # its kernels compiled or loaded (after the first call)
    # the data in the layout the kernels read, made once per fit
    _bound: tuple = field(default=(), repr=False)
    # the optimiser state, flat like theta (n_slots x n_params), made for the first optimiser
    slots: np.ndarray | None = field(default=None, repr=False)
    # what the compiled calls of the current fit and optimiser read unchanged (NumbaBackend._call_kit)
    kit: "_CallKit | None" = field(default=None, repr=False)

    @property
    def n_bias(self) -> np.ndarray:
        return self.sizes[1:]

    @property
    def first_fused(self) -> bool:
        return bool(self.unit_kind[0] == 1)

    @property
    def head_fused(self) -> bool:
        return bool(self.unit_kind[-1] == 1)

    def weights(self) -> list[np.ndarray]:
        return [self.theta[w0:b0] for w0, b0 in zip(self.w_off, self.b_off)]

    def feature_major(self, data: Data) -> tuple[np.ndarray, np.ndarray]:
        """(XT, TT): the inputs and targets feature-major where full-batch fused kernels read
        them (minibatch plans gather from the data as given instead).

        The one-hidden-layer kernel reads them padded to whole vector blocks with
        copies of real samples (finite wherever the data is; their gradient is
        set to 0). Made once per fit and data set, not once per interval.
        """
        if self._bound and self._bound[0] is data:
            return self._bound[1], self._bound[2]
        X, T = data.X, data.T
        dummy = np.zeros((1, 1), X.dtype)
        if self.batched and self.mlp1:  # the batch buffers, which each update gathers into
            cols = self.bx.size // X.shape[1]
            XT, TT = self.bx.reshape((X.shape[1], cols)), self.bt.reshape((T.shape[1], cols))
        elif self.batched:
            XT = TT = dummy
        elif self.mlp1:
            padded = -(-data.n_samples // MLP1_GRANULE) * MLP1_GRANULE
            pad = np.arange(padded) % data.n_samples
            XT = np.ascontiguousarray(X[pad].T)
            TT = np.ascontiguousarray(T[pad].T)
        else:
            XT = np.ascontiguousarray(X.T) if self.first_fused else dummy
            TT = np.ascontiguousarray(T.T) if self.head_fused else dummy
        self._bound = (data, XT, TT)
        return XT, TT

    def batch_buffers(self, net: Network) -> tuple[np.ndarray, ...]:
        """(X, XT, T, TT) of a minibatch plan of ``cpu_train``: its batch buffers, rows x features and
        (where fused layers read them) features x rows; placeholders where nothing reads them."""
        n_in, n_out, rows = net.n_inputs, net.n_outputs, self.rows
        dummy = np.zeros((1, 1), self.theta.dtype)
        return (self.bx.reshape((rows, n_in)), self.bxt.reshape((n_in, rows)) if self.first_fused else dummy,
                self.bt.reshape((rows, n_out)), self.btt.reshape((n_out, rows)) if self.head_fused else dummy)

    def optimizer_slots(self, n_slots: int) -> np.ndarray:
        """The flat optimiser state buffer for ``n_slots`` arrays (kept while the count holds)."""
        if self.slots is None or self.slots.shape[0] != n_slots:
            self.slots = np.zeros((n_slots, self.theta.size), self.theta.dtype)
        return self.slots

    def load(self, params) -> None:
        self.load_flat(self.theta, params)

    def store(self, params) -> None:
        self.store_flat(self.theta, params)

    def load_flat(self, flat: np.ndarray, params) -> None:
        """``params`` ((W, b) pairs) into ``flat``, laid out like theta."""
        for layer, (W, b) in enumerate(params):
            w0, b0 = self.w_off[layer], self.b_off[layer]
            flat[w0:b0] = np.asarray(W).reshape(-1)
            flat[b0:b0 + b.size] = b

    def store_flat(self, flat: np.ndarray, params) -> None:
        for layer, (W, b) in enumerate(params):
            w0, b0 = self.w_off[layer], self.b_off[layer]
            W[...] = flat[w0:b0].reshape(W.shape)
            b[...] = flat[b0:b0 + b.size]


@dataclass
class _CallKit:
    """The arrays and addresses a fit's compiled calls share (see ``NumbaBackend._call_kit``)."""

    key: tuple            # (optimizer, objective, data) they were made for
    hyper: np.ndarray     # template: each call copies it (a minibatch's gather writes into it)
    update: int           # the optimiser step's address
    addresses: np.ndarray
    meta: np.ndarray      # template, as hyper; n_updates is set per call
    gather: int
    owned: dict           # the arrays behind the addresses, kept alive while the kit is


def _max_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def layer_paths(net: Network, fused_max_dim: int = FUSED_MAX_DIM) -> list[str]:
    """'fused' or 'blas' for each layer, by its dimensions (``FUSED_MAX_DIM``)."""
    return ["fused" if min(fi, fo) <= fused_max_dim or max(fi, fo) <= 2 * fused_max_dim else "blas"
            for fi, fo in net.layer_shapes()]


def _units(paths: list[str]) -> list[tuple[int, int, int]]:
    """(kind, t0, t1): each BLAS layer alone, consecutive fused layers together."""
    units: list[tuple[int, int, int]] = []
    for layer, path in enumerate(paths):
        if path == "fused" and units and units[-1][0] == 1 and units[-1][2] == layer - 1:
            units[-1] = (1, units[-1][1], layer)
        else:
            units.append((1 if path == "fused" else 0, layer, layer))
    return units


def _block_size(widths: list[int], n_samples: int) -> int:
    per_sample = sum(widths) + 2 * max(widths) + 2
    # a multiple of 16 leaves no scalar remainder after the vectorised loops
    bs = max(16, min(MAX_BLOCK, BLOCK_ELEMS // per_sample) // 16 * 16)
    return max(1, min(bs, n_samples))


# One-hidden-layer kernel: the block's hidden activations (H x block) should stay in L2.
MLP1_BLOCK_BYTES = 1 << 18
MLP1_MAX_BLOCK = 256
MLP1_GRANULE = 16


def _mlp1_split(n_in: int, hidden: int, n_out: int, n_samples: int) -> tuple[int, int, int]:
    """(block, chunks, chunk length) for the one-hidden-layer kernel, from the sizes alone.

    Blocks and chunks are whole multiples of ``MLP1_GRANULE`` samples (the data is
    zero-padded to one), so the vectorised loops never run a scalar remainder.
    """
    padded = -(-n_samples // MLP1_GRANULE) * MLP1_GRANULE
    bs = MLP1_BLOCK_BYTES // (8 * hidden) // MLP1_GRANULE * MLP1_GRANULE
    bs = max(MLP1_GRANULE, min(MLP1_MAX_BLOCK, bs))
    if padded <= bs:
        return padded, 1, padded
    work = n_samples * hidden * (n_in + n_out)
    n_blocks = -(-padded // bs)
    if work < PARALLEL_MIN_WORK:
        return bs, 1, padded
    chunks = min(MAX_CHUNKS, n_blocks)
    chunk_len = -(-n_blocks // chunks) * bs
    return bs, -(-padded // chunk_len), chunk_len


# The compiled forward streams blocks of this many samples through the hidden units one at a
# time: with no activations kept for a backward pass, a block can be long whatever the width.
PREDICT_BLOCK = 256


def _predict_split(n_in: int, hidden: int, n_out: int, n_samples: int) -> tuple[int, int, int]:
    """(block, chunks, chunk length) of the compiled forward, from the sizes alone."""
    bs = max(1, min(PREDICT_BLOCK, n_samples))
    n_blocks = -(-n_samples // bs)
    if n_samples * hidden * (n_in + n_out) < PARALLEL_MIN_WORK or n_blocks == 1:
        return bs, 1, n_samples
    chunk_len = -(-n_blocks // min(MAX_CHUNKS, n_blocks)) * bs
    return bs, -(-n_samples // chunk_len), chunk_len


def _predict_rows_per_block(n_out: int) -> int:
    """Rows of scratch per block sample of the compiled forward: one hidden row, the logits and
    their gradients' place, a delta row and two softmax rows (``cpu_mlp1._scratch`` with one row)."""
    return 1 + 2 * n_out + 3


def make_plan(net: Network, n_samples: int, fused_max_dim: int = FUSED_MAX_DIM, *, allocate: bool = True,
              gradients: bool = True, batch_rows: int | None = None):
    """Lay out parameters, choose paths and blocks, and allocate every buffer once.

    Buffers hold all ``n_samples`` rows, or with ``batch_rows`` (minibatches) that many:
    each update gathers its batch into them, and the loss goes through them range by
    range. With ``allocate=False``, only the bytes those buffers would take (memory
    checks); with ``gradients=False`` (a forward pass), no gradient buffers.
    """
    batched = batch_rows is not None
    n_samples = min(batch_rows, n_samples) if batched else n_samples  # the rows every buffer holds
    dtype = net.np_dtype
    sizes = np.asarray(net.layer_sizes, dtype=np.int64)
    n_layers = net.n_layers
    shapes = net.layer_shapes()
    w_off, b_off, offset = [], [], 0
    for fi, fo in shapes:
        w_off.append(offset)
        b_off.append(offset + fi * fo)
        offset += (fi + 1) * fo
    n_params = offset
    units = _units(layer_paths(net, fused_max_dim))
    stored = set()
    for kind, t0, t1 in units:
        if kind == 0:
            stored.add(t0)
        elif t1 < n_layers - 1:
            stored.add(t1)
    act_off = [-1] * n_layers
    offset = 0
    for layer in sorted(stored):
        act_off[layer] = offset
        offset += n_samples * shapes[layer][1]
    n_stored = max(offset, 1)
    pg_off = [-1] * n_layers
    pg_size, max_chunks, max_scratch = 0, 1, 1
    unit_bs, unit_chunks, unit_chunk_len = [], [], []
    for kind, t0, t1 in units:
        if kind == 0:
            unit_bs.append(0)
            unit_chunks.append(1)
            unit_chunk_len.append(n_samples)
            continue
        for layer in range(t0, t1 + 1):
            pg_off[layer] = pg_size
            pg_size += (shapes[layer][0] + 1) * shapes[layer][1]
        widths = list(net.layer_sizes[t0:t1 + 2])
        bs = _block_size(widths, n_samples)
        work = n_samples * sum(fi * fo for fi, fo in shapes[t0:t1 + 1])
        n_blocks = -(-n_samples // bs)
        if work < PARALLEL_MIN_WORK or n_blocks == 1:
            chunks, chunk_len = 1, n_samples
        else:
            chunks = min(MAX_CHUNKS, n_blocks)
            chunk_len = -(-n_blocks // chunks) * bs
            chunks = -(-n_samples // chunk_len)
        unit_bs.append(bs)
        unit_chunks.append(chunks)
        unit_chunk_len.append(chunk_len)
        max_chunks = max(max_chunks, chunks)
        max_scratch = max(max_scratch, bs * (sum(widths) + 2 * max(widths) + 2))
    codes = [_activation_code(net.hidden)] * n_layers
    mlp1 = n_layers == 2 and units == [(1, 0, 1)]
    if mlp1:
        bs, chunks, chunk_len = _mlp1_split(shapes[0][0], shapes[0][1], shapes[1][1], n_samples)
        max_chunks = chunks
        max_scratch = bs * (shapes[0][1] + 2 * shapes[1][1] + 3)
        pg_size = n_params
    if mlp1:
        fast = shapes[0][0] == 2 and shapes[1][1] == 2 and net.output == "softmax" and net.hidden == "tanh"
        tiny = n_samples <= TINY_MAX_SAMPLES and n_samples * shapes[0][1] <= TINY_MAX_WORK and not fast
        kernel = "train_tiny" if tiny else "train"
        chunk_kernel = "" if tiny else "2x2" if fast else "any"
        parallel = chunks > 1
    else:
        parallel = max_chunks > 1
        kinds = {u[0] for u in units}
        fused_runs = 1 in kinds
        kernel = ("train_passes_blas" if not fused_runs else "train_passes_fused" if 0 not in kinds
                  else "train_passes" if units[-1][0] == 0 else "train_passes_fused_head")
        chunk_kernel = ("fused_softmax" if net.output == "softmax" else "fused_squared") if fused_runs else ""
    # block buffers per thread (any chunk may run on any thread), partial gradients per chunk
    if not gradients:
        pg_size, max_grad_chunks, n_grads = 1, 1, 1
    else:
        max_grad_chunks, n_grads = max_chunks, n_params
    buffers = {"theta": (n_params,), "grads": (n_grads,), "acts": (n_stored,), "deltas": (n_stored,),
               "scratch": (_max_threads() if max_chunks > 1 else 1, max_scratch),
               "pg": (max_grad_chunks if max_grad_chunks > 1 else 1, max(pg_size, 1)),
               "bx": (1,), "bxt": (1,), "bt": (1,), "btt": (1,), "coef": (N_COEF,)}
    if batched:
        n_in, n_out = net.n_inputs, net.n_outputs
        if mlp1:  # feature-major, padded to whole blocks
            cols = -(-n_samples // MLP1_GRANULE) * MLP1_GRANULE
            buffers.update(bx=(n_in * cols,), bt=(n_out * cols,))
        else:
            buffers.update(bx=(n_samples * n_in,), bt=(n_samples * n_out,))
            if units[0][0] == 1:
                buffers["bxt"] = (n_samples * n_in,)
            if units[-1][0] == 1:
                buffers["btt"] = (n_samples * n_out,)
    if not allocate:
        return sum(math.prod(shape) for shape in buffers.values()) * dtype.itemsize
    i64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return _Plan(
        sizes=sizes, codes=i64(codes), head=_head_code(net.output), rows=n_samples, batched=batched,
        w_off=i64(w_off), b_off=i64(b_off), act_off=i64(act_off), pg_off=i64(pg_off),
        unit_kind=i64([u[0] for u in units]), unit_t0=i64([u[1] for u in units]),
        unit_t1=i64([u[2] for u in units]), unit_bs=i64(unit_bs), unit_chunks=i64(unit_chunks),
        unit_chunk_len=i64(unit_chunk_len),
        **{name: np.zeros(shape, dtype) for name, shape in buffers.items()},
        mlp1=mlp1, mlp1_bs=bs if mlp1 else 0, mlp1_chunks=chunks if mlp1 else 1,
        mlp1_chunk_len=chunk_len if mlp1 else 0,
        kernel=kernel + ("_parallel" if parallel else ""), parallel=parallel,
        chunk_kernel=chunk_kernel,
    )


def _activation_code(name: str) -> int:
    """The kernels' code for a hidden activation, from nnx.network's table; anything else is refused here,
    before any kernel runs (the kernels turn an unknown code into NaN, never into the identity)."""
    if name not in ACTIVATION_CODES:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATION_CODES)}")
    return ACTIVATION_CODES[name]


def _head_code(name: str) -> int:
    """The kernels' code for an output head (see ``_activation_code``)."""
    if name not in HEAD_CODES:
        raise ValueError(f"unknown output head {name!r}; expected one of {', '.join(HEAD_CODES)}")
    return HEAD_CODES[name]


class NumbaBackend(Backend):
    """Compiled whole-loop training on the CPU; other ops use the NumPy reference math.

    ``fused_max_dim`` sets the per-layer path split (0: every layer on BLAS; a
    huge value: every layer fused), so both paths can be run on any network.
    """

    name = "numba"
    xp = np

    def __init__(self, fused_max_dim: int = FUSED_MAX_DIM):
        self.fused_max_dim = fused_max_dim

    def quiet_floating_point(self):
        return np.errstate(all="ignore")

    def plan(self, net: Network, n_samples: int, state: TrainState | None = None,
             batch_rows: int | None = None, *, any_rows: bool = False) -> _Plan:
        """The plan for this network, sample count and batch size (None: full batch), kept in
        ``state`` for the rest of a fit (a fit's buffers are its own, so fits in several threads
        never share them). ``any_rows``: a loss alone, which any plan of the fit can compute."""
        key = (net, n_samples, batch_rows, self.fused_max_dim)
        cached = state.scratch.get("numba_plan") if state is not None else None
        if cached is not None and (cached[0] == key or (any_rows and cached[0][:2] == key[:2]
                                                        and cached[0][3] == key[3])):
            return cached[1]
        if cached is not None:
            del state.scratch["numba_plan"]  # its buffers go before the new ones are made
            cached = None
        plan = make_plan(net, n_samples, self.fused_max_dim, batch_rows=batch_rows)
        if state is not None:
            state.scratch["numba_plan"] = (key, plan)
        return plan

    def compiles(self, optimizer: Optimizer) -> bool:
        """Whether the compiled loop runs ``optimizer``: its exact class is in ``COMPILED_OPTIMIZERS``
        (never ``isinstance``: a subclass may change the math, so it runs the reference loop)."""
        return type(optimizer) in COMPILED_OPTIMIZERS

    def train(self, net: Network, state: TrainState, data: Data, objective: Objective, optimizer: Optimizer,
              lrs, batches: Batches | None = None) -> None:
        """The updates, full batch or on ``batches``, with the optimiser step after each, in one
        compiled call; optimisers the kernels do not compile run on the base loop."""
        if not self.compiles(optimizer):
            return super().train(net, state, data, objective, optimizer, lrs, batches)
        lrs = learning_rates(optimizer, lrs)
        if lrs.size:
            self._train(net, state, data, objective, optimizer, lrs, batches, want_loss=False)

    def train_and_loss(self, net: Network, state: TrainState, data: Data, objective: Objective,
                       optimizer: Optimizer, lrs, batches: Batches | None = None) -> float:
        """The updates and the loss of all samples at the new parameters in one compiled call."""
        if not self.compiles(optimizer):
            return super().train_and_loss(net, state, data, objective, optimizer, lrs, batches)
        return self._train(net, state, data, objective, optimizer, learning_rates(optimizer, lrs), batches,
                           want_loss=True)

    def records_losses(self, net: Network, optimizer: Optimizer) -> bool:
        """One hidden layer with both layers fused (the one-hidden-layer kernels), with an optimiser
        the kernels compile."""
        return self.compiles(optimizer) and net.n_layers == 2 and layer_paths(net, self.fused_max_dim) == [
            "fused", "fused"]

    def train_recording(self, net: Network, state: TrainState, data: Data, objective: Objective,
                        optimizer: Optimizer, lrs, every: int) -> np.ndarray:
        if not self.records_losses(net, optimizer):
            return super().train_recording(net, state, data, objective, optimizer, lrs, every)
        return self._train(net, state, data, objective, optimizer, learning_rates(optimizer, lrs), None,
                           want_loss=True, every=every)

    def objective_value(self, net: Network, params, data: Data, objective: Objective) -> float:
        return self._train(net, TrainState(params), data, objective, None, _NO_LRS, None, want_loss=True)

    def data_loss(self, net: Network, params, data: Data) -> float:
        return self._train(net, TrainState(params), data, Objective(), None, _NO_LRS, None, want_loss=True)

    def predict_output(self, net: Network, params, X):
        """Head outputs from the compiled fused forward where the network has one
        (no N x H activations); small problems, where NumPy's forward takes
        microseconds, and deeper networks take the reference forward."""
        n = int(X.shape[0])
        if not self._compiled_predict(net, n):  # decided before any buffer is made
            return super().predict_output(net, params, X)
        from ..kernels import cpu_mlp1

        plan = make_plan(net, n, self.fused_max_dim, gradients=False)
        plan.load(params)
        n_in, hidden, n_out = (int(v) for v in plan.sizes)
        bs, chunks, chunk_len = _predict_split(n_in, hidden, n_out, n)
        scratch = np.empty((_max_threads() if chunks > 1 else 1, bs * _predict_rows_per_block(n_out)), net.np_dtype)
        XT = np.ascontiguousarray(X.T)
        out = np.empty((n_out, n), net.np_dtype)
        common = (n, n_in, hidden, n_out, int(plan.codes[0]), plan.head)
        if chunks > 1:
            kernel, args = cpu_mlp1.predict_parallel, (*common, chunks, chunk_len, bs, plan.theta, XT, scratch, out)
        else:
            kernel, args = cpu_mlp1.predict, (*common, bs, plan.theta, XT, scratch, out)
        if not kernel.overloads:  # from the disk cache, if there, without the compiler's set-up
            _loaded(kernel, args)
        with self.quiet_floating_point(), _parallel_guard() if chunks > 1 else contextlib.nullcontext():
            kernel(*args)
        return np.ascontiguousarray(out.T)

    def _compiled_predict(self, net: Network, n_samples: int) -> bool:
        """Whether ``predict_output`` runs the compiled fused forward (one hidden layer, both
        layers fused, enough work to beat NumPy's forward)."""
        return (n_samples * max(net.layer_sizes) >= COMPILED_PREDICT_MIN
                and layer_paths(net, self.fused_max_dim) == ["fused", "fused"])

    # ---------------------------------------------------------------- memory
    def fit_bytes(self, net: Network, n_samples: int, batch_size: int | None = None, n_slots: int = 0) -> int:
        """The plan's buffers (N rows, or batch-sized with minibatches), the optimiser state
        (flat here, and per array in the fit's state with two copies: the interval's snapshot
        and the divergence replay), the data (and its feature-major copy, full batch only),
        the minibatch order (an epoch's permutation and the indices of an interval of the
        default 1,000 updates) and the validated targets: the loss is computed inside the
        compiled loop, so no N x H forward."""
        n_params = sum((i + 1) * o for i, o in net.layer_shapes())
        itemsize = net.np_dtype.itemsize
        per_sample = net.n_inputs + net.n_outputs
        plan = make_plan(net, n_samples, self.fused_max_dim, allocate=False, batch_rows=batch_size)
        if batch_size is None:
            data = (n_samples + -(-n_samples // MLP1_GRANULE) * MLP1_GRANULE) * per_sample
            order = 0
        else:
            data = n_samples * per_sample
            order = 8 * (n_samples + (DEFAULT_LOG_EVERY + 1) * (min(batch_size, n_samples) + 1))
        return (plan + itemsize * (data + n_slots * n_params + 3 * n_params * (1 + n_slots)) + order
                + validated_targets_bytes(net, n_samples) + BOOKKEEPING_BYTES)

    def predict_bytes(self, net: Network, n_samples: int) -> int:
        if not self._compiled_predict(net, n_samples):
            return super().predict_bytes(net, n_samples)
        plan = make_plan(net, n_samples, self.fused_max_dim, allocate=False, gradients=False)
        n_in, n_out = net.n_inputs, net.n_outputs
        bs = _predict_split(n_in, net.layer_sizes[1], n_out, n_samples)[0]
        scratch = _max_threads() * bs * _predict_rows_per_block(n_out)
        return (plan + net.np_dtype.itemsize * (n_samples * (2 * n_in + 2 * n_out) + scratch)
                + BOOKKEEPING_BYTES)

    def loss_bytes(self, net: Network, n_samples: int) -> int:
        """The loss runs the training kernel with no passes: a fit's buffers and data."""
        return self.fit_bytes(net, n_samples)

    def _train(self, net: Network, state: TrainState, data: Data, objective: Objective,
               optimizer: Optimizer | None, lrs: np.ndarray, batches: Batches | None, want_loss: bool,
               every: int = 0):
        """``len(lrs)`` updates (params, slots, step and update count in ``state``) and, with
        ``want_loss``, the objective at the new parameters, in one compiled call; with
        ``every`` (one-hidden-layer kernels, full batch), as an array with the objective after
        every ``every`` updates before it. A loss alone (no updates) goes through whatever
        plan the fit already has."""
        updates = int(lrs.size)
        rows = batches.max_size if batches is not None else None
        plan = self.plan(net, data.n_samples, state, rows, any_rows=updates == 0)
        plan.load(state.params)
        names = optimizer.slots() if optimizer is not None else ()
        slots = plan.optimizer_slots(len(names))
        for row, name in enumerate(names):
            plan.load_flat(slots[row], state.slots[name])
        # (summed data loss, sum of squared weights): the one-hidden-layer kernels write them, at the end
        # (want_loss) and every ``every`` updates; for the other kernels the last row is made here
        record = np.zeros(((updates - 1) // every + 1 if every else 1, 2))
        data_loss = self._run(plan, net, data, objective, optimizer, lrs, batches, state.step, want_loss, record,
                              every)
        if updates:
            plan.store(state.params)
            for row, name in enumerate(names):
                plan.store_flat(slots[row], state.slots[name])
            state.updates += updates
            state.step += updates
        if not want_loss:
            return float("nan")
        with self.quiet_floating_point():  # an overflowing penalty is a non-finite loss, reported by the driver
            if not plan.mlp1:
                record[-1] = data_loss, sum(float((W * W).sum()) for W in plan.weights())
            # tutorial 003's figure, (data loss + l2/2 * sum(W**2)) / N, in l2_penalty's order
            penalty = objective.l2 / 2 * record[:, 1] if objective.l2 else 0.0
            values = (record[:, 0] + penalty) / data.n_samples
        return values if every else float(values[-1])

    def _run(self, plan: _Plan, net: Network, data: Data, objective: Objective, optimizer: Optimizer | None,
             lrs: np.ndarray, batches: Batches | None, step: int, want_loss: bool,
             record: np.ndarray | None = None, every: int = 0) -> float:
        """The compiled call; returns the summed data loss of all samples at the new parameters
        when asked (and the one-hidden-layer kernels fill ``record``, see ``_train``)."""
        call = (plan, net, data, objective, optimizer, lrs, batches, step, want_loss, record, every)
        if not plan.ready:  # a fit's first call: whatever must compile compiles here
            if ANNOUNCE_COMPILES.get() and not self._compiled(*call):
                print(f"nnx: compiling the numba kernel for {'-'.join(map(str, net.layer_sizes))} {net.dtype} "
                      "(first use; several seconds, cached for later runs)", file=sys.stderr, flush=True)
            self._compile_side_by_side(*call)
        kernel, args = self._kernel_call(*call)
        if not kernel.overloads:  # from the disk cache, if there, without the compiler's set-up
            _loaded(kernel, args)
        plan.ready = True
        with _parallel_guard() if plan.parallel else contextlib.nullcontext():
            return float(kernel(*args))

    def _compile_side_by_side(self, plan: _Plan, net: Network, data: Data, objective: Objective,
                              optimizer: Optimizer | None, *call) -> None:
        """On a cold cache, a helper process (``compile_aside``) compiles what the entry point calls
        while this one compiles the entry point; what the helper made is then loaded from the
        cache. The helper takes the chunk kernel where there is one (the longer compile of the
        two), and this process first compiles the functions that kernel calls last
        (``late_callees``); otherwise, when the entry point is certain to compile here, the
        helper takes the optimiser step and, for networks of BLAS layers only, the row helpers
        the entry point's compile reaches last."""
        from ..kernels import cpu_mlp1, cpu_train, cpu_update

        module, kernels = ("cpu_mlp1", cpu_mlp1) if plan.mlp1 else ("cpu_train", cpu_train)
        jobs = []
        if plan.chunk_kernel:
            if not _chunk_kernel(plan, net.dtype, cached_only=True):
                jobs.append((module, plan.chunk_kernel))
        elif not _has_cache_index(_entry_point(plan, net)):
            if plan.kernel == "train_passes_blas":
                jobs.append(("cpu_train", "rows"))
            family = _update_family(optimizer)
            if not cpu_update.updater_cached(family, net.dtype):
                jobs.append(("cpu_update", family))
        helper = compile_aside.start(net.dtype, jobs) if jobs else None
        if helper is None:
            return
        step_aside = any(job_module == "cpu_update" for job_module, _ in jobs)
        try:
            if plan.chunk_kernel:  # the helper compiles it: first what its compile reaches last
                for function, argument_types in kernels.late_callees(plan.chunk_kernel, net.dtype, plan.kernel):
                    function.compile(argument_types)
            kernel, args = self._kernel_call(plan, net, data, objective, optimizer, *call, typing_only=True)
            kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))  # or loads it from the cache
            if not step_aside:  # the optimiser step here, while the helper works
                self._call_kit(plan, net, data, objective, optimizer)
        finally:
            compile_aside.finish(helper)

    def _compiled(self, plan: _Plan, net: Network, data: Data, objective: Objective, optimizer: Optimizer | None,
                  *call) -> bool:
        """Whether ``_run``'s call (the same arguments) finds its entry point, chunk kernel and
        optimiser step compiled, in this process or in the disk cache (then loaded), checked
        without compiling."""
        from ..kernels import cpu_update

        if plan.chunk_kernel and not _chunk_kernel(plan, net.dtype, cached_only=True):
            return False
        if not cpu_update.updater_cached(_update_family(optimizer), net.dtype):
            return False
        kernel, args = self._kernel_call(plan, net, data, objective, optimizer, *call, typing_only=True)
        return bool(kernel.overloads) or _loaded(kernel, args)

    def _kernel_call(self, plan: _Plan, net: Network, data: Data, objective: Objective, optimizer: Optimizer | None,
                     lrs: np.ndarray, batches: Batches | None, step: int, want_loss: bool,
                     record: np.ndarray | None = None, every: int = 0, *, typing_only: bool = False) -> tuple:
        """(entry point, its arguments) of the compiled call ``_run`` makes. What it calls by address
        (the chunk kernel, the optimiser step, the gather) is compiled or loaded here; with
        ``typing_only``, nothing is: the arguments then have the call's types (all a compile of the
        entry point needs) and null addresses, and must never be run."""
        from ..kernels import cpu_gather

        if plan.parallel and not plan.ready:
            _start_threading_layer()  # before the entry point loads from the cache (or compiles)
        kit = _typing_kit(net) if typing_only else self._call_kit(plan, net, data, objective, optimizer)
        n = data.n_samples
        order, bounds = _NO_INDEX, _NO_INDEX
        if plan.batched and batches is not None:  # (a loss alone may come with the fit's batches or none)
            order, bounds = _kernel_array(batches.order, np.int64), _kernel_array(batches.bounds, np.int64)
        batch_rows = plan.rows if plan.batched else 0
        lrs = _kernel_array(lrs, np.float64)
        hyper, meta = kit.hyper.copy(), kit.meta.copy()  # the kernel writes a step's rows and scale in them
        meta[cpu_gather.META.index("n_updates")] = lrs.size
        interval = (lrs, kit.update, kit.addresses, step)
        XT, TT = plan.feature_major(data)
        chunk_address = 0
        if not typing_only:
            if plan.chunk_kernel and not plan.chunk_address:
                plan.chunk_address = _chunk_kernel(plan, net.dtype).address
            chunk_address = plan.chunk_address
        kernel = _entry_point(plan, net)
        if plan.mlp1:
            interval += (record if record is not None else np.zeros((1, 2)), every)
            n_in, hidden, n_out = (int(v) for v in plan.sizes)
            args = (lrs.size, want_loss, n, n_in, hidden, n_out, int(plan.codes[0]), plan.head, chunk_address,
                    plan.mlp1_chunks, plan.mlp1_chunk_len, plan.mlp1_bs, plan.theta, plan.grads, XT, TT,
                    plan.scratch, plan.pg, plan.w_off, plan.b_off, plan.n_bias, hyper, data.X, data.T,
                    (batch_rows, order, bounds, kit.gather, meta), interval)
        else:
            X, T = data.X, data.T
            if plan.batched:  # the kernel works in the batch buffers, cut to each step's rows
                X, XT, T, TT = plan.batch_buffers(net)
            args = (lrs.size, want_loss, plan.sizes, plan.codes, plan.head, plan.w_off, plan.b_off, plan.act_off,
                    plan.pg_off, plan.unit_kind, plan.unit_t0, plan.unit_t1, plan.unit_bs, plan.unit_chunks,
                    plan.unit_chunk_len, plan.theta, plan.grads, X, XT, T, TT, plan.acts, plan.deltas, plan.scratch,
                    plan.pg, hyper, (batch_rows, order, bounds, data.X, data.T, kit.gather, meta),
                    interval + (chunk_address,))
        return kernel, args

    @staticmethod
    def _call_kit(plan: _Plan, net: Network, data: Data, objective: Objective,
                  optimizer: Optimizer | None) -> "_CallKit":
        """What a compiled call reads that stays the same through a fit (the scalars, the optimiser's
        settings and step, the addresses of the plan's buffers, the sizes), made once per fit and
        optimiser: the logging points of a small fit are many calls, each a few microseconds of work."""
        from ..kernels import cpu_gather, cpu_update

        key = (optimizer, objective, data)
        kit = plan.kit
        if kit is not None and kit.key[0] == optimizer and kit.key[1] == objective and kit.key[2] is data:
            return kit
        n = data.n_samples
        scale = 1.0 if objective.reduction == "sum" else 1.0 / n
        mean = objective.reduction == "mean"
        # [l2, full-batch scale, mean?, this step's scale] (a minibatch's gather rewrites the last)
        hyper = np.array([objective.l2, scale, mean, scale], dtype=net.np_dtype)
        # a loss alone runs no step: handed the fit's own (compiled anyway), else a no-op
        update = cpu_update.updater(_update_family(optimizer), net.dtype)
        settings = cpu_update.settings(optimizer) if optimizer is not None else _NO_SETTINGS
        batch_rows = plan.rows if plan.batched else 0
        # the minibatch gather, compiled on the first minibatch fit only (never called with full batches)
        gather = cpu_gather.gatherer("columns" if plan.mlp1 else "rows", net.dtype).address if batch_rows else 0
        slots = plan.slots if plan.slots is not None else plan.optimizer_slots(0)
        values = {"grads": plan.grads, "slots": slots, "w_off": plan.w_off, "b_off": plan.b_off,
                  "n_bias": plan.n_bias, "settings": settings, "coef": plan.coef}  # kept alive by the kit
        addresses = {name: a.ctypes.data for name, a in values.items()}
        addresses.update(n_params=plan.theta.size, n_slots=slots.shape[0], n_layers=plan.w_off.size)
        XT, _ = plan.feature_major(data)
        sizes = dict(rows=n, columns=XT.shape[1], n_in=net.n_inputs, n_out=net.n_outputs, batch_rows=batch_rows,
                     n_data=n, mean=mean, n_updates=0, feature_major_x=plan.batched and plan.first_fused,
                     feature_major_t=plan.batched and plan.head_fused, granule=MLP1_GRANULE)
        plan.kit = _CallKit(key, hyper, update.address, np.array([addresses[name] for name in cpu_update.ADDRESSES],
                                                                 dtype=np.int64),
                            np.array([sizes[name] for name in cpu_gather.META], dtype=np.int64), gather, values)
        return plan.kit

    def kernels_cached(self, net: Network, n_samples: int = 8, optimizer: Optimizer | None = None) -> bool:
        """Whether ``warm_up`` would find this fit's kernels compiled, in this process or in the
        disk cache (the entry point then loaded here, as ``warm_up`` would), rather than compile
        them: the seconds a cold compile takes are worth knowing before they start. The
        optimiser's small step is compiled (or loaded) here either way."""
        return self._compiled(*self._warm_up_call(net, n_samples, optimizer))

    def _warm_up_call(self, net: Network, n_samples: int, optimizer: Optimizer | None) -> tuple:
        """``_run``'s arguments for a fit of ``net`` on ``n_samples`` zero samples with ``optimizer``."""
        X = np.zeros((n_samples, net.n_inputs), net.np_dtype)
        T = np.zeros((n_samples, net.n_outputs), net.np_dtype)
        return (make_plan(net, n_samples, self.fused_max_dim), net, self.prepare_data(net, X, T), Objective(),
                optimizer if optimizer is not None else SGD(0.01), _NO_LRS, None, 0, True)

    def warm_up(self, net: Network, n_samples: int = 8, optimizer: Optimizer | None = None) -> float:
        """Compile (or load from cache) what a fit of ``net`` with ``optimizer`` (None: plain
        gradient descent, ``fit``'s default) runs; returns the seconds spent.

        One kernel serves every size of a path (2x2 tanh, any one-hidden-layer
        net, deeper nets), serial or chunked across threads, full batch or
        minibatches, with any optimiser, so ``n_samples`` should be the fit's own;
        the optimiser's step is compiled once per family and dtype. The CLI and
        benchmarks call this before timing so compile time is reported apart from
        run time.
        """
        start = time.perf_counter()
        self._run(*self._warm_up_call(net, n_samples, optimizer))
        return time.perf_counter() - start


def _chunk_kernel(plan: _Plan, dtype: str, *, cached_only: bool = False):
    """The C-callable kernel the plan's entry point calls (``_Plan.chunk_kernel``), compiled or
    loaded; with ``cached_only``, whether it is made or on disk (nothing compiled)."""
    from ..kernels import cpu_mlp1, cpu_train

    return (cpu_mlp1 if plan.mlp1 else cpu_train).chunk_kernel(plan.chunk_kernel, dtype, cached_only=cached_only)


def _update_family(optimizer: Optimizer | None) -> str:
    """The compiled optimiser step a call runs (``cpu_update``): a loss alone (no optimiser) runs none."""
    from ..kernels import cpu_update

    return "none" if optimizer is None else cpu_update.family(optimizer)


def _typing_kit(net: Network) -> _CallKit:
    """A call kit of the real one's types with nothing behind it (``_kernel_call(typing_only=True)``)."""
    from ..kernels import cpu_gather, cpu_update

    return _CallKit(key=(), hyper=np.zeros(4, net.np_dtype), update=0,
                    addresses=np.zeros(len(cpu_update.ADDRESSES), np.int64),
                    meta=np.zeros(cpu_gather.N_META, np.int64), gather=0, owned={})


def _entry_point(plan: _Plan, net: Network):
    """The compiled function a plan's training call enters (``plan.kernel``); ``train_tiny`` is made
    per input and output width where both are small (``cpu_mlp1.tiny_entry``)."""
    from ..kernels import cpu_mlp1, cpu_train

    if plan.kernel == "train_tiny":
        return cpu_mlp1.tiny_entry(net.n_inputs, net.n_outputs)
    return getattr(cpu_mlp1 if plan.mlp1 else cpu_train, plan.kernel)


def _has_cache_index(kernel) -> bool:
    """Whether ``kernel`` (an ``njit`` function) has compiled code here or any in the disk cache;
    False means a compile is certain (said without loading anything)."""
    from ..kernels.cpu_ccall import has_cache_index

    try:
        return bool(kernel.overloads) or has_cache_index(kernel._cache)
    except AttributeError:  # Numba's internals moved (or no cache): assume there is, so nothing more starts
        return True


def _start_threading_layer() -> None:
    """Start Numba's threading layer (once per process), which chunked entry points run on.

    Numba starts it when it compiles a parallel loop, or loads from the cache a function that
    holds one, but not for a cached function that reaches its loop through a callee that was
    itself loaded from the cache when the function compiled (numba/numba#4807): loading such an
    entry point alone then failed to link (``allocate_sched``) or crashed."""
    import numba

    numba.get_num_threads()


def _loaded(kernel, args) -> bool:
    """Whether ``kernel(*args)`` runs compiled code already in this process or in the disk cache
    (loaded here, without setting up Numba's compiler: ``cpu_ccall.load_overload``), rather than
    compiling first."""
    from ..kernels.cpu_ccall import load_overload

    try:
        return load_overload(kernel, tuple(kernel.typeof_pyval(a) for a in args))
    except Exception:  # noqa: BLE001 - Numba's internals moved: say loaded, so callers go on as before
        return True


# What the compiled loop runs: the exact optimiser classes (``compiles``), each with its step in
# nnx.kernels.cpu_update; anything else, subclasses included, runs on the reference loop.
COMPILED_OPTIMIZERS = (SGD, Adam, AdamW, RMSprop)
_NO_LRS = np.empty(0, np.float64)
_NO_INDEX = np.empty(0, np.int64)
_NO_SETTINGS = np.zeros(7, np.float64)


def _kernel_array(a, dtype) -> np.ndarray:
    """``a`` as the kernels take it: C-contiguous and writeable (a read-only array is another
    type to Numba, so it would compile a second specialisation), copied only when needed."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


# Layers that take parallel regions from any number of threads (Numba's own table); under
# any other (nnx's default, workqueue) parallel kernels run one at a time.
_THREAD_SAFE_LAYERS = ("tbb", "omp")


def _parallel_guard():
    """What a parallel kernel runs under: the process-wide lock, unless the threading layer
    takes concurrent parallel regions (an explicit ``NUMBA_THREADING_LAYER`` of tbb, omp,
    safe or threadsafe), when fits in several threads run their chunked kernels side by side."""
    import numba

    try:
        layer = numba.threading_layer()  # the layer in use, once any parallel code has run
    except ValueError:
        layer = numba.config.THREADING_LAYER  # the one asked for; "safe" and "threadsafe" load tbb or omp
        layer = "tbb" if layer in ("safe", "threadsafe") else layer
    return contextlib.nullcontext() if layer in _THREAD_SAFE_LAYERS else _PARALLEL_LOCK


def configure_threading() -> None:
    """Numba's default OpenMP pool and OpenBLAS's threads fight over the cores when
    prange and np.dot alternate; the workqueue layer avoids that. An explicit
    NUMBA_THREADING_LAYER is respected."""
    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"


def _configure_vector_width() -> None:
    """Let LLVM use 512-bit vectors on AVX-512 hosts.

    LLVM tunes Intel server CPUs (and Zen 5) to prefer 256-bit vectors; the
    tanh/exp-bound fused kernels run ~30% faster with 512-bit ones (tutorial
    003: 3.1 -> 2.35 us/pass, measured). numba fixes its CPU features when its
    CPU target is first set up, so this only acts before that, never over an
    explicit ``NUMBA_CPU_FEATURES``, and ``NNX_NUMBA_PREFER_256=1`` opts out.
    It applies to every numba function compiled in the process afterwards.
    """
    import numba
    from numba.core import registry

    if ("NUMBA_CPU_FEATURES" in os.environ or numba.config.CPU_FEATURES is not None
            or os.environ.get("NNX_NUMBA_PREFER_256") == "1"
            or "_toplevel_target_context" in vars(registry.cpu_target)):
        return
    try:
        import llvmlite.binding as llb

        features = llb.get_host_cpu_features()
        if features.get("avx512f"):
            numba.config.CPU_FEATURES = features.flatten() + ",-prefer-256-bit"
    except Exception:  # noqa: BLE001 - an optimisation only; numba's defaults stand
        pass


def check() -> None:
    """Raise when numba (or the SciPy BLAS its np.dot needs) cannot run here."""
    import numba  # an ImportError becomes "numba is not installed" in the registry

    major, minor = (int(p) for p in numba.__version__.split(".")[:2])
    if (major, minor) < (0, 59):
        raise BackendUnavailableError(f"numba {numba.__version__} is too old: pip install 'numba>=0.59'")
    if numba.config.DISABLE_JIT:
        raise BackendUnavailableError("NUMBA_DISABLE_JIT is set, and nnx's Numba kernels need the JIT: unset it "
                                      "(the numpy backend runs the same math without compiling)")
    if scipy_blas.module_file() is None:
        raise BackendUnavailableError("numba's BLAS calls need SciPy's BLAS (scipy.linalg.cython_blas), which is not "
                                      "installed: pip install scipy")


def create() -> Backend:
    configure_threading()
    _configure_vector_width()
    scipy_blas.load_alone()
    return NumbaBackend()
