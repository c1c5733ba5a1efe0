"""The ``nnx`` command: ``nnx train`` reruns the tutorials, ``nnx backends`` says what runs here,
``nnx bench`` compares backends, ``nnx sweep`` trains many, ``nnx xor`` answers x ^ y."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from . import backends, cache
from .errors import BackendUnavailableError, NonFiniteLossError, OutOfMemoryError, format_bytes
from .metrics import clipped_cross_entropy
from .model import MLP
from .persistence import check_destination
from .presets import PRESETS
from .validation import check_count, check_fit_settings, check_seed


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a tutorial network (default: tutorial 003's two moons)",
                       description="Train one of the tutorials' networks and report loss, accuracy and speed.")
    p.add_argument("--preset", choices=sorted(PRESETS), default="moons",
                   help="which tutorial to rerun (default: moons)")
    p.add_argument("--backend", help="numpy, numba, cupy or auto (default: NNX_BACKEND, else auto)")
    p.add_argument("--hidden", type=int, help="hidden units (default: the tutorial's)")
    p.add_argument("--passes", type=int, help="full-batch passes (default: the tutorial's)")
    p.add_argument("--lr", type=float, help="learning rate (default: the tutorial's)")
    p.add_argument("--l2", type=float, help="L2 strength (default: the tutorial's)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    p.add_argument("--seed", type=int, help="initialisation seed (default: 0, as the tutorials)")
    p.add_argument("--log-every", type=int, help="passes between loss lines (default: the tutorial's)")
    p.add_argument("--save", metavar="PATH",
                   help="save the trained model to PATH (.npz appended when missing), also after Ctrl-C")


# Settings named as the command line spells them, in error messages.
_OPTION_NAMES = {"passes": "--passes", "log_every": "--log-every", "lr": "--lr", "l2": "--l2"}


def _train(args: argparse.Namespace) -> int:
    preset = PRESETS[args.preset]
    # Every argument is checked before any work (data, model, kernel compile, training).
    settings = check_fit_settings(
        preset.passes if args.passes is None else args.passes, preset.lr if args.lr is None else args.lr,
        preset.l2 if args.l2 is None else args.l2, preset.reduction,
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
    print(f"network {sizes} ({model.hidden}/{model.output}, {model.dtype}), {X.shape[0]} samples, "
          f"lr {settings.lr:g}, L2 {settings.l2:g}, {settings.reduction} reduction, {settings.passes} passes")
    print(f"backend: {backends.explain_backend()}")

    warm_up = getattr(backend, "warm_up", None)
    if warm_up is not None:
        seconds = warm_up(model.net, X.shape[0])
        print(f"compile: {seconds:.3f} s (first use of these kernels; cached on disk afterwards)")
    else:
        print("compile: none needed")

    def print_clipped_loss(updates: int, loss: float) -> None:
        # Tutorial 000 prints its clipped cross-entropy (not at epoch 0), a figure fit() does not log.
        if updates > 0:
            print(f"Epoch {updates}, Loss: {clipped_cross_entropy(model.predict_proba(X), y):.4f}", flush=True)

    start = time.perf_counter()
    model.fit(X, y, passes=settings.passes, lr=settings.lr, l2=settings.l2, reduction=settings.reduction,
              log_every=settings.log_every, verbose=not preset.tutorial_loss,
              callback=print_clipped_loss if preset.tutorial_loss else None)
    elapsed = time.perf_counter() - start

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
    print(f"kernel cache: {folder} ({format_bytes(cache.folder_size(folder))}, from {source}; "
          "empty it with `nnx cache clear`)")
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
