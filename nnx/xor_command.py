"""``nnx xor``: tutorial 001's driver. Train the XOR network, then answer ``x ^ y`` until told to stop.

The network is the tutorial's (2-2-1, sigmoid hidden and output, uniform initial
weights, summed squared-error gradients at learning rate 1; ``nnx train --preset
xor``), trained for the driver's 5,000 epochs with its ``N% trained`` progress
line. Then ``Enter x:`` / ``Enter y:`` prompts print the network's output until
``q``, Ctrl-C or the end of the input, and it says ``Bye``.
"""
from __future__ import annotations

import argparse
import sys

from .backends import use_backend
from .model import MLP
from .presets import PRESETS

PRESET = PRESETS["xor"]
DRIVER_EPOCHS = 5_000  # the tutorial's main() trains 5,000 epochs
QUIT_WORDS = ("q", "quit", "exit")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.replace("``", "")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.set_defaults(run=run)
    parser.add_argument("--passes", type=int, default=DRIVER_EPOCHS,
                        help=f"training epochs (default: {DRIVER_EPOCHS:,}, the tutorial driver's)")
    parser.add_argument("--hidden", type=int, default=PRESET.hidden_units,
                        help=f"hidden units (default: {PRESET.hidden_units}; tutorial 002 uses 4)")
    parser.add_argument("--seed", type=int, default=PRESET.seed, help="initialisation seed (default: 0)")
    parser.add_argument("--backend", default="numpy",
                        help="numpy (default: 4 samples train in milliseconds, nothing to compile), numba, cupy, auto")


def train(passes: int, hidden: int, seed: int) -> MLP:
    """The tutorial's network trained ``passes`` epochs, printing 'N% trained' as it goes."""
    X, T = PRESET.data()
    model = MLP([2, hidden, 1], hidden=PRESET.hidden, output=PRESET.output, init=PRESET.init, seed=seed)
    for percent in range(1, 101):
        step = passes * percent // 100 - model.updates
        if step > 0:
            model.fit(X, T, passes=step, lr=PRESET.lr, l2=PRESET.l2, reduction=PRESET.reduction, log_every=step)
            if model.interrupted:
                raise KeyboardInterrupt
        print(f"{percent}% trained\r", end="", flush=True)
    print()
    return model


def _ask(prompt: str) -> float | None:
    """A number typed by the user, or None for q. EOFError and KeyboardInterrupt pass through."""
    while True:
        text = input(prompt).strip()
        if not text:
            continue
        if text.lower() in QUIT_WORDS:
            return None
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            print(f"{text!r} is not a number: enter 0 or 1 (q quits)", flush=True)


def run(args: argparse.Namespace) -> int:
    if args.passes < 1 or args.hidden < 1:
        print("nnx xor: error: --passes and --hidden must be at least 1", file=sys.stderr)
        return 2
    try:
        with use_backend(args.backend):
            model = train(args.passes, args.hidden, args.seed)
            while True:
                x = _ask("Enter x: ")
                if x is None:
                    break
                y = _ask("Enter y: ")
                if y is None:
                    break
                print(f"({x} ^ {y}) = {float(model.predict_proba([[x, y]])[0, 0])}", flush=True)
    except (KeyboardInterrupt, EOFError):
        print()  # the prompt or progress line was left open
    print("Bye")
    return 0
