"""The reference math of every op, written once against an array namespace ``xp``.

NumPy and CuPy share this code unchanged; faster backends override single ops
or the whole training loop (``train``) and defer to these versions for the
cases they do not cover. The op order follows the from-scratch tutorials
(forward, all gradients, then the updates), so the NumPy backend reproduces
them to rounding.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from ..batching import Batches
from ..errors import OutOfMemoryError
from ..network import Network, Objective, TrainState
from ..optim import Optimizer

# The Python side of a fit or prediction (the model's lists, the history, the driver's
# frames): nothing next to any buffer worth refusing a fit over, but part of the figure.
BOOKKEEPING_BYTES = 1 << 18


def validated_targets_bytes(net: Network, n_samples: int) -> int:
    """Host memory validation takes before any backend sees the data: float64 targets
    (N, C), one-hot for softmax, built from two arrays of N integer ids."""
    return 8 * n_samples * (net.n_outputs + 2)


@dataclass
class Data:
    """Training data already on the backend: inputs and float targets of shape (N, C)."""

    X: object
    T: object

    @property
    def n_samples(self) -> int:
        return int(self.X.shape[0])


def learning_rates(optimizer: Optimizer, lrs) -> np.ndarray:
    """The lr of each update: ``lrs`` as given (float64), or an update count at the optimiser's own lr."""
    if isinstance(lrs, (int, np.integer)):
        return np.full(int(lrs), optimizer.lr, dtype=np.float64)
    return np.asarray(lrs, dtype=np.float64)


def l2_penalty(weights, l2: float) -> float:
    """l2/2 * sum(W**2) over the weight matrices (biases take no L2): tutorial 003's term."""
    return l2 / 2 * sum(float((W * W).sum()) for W in weights) if l2 else 0.0


class Workspace:
    """Buffers for one network and batch size, reused by every pass.

    Fresh batch-sized temporaries each pass cost NumPy page faults on large
    layers; keeping them here is what lets the base loop beat naive code.
    """

    def __init__(self, xp, net: Network, n_samples: int, *, forward_only: bool = False):
        dtype = net.np_dtype
        widths = net.layer_sizes[1:]
        self.acts = [xp.empty((n_samples, w), dtype=dtype) for w in widths]
        if forward_only:
            return
        self.deltas = [xp.empty((n_samples, w), dtype=dtype) for w in widths]
        self.scratch = [xp.empty((n_samples, w), dtype=dtype) for w in widths]
        self.grads = [
            (xp.empty((fan_in, fan_out), dtype=dtype), xp.empty(fan_out, dtype=dtype))
            for fan_in, fan_out in net.layer_shapes()
        ]
        self.weight_scratch = [xp.empty((fan_in, fan_out), dtype=dtype) for fan_in, fan_out in net.layer_shapes()]

    def first_rows(self, n: int) -> "Workspace":
        """The same buffers cut to the first ``n`` rows (a last, smaller minibatch)."""
        view = object.__new__(Workspace)
        view.__dict__.update(self.__dict__)
        for name in ("acts", "deltas", "scratch"):
            setattr(view, name, [a[:n] for a in getattr(self, name)])
        return view


class Backend:
    """Base backend: reference ops against ``self.xp`` plus the default Python loop."""

    name = "base"
    xp = np

    # ------------------------------------------------------------------ data
    def asarray(self, a, dtype) -> object:
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a) -> np.ndarray:
        return np.asarray(a)

    def prepare_data(self, net: Network, X: np.ndarray, T: np.ndarray) -> Data:
        """Move validated NumPy data to the backend once per ``fit``.

        The arrays handed on are always writeable: compiled kernels (Numba)
        treat a read-only array as a different type and would compile a second
        specialisation for it (tens of seconds cold). A read-only input of the
        right dtype and layout is copied; any other input is converted anyway.
        """
        return Data(self._writeable(self.asarray(X, net.np_dtype)), self._writeable(self.asarray(T, net.np_dtype)))

    @staticmethod
    def _writeable(a):
        return a.copy() if isinstance(a, np.ndarray) and not a.flags.writeable else a

    def prepare_params(self, net: Network, params) -> list[tuple[object, object]]:
        return [(self.asarray(W, net.np_dtype), self.asarray(b, net.np_dtype)) for W, b in params]

    def params_to_numpy(self, params) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(self.to_numpy(W).copy(), self.to_numpy(b).copy()) for W, b in params]

    def copy_params(self, params) -> list[tuple[object, object]]:
        return [(W.copy(), b.copy()) for W, b in params]

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    def quiet_floating_point(self):
        """Context in which overflow to inf/NaN is silent: nnx checks the loss itself."""
        return contextlib.nullcontext()

    # ----------------------------------------------------------- activations
    def activation_forward(self, kind: str, z, out):
        """out = f(z); ``out`` may be ``z``."""
        xp = self.xp
        if kind == "tanh":
            return xp.tanh(z, out=out)
        if kind == "sigmoid":
            xp.negative(z, out=out)
            xp.exp(out, out=out)
            out += 1
            return xp.reciprocal(out, out=out)
        if kind == "relu":
            return xp.maximum(z, 0, out=out)
        if kind == "identity":
            if out is not z:
                out[...] = z
            return out
        raise ValueError(f"unknown activation {kind!r}")

    def activation_backward(self, kind: str, grad, a, scratch):
        """grad *= f'(z), with f' written from the layer output ``a`` as the tutorials do."""
        xp = self.xp
        if kind == "tanh":  # (1 - a**2)
            xp.multiply(a, a, out=scratch)
            xp.subtract(1, scratch, out=scratch)
        elif kind == "sigmoid":  # a * (1 - a)
            xp.subtract(1, a, out=scratch)
            xp.multiply(a, scratch, out=scratch)
        elif kind == "relu":
            xp.greater(a, 0, out=scratch)
        elif kind == "identity":
            return grad
        else:
            raise ValueError(f"unknown activation {kind!r}")
        grad *= scratch
        return grad

    # ----------------------------------------------------------------- heads
    def head_output(self, head: str, z, out):
        """Head outputs from logits: softmax probabilities, sigmoid or identity."""
        if head == "softmax":
            xp = self.xp
            if out is not z:
                out[...] = z
            out -= out.max(axis=1, keepdims=True)
            xp.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
            return out
        return self.activation_forward(head, z, out)

    def head_delta(self, head: str, y, T, scale: float, out, scratch):
        """dLoss/dz from the head output ``y``: (y - T), times y(1-y) for sigmoid."""
        self.xp.subtract(y, T, out=out)
        if head == "sigmoid":
            self.activation_backward("sigmoid", out, y, scratch)
        if scale != 1.0:
            out *= scale
        return out

    def head_loss_sum(self, head: str, z, T) -> float:
        """Data loss summed over samples, from logits (log-sum-exp for softmax)."""
        xp = self.xp
        if head == "softmax":
            m = z.max(axis=1, keepdims=True)
            lse = xp.log(xp.exp(z - m).sum(axis=1)) + m[:, 0]
            return float((lse - (T * z).sum(axis=1)).sum())
        y = self.activation_forward(head, z, xp.empty_like(z))
        diff = y - T
        return float(0.5 * (diff * diff).sum())

    # ---------------------------------------------------------------- layers
    def dense_forward(self, x, W, b, kind: str, out):
        """out = f(x @ W + b)."""
        self.xp.dot(x, W, out=out)
        out += b
        return self.activation_forward(kind, out, out)

    # ----------------------------------------------------------- model level
    def forward(self, net: Network, params, X, ws: Workspace | None = None, *, logits: bool = False):
        """Layer outputs for X; the last is the head output (or the logits)."""
        if ws is None:
            ws = Workspace(self.xp, net, int(X.shape[0]), forward_only=True)
        a = X
        for layer, (W, b) in enumerate(params):
            last = layer == net.n_layers - 1
            kind = "identity" if last else net.hidden
            a = self.dense_forward(a, W, b, kind, ws.acts[layer])
        if not logits:
            self.head_output(net.output, a, a)
        return ws.acts

    def backward(self, net: Network, params, data: Data, objective: Objective, ws: Workspace):
        """Fill ``ws.grads`` from the activations in ``ws.acts`` (data loss + L2 in ``gd_update``)."""
        xp = self.xp
        scale = 1.0 if objective.reduction == "sum" else 1.0 / data.n_samples
        last = net.n_layers - 1
        delta = self.head_delta(net.output, ws.acts[last], data.T, scale, ws.deltas[last], ws.scratch[last])
        for layer in range(last, -1, -1):
            W, _ = params[layer]
            dW, db = ws.grads[layer]
            a_prev = data.X if layer == 0 else ws.acts[layer - 1]
            xp.dot(a_prev.T, delta, out=dW)
            xp.sum(delta, axis=0, out=db)
            if layer > 0:
                prev = ws.deltas[layer - 1]
                xp.dot(delta, W.T, out=prev)
                delta = self.activation_backward(net.hidden, prev, ws.acts[layer - 1], ws.scratch[layer - 1])
        return ws.grads

    def gradients(self, net: Network, params, data: Data, objective: Objective):
        """Gradients of the objective, L2 included, as fresh (dW, db) arrays."""
        ws = Workspace(self.xp, net, data.n_samples)
        self.forward(net, params, data.X, ws)
        grads = self.backward(net, params, data, objective, ws)
        out = []
        for (W, _), (dW, db) in zip(params, grads):
            out.append((dW + objective.l2 * W if objective.l2 else dW.copy(), db.copy()))
        return out

    def compiles(self, optimizer: Optimizer) -> bool:
        """Whether this backend runs ``optimizer`` in its own loop. The reference loop below runs
        any optimiser; backends with compiled loops answer from an explicit table of the exact
        classes they compile, and hand the rest to this loop."""
        return True

    def batch_data(self, data: Data, indices, ws: Workspace) -> Data:
        """The rows ``indices`` of the data, gathered into the workspace's batch buffers."""
        n = int(indices.shape[0])
        X, T = ws.batch_X[:n], ws.batch_T[:n]
        self.xp.take(data.X, indices, axis=0, out=X)
        self.xp.take(data.T, indices, axis=0, out=T)
        return Data(X, T)

    def train(self, net: Network, state: TrainState, data: Data, objective: Objective, optimizer: Optimizer,
              lrs, batches: Batches | None = None) -> None:
        """One update per entry of ``lrs`` (an array of learning rates, or a count at the
        optimiser's lr), full batch or on ``batches``, params and optimiser slots in place.

        This is the loop-level seam: backends override it to run the whole loop
        without Python per update; this default loops over the ops above.
        """
        xp = self.xp
        lrs = learning_rates(optimizer, lrs)
        rows = data.n_samples if batches is None else batches.max_size
        ws = Workspace(xp, net, rows)
        order = None
        if batches is not None:
            order = xp.asarray(batches.order)
            ws.batch_X = xp.empty((rows, net.n_inputs), net.np_dtype)
            ws.batch_T = xp.empty((rows, net.n_outputs), net.np_dtype)
        names = optimizer.slots()
        params = state.params
        with self.quiet_floating_point():
            for u, lr in enumerate(lrs.tolist()):
                batch, work = data, ws
                if batches is not None:
                    lo, hi = int(batches.bounds[u]), int(batches.bounds[u + 1])
                    work = ws if hi - lo == rows else ws.first_rows(hi - lo)
                    batch = self.batch_data(data, order[lo:hi], ws)
                self.forward(net, params, batch.X, work)
                self.backward(net, params, batch, objective, work)
                state.step += 1
                for layer, ((W, b), (dW, db), scratch) in enumerate(zip(params, work.grads, work.weight_scratch)):
                    if objective.l2:  # the tutorial's L2: on the weights' gradient, before the optimiser
                        xp.multiply(W, objective.l2, out=scratch)
                        dW += scratch
                    slots = [state.slots[name][layer] for name in names]
                    optimizer.update(xp, W, dW, tuple(s[0] for s in slots), state.step, lr)
                    optimizer.update(xp, b, db, tuple(s[1] for s in slots), state.step, lr)
                state.updates += 1

    def train_and_loss(self, net: Network, state: TrainState, data: Data, objective: Objective,
                       optimizer: Optimizer, lrs, batches: Batches | None = None) -> float:
        """``train``, then ``objective_value`` over all samples at the new parameters: the
        training driver's step between logging points. Backends that compute the loss inside
        their compiled loop override this to make it one call."""
        lrs = learning_rates(optimizer, lrs)
        if lrs.size:
            self.train(net, state, data, objective, optimizer, lrs, batches)
        return self.objective_value(net, state.params, data, objective)

    def records_losses(self, net: Network, optimizer: Optimizer) -> bool:
        """Whether ``train_recording`` takes each logging point's loss from the forward pass of the
        update that follows it, in one call; the training driver then logs many points per call."""
        return False

    def train_recording(self, net: Network, state: TrainState, data: Data, objective: Objective,
                        optimizer: Optimizer, lrs, every: int) -> np.ndarray:
        """Full batch: the updates, and ``objective_value`` after every ``every`` of them and
        after the last (float64, one value per logging point). This reference trains point
        by point."""
        lrs = learning_rates(optimizer, lrs)
        return np.asarray([self.train_and_loss(net, state, data, objective, optimizer, lrs[u:u + every])
                           for u in range(0, lrs.size, every)], dtype=np.float64)

    def objective_value(self, net: Network, params, data: Data, objective: Objective) -> float:
        """Tutorial 003's logged figure: (summed data loss + l2/2 * sum(W**2)) / N."""
        with self.quiet_floating_point():
            logits = self.forward(net, params, data.X, logits=True)[-1]
            total = self.head_loss_sum(net.output, logits, data.T)
            total += l2_penalty([W for W, _ in params], objective.l2)
        return total / data.n_samples

    def data_loss(self, net: Network, params, data: Data) -> float:
        """Mean data loss without L2."""
        with self.quiet_floating_point():
            logits = self.forward(net, params, data.X, logits=True)[-1]
            return self.head_loss_sum(net.output, logits, data.T) / data.n_samples

    def predict_output(self, net: Network, params, X):
        """Head outputs (probabilities or values) for X, as a backend array."""
        with self.quiet_floating_point():
            return self.forward(net, params, X)[-1]

    # ---------------------------------------------------------------- memory
    def fit_bytes(self, net: Network, n_samples: int, batch_size: int | None = None, n_slots: int = 0) -> int:
        """Peak memory of a fit on this backend: the validated targets, the data in the
        backend's dtype, the workspace (activations, deltas and scratch, batch x each width;
        gradients; the gathered batch), the loss evaluation's forward over all samples, and
        three copies of the parameters and optimiser slots (the model's, the driver's
        snapshot per interval and its divergence replay)."""
        n_params = sum((i + 1) * o for i, o in net.layer_shapes())
        rows = n_samples if batch_size is None else min(batch_size, n_samples)
        widths = sum(net.layer_sizes[1:])
        data = n_samples * (net.n_inputs + net.n_outputs)
        workspace = 3 * rows * widths + 2 * n_params
        if batch_size is not None:
            workspace += rows * (net.n_inputs + net.n_outputs)
        loss = n_samples * widths + 3 * n_samples * net.n_outputs
        return (net.np_dtype.itemsize * (data + workspace + loss + 3 * n_params * (1 + n_slots))
                + validated_targets_bytes(net, n_samples) + BOOKKEEPING_BYTES)

    def predict_bytes(self, net: Network, n_samples: int) -> int:
        """Peak memory of a prediction: the inputs, every layer's outputs (N x each width)
        and the softmax's row maxima and sums."""
        n_params = sum((i + 1) * o for i, o in net.layer_shapes())
        outputs = n_samples * (net.n_inputs + sum(net.layer_sizes[1:]) + 2)
        return net.np_dtype.itemsize * (outputs + n_params) + BOOKKEEPING_BYTES

    def loss_bytes(self, net: Network, n_samples: int) -> int:
        """Peak memory of ``MLP.loss``: a prediction's, plus the targets (validated, and in
        the backend's dtype) and the loss's row temporaries (log-sum-exp or squared error)."""
        targets = n_samples * (4 * net.n_outputs + 3) * net.np_dtype.itemsize
        return self.predict_bytes(net, n_samples) + targets + validated_targets_bytes(net, n_samples)

    def available_bytes(self) -> int | None:
        """Memory free for this backend's arrays now (None where it cannot be known)."""
        from ..memory import host_available_bytes

        return host_available_bytes()

    def out_of_memory_error(self, what: str, needed: int, available: int, advice: str) -> Exception:
        return OutOfMemoryError(what, needed, available, advice)

    def __repr__(self) -> str:
        return f"<nnx backend {self.name!r}>"
