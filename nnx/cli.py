"""The ``nnx`` command: ``nnx train`` reruns the tutorials, ``nnx backends`` says what runs here,
``nnx bench`` compares backends, ``nnx sweep`` trains many, ``nnx xor`` answers x ^ y."""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Sequence

from . import backends, cache
from .errors import BackendUnavailableError, NonFiniteLossError, OutOfMemoryError, format_bytes
from .metrics import clipped_cross_entropy
from .model import MLP
from .persistence import check_destination
from .presets import PRESETS
from .validation import check_count, check_fit_settings, check_positive_finite, check_seed


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a tutorial network (default: tutorial 003's two moons)",
                       description="Train one of the tutorials' networks and report loss, accuracy and speed.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="moons",
                   help="which tutorial to rerun (default: moons)")
    p.add_argument("--backend", help="numpy, numba, cupy or auto (default: NNX_BACKEND, else auto)")
    p.add_argument("--hidden", type=int, help="hidden units (default: the tutorial's)")
    p.add_argument("--passes", type=int, help="updates to run (default: the tutorial's)")
    p.add_argument("--epochs", type=int, help="passes over the data instead of --passes (ceil(N / batch size) "
                                              "updates each)")
    p.add_argument("--lr", type=float, help="learning rate (default: the tutorial's, or the optimizer's own)")
    p.add_argument("--optimizer", metavar="NAME[:K=V,...]",
                   help="sgd, adam, adamw or rmsprop with PyTorch's settings, e.g. adam or "
                        "'sgd:momentum=0.9,nesterov=True' (default: the tutorial's plain gradient descent)")
    p.add_argument("--batch-size", type=int, help="minibatch size (default: all samples at once)")
    p.add_argument("--schedule", metavar="NAME[:K=V,...]",
                   help="learning-rate schedule: constant, step, exponential, cosine or warmup, e.g. "
                        "'cosine:T_max=20000' or 'step:step_size=5000,gamma=0.5'")
    p.add_argument("--l2", type=float, help="L2 strength (default: the tutorial's)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--seed", type=int, help="initialisation seed (default: 0, as the tutorials)")
    p.add_argument("--log-every", type=int, help="passes between loss lines (default: the tutorial's)")
    p.add_argument("--save", metavar="PATH",
                   help="save the trained model to PATH (.npz appended when missing), also after Ctrl-C")


# Settings named as the command line spells them, in error messages.
_OPTION_NAMES = {"passes": "--passes", "log_every": "--log-every", "lr": "--lr", "l2": "--l2"}


def _optimizer(args: argparse.Namespace, preset_lr: float):
    """The optimiser the options name: the tutorial's gradient descent unless --optimizer says otherwise."""
    from .optim import SGD
    from .optim.spec import parse_optimizer

    if args.lr is not None:
        check_positive_finite(args.lr, "--lr")
    if args.optimizer is None:
        return SGD(preset_lr if args.lr is None else args.lr)
    plain_sgd = args.optimizer.strip().lower().partition(":")[0] == "sgd" and "lr=" not in args.optimizer
    # SGD has no default lr in PyTorch: the tutorial's applies unless one is given
    return parse_optimizer(args.optimizer, preset_lr if args.lr is None and plain_sgd else args.lr)


def _train(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    # Every argument is checked before any work (data, model, kernel compile, training).
    from .optim.spec import parse_schedule

    if args.passes is not None and args.epochs is not None:
        raise ValueError("give --passes or --epochs, not both")
    optimizer = _optimizer(args, preset.lr)
    schedule = None if args.schedule is None else parse_schedule(args.schedule)
    epochs = None if args.epochs is None else check_count(args.epochs, "--epochs", minimum=0)
    batch_size = None if args.batch_size is None else check_count(args.batch_size, "--batch-size", minimum=1)
    passes = preset.passes if args.passes is None and epochs is None else args.passes
    settings = check_fit_settings(
        0 if passes is None else passes, optimizer.lr, preset.l2 if args.l2 is None else args.l2, preset.reduction,
        preset.log_every if args.log_every is None else args.log_every, names=_OPTION_NAMES)
    hidden_units = None if args.hidden is None else check_count(args.hidden, "--hidden", minimum=1)
    seed = preset.seed if args.seed is None else check_seed(args.seed, "--seed")
    save_path = None if args.save is None else check_destination(args.save)
    if args.backend:
        backends.set_backend(args.backend)
    backend = backends.get_backend()

    X, y = preset.data()
    model = MLP(preset.layer_sizes(X, y, hidden_units), hidden=preset.hidden, output=preset.output,
                init=preset.init, seed=seed, dtype=args.dtype)
    sizes = "-".join(map(str, model.layer_sizes))
    print(f"nnx train --preset {preset.name}: {preset.title}")
    length = f"{epochs} epochs" if epochs is not None else f"{settings.passes} passes"
    batches = "full batch" if batch_size is None else f"batch {batch_size}"
    trainer = (f"lr {settings.lr:g}" if args.optimizer is None else optimizer.describe()) + (
        "" if schedule is None else f", schedule {schedule}")
    print(f"network {sizes} ({model.hidden}/{model.output}, {model.dtype}), {X.shape[0]} samples, "
          f"{trainer}, L2 {settings.l2:g}, {settings.reduction} reduction, {batches}, {length}")
    print(f"backend: {backends.explain_backend()}")

    fit_settings = dict(optimizer=optimizer, schedule=schedule, batch_size=batch_size, l2=settings.l2,
                        reduction=settings.reduction)
    updates = settings.passes if epochs is None else epochs * -(-X.shape[0] // (batch_size or X.shape[0]))
    backend = _kernels_for(backend, model, X, y, fit_settings, updates)

    def print_clipped_loss(updates: int, loss: float) -> None:
        # Tutorial 000 prints its clipped cross-entropy (not at epoch 0), a figure fit() does not log.
        if updates > 0:
            print(f"Epoch {updates}, Loss: {clipped_cross_entropy(model.predict_proba(X), y):.4f}", flush=True)

    start = time.perf_counter()
    model.fit(X, y, passes=None if epochs is not None else settings.passes, epochs=epochs, **fit_settings,
              log_every=settings.log_every, verbose=0 if preset.tutorial_loss else 2,
              callback=print_clipped_loss if preset.tutorial_loss else None)
    elapsed = time.perf_counter() - start
    if not (model.interrupted and threading.current_thread() is threading.main_thread()):
        return _summarise(model, X, y, preset, backend, elapsed, save_path)
    # winding down after Ctrl-C: a further Ctrl-C must not cut the summary or the save short
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return _summarise(model, X, y, preset, backend, elapsed, save_path)
    finally:
        signal.signal(signal.SIGINT, previous)


# A first run trains on NumPy while its kernels compile in the background when NumPy is expected
# to finish within this many seconds: about what a cold compile of one kernel takes on 2 cores.
BACKGROUND_MAX_NUMPY_S = 5.0
PROBE_UPDATES = 40


def _kernels_for(backend, model: MLP, X, y, fit_settings: dict, updates: int):
    """Compile (or load) the run's kernels and return the backend to train on. With a cold cache
    and a run NumPy finishes sooner than the compile would, the kernels compile in a detached
    process for the next run (``nnx.background_compile``) and this run trains on NumPy."""
    from . import background_compile

    if getattr(backend, "warm_up", None) is None:
        print("compile: none needed")
        return backend
    optimizer, n = fit_settings["optimizer"], X.shape[0]
    if getattr(backend, "kernels_cached", None) is None:  # CuPy: NVRTC and its own cache
        _print_compile(backend.warm_up(model.net, n))
        return backend
    start = time.perf_counter()
    if backend.kernels_cached(model.net, n, optimizer):
        print(f"compile: none, kernels loaded from the cache in {time.perf_counter() - start:.3f} s")
        return backend
    numpy_s = _numpy_seconds(model, X, y, fit_settings, updates) if background_compile.enabled() else math.inf
    if numpy_s <= BACKGROUND_MAX_NUMPY_S:
        try:
            pid = background_compile.start(model.net, n, optimizer)
        except OSError as exc:
            print(f"compile: no background process could start ({exc}); compiling first", flush=True)
        else:
            where = f"pid {pid}" if pid is not None else "already under way"
            print(f"compile: {backend.name}'s kernels for this network are not cached yet: they compile in the "
                  f"background ({where}) for later runs, and this run trains on numpy (about {numpy_s:.1f} s)",
                  flush=True)
            return backends.set_backend("numpy")
    _print_compile(backend.warm_up(model.net, n, optimizer))
    return backend


def _print_compile(seconds: float) -> None:
    print(f"compile: {seconds:.3f} s (first use of these kernels; cached on disk afterwards)")


def _numpy_seconds(model: MLP, X, y, fit_settings: dict, updates: int) -> float:
    """The NumPy backend's time for ``updates`` updates: the difference between fits of a few
    and of ``PROBE_UPDATES`` more on a copy of the model (a fit's fixed cost cancels), after
    one untimed fit (first calls cost more)."""
    import copy

    probe = copy.deepcopy(model)
    seconds = []
    with backends.use_backend("numpy"):
        for passes in (PROBE_UPDATES // 4, PROBE_UPDATES // 4, PROBE_UPDATES + PROBE_UPDATES // 4):
            start = time.perf_counter()
            probe.fit(X, y, passes=passes, **fit_settings, log_every=passes, verbose=0)
            seconds.append(time.perf_counter() - start)
    return max(seconds[2] - seconds[1], 0.0) / PROBE_UPDATES * updates


def _summarise(model: MLP, X, y, preset, backend, elapsed: float, save_path) -> int:
    """The run's closing lines (accuracy, rate, interruption) and its save."""
    done = model.updates
    print(f"final training accuracy: {100 * model.accuracy(X, y):.2f}%")
    if preset.output == "sigmoid":
        for row, out in zip(X, model.predict_proba(X)[:, 0]):
            print(f"({int(row[0])} ^ {int(row[1])}) = {out}")
    rate = done / elapsed if elapsed > 0 else float("inf")
    print(f"training: {done} passes in {elapsed:.3f} s = {rate:,.0f} passes/s on {backend.name}")
    if model.interrupted:
        print(f"(interrupted by Ctrl-C after pass {done}: the figures above cover the passes done)")
    if save_path is not None:
        print(f"saved to {model.save(save_path)}")
    return 130 if model.interrupted else 0


def _backends(args: argparse.Namespace) -> int:
    for name, reason in backends.available_backends().items():
        print(f"{name:6} {'available' if reason is None else 'unavailable: ' + reason}")
    print(f"active: {backends.explain_backend()}")
    folder, source = cache.numba_cache_dir()
    size = cache.folder_size(folder)
    print(f"kernel cache: {folder} ({format_bytes(size)}, from {source}; empty it with `nnx cache clear`)")
    if source != "NUMBA_CACHE_DIR":  # kernels of other nnx versions or kernel sources, never loaded by this one
        others = cache.folder_size(cache.cache_root()) - size
        if others > 0:
            print(f"other kernel folders under {cache.cache_root()} (other nnx versions or kernel sources): "
                  f"{format_bytes(others)}, also emptied by `nnx cache clear`")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if args.action == "clear":
        folder, freed = cache.clear()
        print(f"removed {folder} ({format_bytes(freed)})")
    else:
        folder, source = cache.numba_cache_dir()
        print(f"{folder} ({format_bytes(cache.folder_size(folder))}, from {source})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .bench import command as bench_command
    from .sweep import command as sweep_command
    from . import xor_command

    parser = argparse.ArgumentParser(prog="nnx", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="{train,backends,cache,bench,sweep,xor}")
    _train_parser(sub)
    sub.add_parser("backends", help="list the backends usable here, what auto picks and the kernel cache")
    cache_parser = sub.add_parser("cache", help="where compiled kernels are cached; `nnx cache clear` empties it",
                                  description="Compiled kernels live in a per-user cache folder (NNX_CACHE_DIR).")
    cache_parser.add_argument("action", nargs="?", choices=["show", "clear"], default="show")
    bench_command.add_arguments(sub.add_parser(
        "bench", help="time workloads per backend and compare them",
        description="Time nnx's benchmark workloads on each backend against the tutorial's NumPy code."))
    sweep_command.add_arguments(sub.add_parser("sweep", help="train one network per combination of settings"))
    xor_command.add_arguments(sub.add_parser("xor", help="tutorial 001: train XOR, then answer x ^ y"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `nnx` runs the main job
        args = parser.parse_args(["train"])
    command = args.command
    handlers = {"train": _train, "backends": _backends, "cache": _cache}
    try:
        if command == "bench":
            from .bench import command as bench_command
            return bench_command.run(args)
        if command in ("sweep", "xor"):
            return args.run(args)
        return handlers[command](args)
    except (ValueError, BackendUnavailableError, NonFiniteLossError, OutOfMemoryError) as exc:
        print(f"nnx: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a save that failed (disk full, quota): the old file is intact
        print(f"nnx: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nnx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
