"""The same math in PyTorch (eager) and JAX (jit, whole loop in ``lax.fori_loop``).

Peers answer "would I be faster just using a framework?" in the same run, on
the same data and starting weights. Each is written the way a user of that
framework would write it (modules, autograd and ``torch.optim.SGD`` with weight
decay on the weights only, or ``torch.optim.Adam``; ``jax.grad`` of the loss with
its L2 term, Adam written out with PyTorch's formulas), not as a port of nnx's
kernels. Minibatch cases train on the very batches the nnx backends get
(``targets.minibatches``), indexed from the data on the device each update; JAX
pads each batch to the batch size with masked rows so one compiled loop serves
every batch. Both are optional (``pip install 'nnx[peers]'``) and are imported
only when asked for.
"""
from __future__ import annotations

import importlib.util
import time

import numpy as np

from ..initializers import initial_params
from .workloads import Case

PEERS = ("torch", "jax")
_INSTALL = "pip install 'nnx[peers]'"


def availability() -> dict[str, str | None]:
    """Each peer mapped to None when importable, else why it is skipped."""
    return {name: None if importlib.util.find_spec(name) is not None else f"{name} is not installed ({_INSTALL})"
            for name in PEERS}


def device(name: str) -> str:
    """``gpu`` when the framework's default device is a GPU, else ``cpu``."""
    if name == "torch":
        import torch
        return "gpu" if torch.cuda.is_available() else "cpu"
    if name == "jax":
        import jax
        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    raise ValueError(f"unknown peer {name!r}")


def _check(case: Case) -> None:
    if (case.hidden, case.output) != ("tanh", "softmax"):
        raise ValueError("the peers implement the tanh/softmax tutorial network only")


def _initial(case: Case, dtype: str):
    return [(W.astype(dtype), b.astype(dtype)) for W, b in initial_params(case.layer_sizes, case.init, 0)]


class TorchTarget:
    """PyTorch eager: ``nn.Sequential`` of ``Linear``/``Tanh``, cross-entropy, SGD or Adam, full batch
    or the case's minibatches (rows indexed from the data each update, as a training loop does)."""

    label = "torch"

    def __init__(self, case: Case, dtype: str, threads: int | None = None):
        import torch
        _check(case)
        from .targets import make_data
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = "gpu" if torch.cuda.is_available() else "cpu"
        self._dev = torch.device("cuda" if self.device == "gpu" else "cpu")
        tdtype = getattr(torch, dtype)
        X, y, _ = make_data(case)
        self.X = torch.as_tensor(X, dtype=tdtype, device=self._dev)
        self.y = torch.as_tensor(y, dtype=torch.long, device=self._dev)
        self.params0 = [(torch.as_tensor(W.T.copy(), device=self._dev), torch.as_tensor(b, device=self._dev))
                        for W, b in _initial(case, dtype)]
        self.case = case
        self.batches = {}
        if case.batch_size is not None:
            from .targets import minibatches
            for epochs in {1, case.epochs}:
                batches = minibatches(case, epochs)
                self.batches[epochs] = (torch.as_tensor(batches.order, device=self._dev), batches.bounds.tolist())
        self.reset()

    def reset(self) -> None:
        torch, nn = self.torch, self.torch.nn
        layers = []
        for i, (W, b) in enumerate(self.params0):
            linear = nn.Linear(W.shape[1], W.shape[0], device=self._dev, dtype=W.dtype)
            with torch.no_grad():
                linear.weight.copy_(W)
                linear.bias.copy_(b)
            layers.append(linear)
            if i < len(self.params0) - 1:
                layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)
        weights = [m.weight for m in self.model if isinstance(m, nn.Linear)]
        biases = [m.bias for m in self.model if isinstance(m, nn.Linear)]
        kind = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[self.case.optimizer]
        self.optimizer = kind([{"params": weights, "weight_decay": self.case.l2},
                               {"params": biases, "weight_decay": 0.0}], lr=self.case.lr)
        self._sync()

    def _sync(self) -> None:
        if self.device == "gpu":
            self.torch.cuda.synchronize()

    def warm_up(self) -> dict:
        self.reset()
        start = time.perf_counter()
        self.run(1)
        return {"first_pass_s": time.perf_counter() - start, "compile_s": None}

    def run(self, passes: int) -> None:
        F = self.torch.nn.functional
        reduction = "sum" if self.case.reduction == "sum" else "mean"
        if self.case.batch_size is not None:
            self._run_batches(passes, reduction)
            return
        for _ in range(passes):
            self.optimizer.zero_grad()
            loss = F.cross_entropy(self.model(self.X), self.y, reduction=reduction)
            loss.backward()
            self.optimizer.step()
        self._sync()

    def _run_batches(self, epochs: int, reduction: str) -> None:
        F = self.torch.nn.functional
        if epochs not in self.batches:
            from .targets import minibatches
            batches = minibatches(self.case, epochs)
            self.batches[epochs] = (self.torch.as_tensor(batches.order, device=self._dev), batches.bounds.tolist())
        order, bounds = self.batches[epochs]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            index = order[lo:hi]
            self.optimizer.zero_grad()
            loss = F.cross_entropy(self.model(self.X[index]), self.y[index], reduction=reduction)
            loss.backward()
            self.optimizer.step()
        self._sync()

    def finite(self) -> bool:
        return all(bool(self.torch.isfinite(p).all()) for p in self.model.parameters())

    def info(self) -> dict:
        return {"device": self.device, "torch": self.torch.__version__, "torch_threads": self.torch.get_num_threads()}


class JaxTarget:
    """JAX: ``jax.grad`` of the summed cross-entropy + L2, the whole loop jitted in ``lax.fori_loop``
    (gradient descent, or Adam over the case's minibatches).

    float64 needs ``jax_enable_x64``; matmul precision is set to ``highest`` so a
    GPU does not silently use TF32 where nnx computes in full float32. XLA sizes
    its own CPU thread pool (it cannot be resized after start-up).
    """

    label = "jax"

    def __init__(self, case: Case, dtype: str, threads: int | None = None):
        import jax
        _check(case)
        from .targets import make_data
        jax.config.update("jax_enable_x64", True)
        jax.config.update("jax_default_matmul_precision", "highest")
        import jax.numpy as jnp
        self.jax, self.jnp = jax, jnp
        self.device = "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
        X, y, _ = make_data(case)
        self.X = jnp.asarray(X, dtype=dtype)
        self.y = jnp.asarray(y)
        self.params0 = [(jnp.asarray(W), jnp.asarray(b)) for W, b in _initial(case, dtype)]
        lr, l2, mean = case.lr, case.l2, case.reduction == "mean"

        def loss(params, X, y):
            a = X
            for W, b in params[:-1]:
                a = jnp.tanh(a @ W + b)
            W, b = params[-1]
            logp = jax.nn.log_softmax(a @ W + b, axis=1)
            data = -jnp.take_along_axis(logp, y[:, None], axis=1).sum()
            if mean:
                data = data / X.shape[0]
            return data + l2 / 2 * sum(jnp.sum(W * W) for W, _ in params)

        grad = jax.grad(loss)

        @jax.jit
        def train(params, X, y, passes):
            def step(_, p):
                g = grad(p, X, y)
                return jax.tree_util.tree_map(lambda w, dw: w - lr * dw, p, g)
            return jax.lax.fori_loop(0, passes, step, params)

        self._train = train
        self.result = None
        if case.batch_size is not None:
            self._minibatch_loop(case, dtype)

    def _minibatch_loop(self, case: Case, dtype: str) -> None:
        """Adam on the case's batches: each padded to the batch size, its padding masked out of
        the loss, so one compiled ``fori_loop`` over the updates serves every batch."""
        from .targets import minibatches
        jax, jnp = self.jax, self.jnp
        if case.optimizer != "adam":
            raise ValueError("the JAX peer's minibatch loop implements Adam")
        size = case.batch_size
        batches = minibatches(case, case.epochs)  # the round's batches; shorter runs take the first ones
        index = np.zeros(batches.updates * size, np.int64)
        mask = np.zeros(batches.updates * size)
        for u, (lo, hi) in enumerate(zip(batches.bounds[:-1], batches.bounds[1:])):
            index[u * size:u * size + hi - lo] = batches.order[lo:hi]
            mask[u * size:u * size + hi - lo] = 1.0
        self.index, self.mask = jnp.asarray(index), jnp.asarray(mask, dtype=dtype)
        lr, l2, mean = case.lr, case.l2, case.reduction == "mean"
        b1, b2, eps = 0.9, 0.999, 1e-8
        tree_map = jax.tree_util.tree_map

        def loss(params, X, y, m):
            a = X
            for W, b in params[:-1]:
                a = jnp.tanh(a @ W + b)
            W, b = params[-1]
            logp = jax.nn.log_softmax(a @ W + b, axis=1)
            data = -(jnp.take_along_axis(logp, y[:, None], axis=1)[:, 0] * m).sum()
            if mean:
                data = data / m.sum()
            return data + l2 / 2 * sum(jnp.sum(W * W) for W, _ in params)

        grad = jax.grad(loss)

        @jax.jit
        def train(params, X, y, index, mask, updates):
            def step(u, carry):
                p, m, v = carry
                rows = jax.lax.dynamic_slice(index, (u * size,), (size,))
                g = grad(p, X[rows], y[rows], jax.lax.dynamic_slice(mask, (u * size,), (size,)))
                t = (u + 1).astype(X.dtype)
                m = tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
                v = tree_map(lambda v, g: b2 * v + (1 - b2) * (g * g), v, g)
                bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
                p = tree_map(lambda p, m, v: p - (lr / bc1) * (m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps)), p, m, v)
                return p, m, v
            zeros = tree_map(jnp.zeros_like, params)
            return jax.lax.fori_loop(0, updates, step, (params, zeros, zeros))[0]

        self._train = lambda params, X, y, epochs: train(params, X, y, self.index, self.mask,
                                                         epochs * case.updates_per_pass)

    def warm_up(self) -> dict:
        start = time.perf_counter()
        self.run(1)  # traces and compiles; ``passes`` is traced, so no later recompilation
        compile_s = time.perf_counter() - start
        start = time.perf_counter()
        self.run(1)
        return {"first_pass_s": time.perf_counter() - start, "compile_s": compile_s}

    def reset(self) -> None:
        """Nothing to undo: every run starts from the immutable initial parameters."""

    def run(self, passes: int) -> None:
        self.result = self._train(self.params0, self.X, self.y, passes)
        self.jax.block_until_ready(self.result)

    def finite(self) -> bool:
        return self.result is not None and all(bool(np.isfinite(np.asarray(a)).all())
                                               for pair in self.result for a in pair)

    def info(self) -> dict:
        return {"device": self.device, "jax": self.jax.__version__, "jax_threads": "XLA's own pool (not pinned)"}


def make_target(name: str, case: Case, dtype: str, threads: int | None = None):
    if name == "torch":
        return TorchTarget(case, dtype, threads)
    if name == "jax":
        return JaxTarget(case, dtype, threads)
    raise ValueError(f"unknown peer {name!r}")
