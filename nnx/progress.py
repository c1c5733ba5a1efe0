"""What a fit shows while it runs: Keras' ``verbose`` levels.

0: nothing. 1: a progress bar on stderr (passes, loss, passes/s) when stderr is
a terminal, drawn only once a fit has run for a moment, so short fits stay
quiet; there, too, a line when the fit must first compile its kernel. 2: one
line per logging interval (the tutorials' "Loss after pass"), no bar. The bar
moves between backend calls (logging points, and the chunks a long interval is
run in): compiled backends never return to Python inside one.
"""
from __future__ import annotations

import contextvars
import sys

VERBOSITY = (0, 1, 2)
# Whether a compile a fit is about to wait for should be announced on stderr: verbose 1 on a
# terminal, where the progress bar would be (a cold compile takes seconds before the bar moves).
ANNOUNCE_COMPILES: contextvars.ContextVar[bool] = contextvars.ContextVar("nnx_announce_compiles", default=False)
# A bar appears only for fits still running after this many seconds.
BAR_DELAY_S = 1.0


def check_verbose(verbose) -> int:
    """0, 1 or 2; ``False``/``True`` keep their old meaning (silent / the tutorials' lines)."""
    if isinstance(verbose, bool):
        return 2 if verbose else 0
    if verbose not in VERBOSITY:
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (a line per logging interval); "
                         f"got {verbose!r}")
    return int(verbose)


class Progress:
    def __init__(self, verbose: int, start: int, total: int):
        self.verbose = verbose
        self.start = start
        self.bar = None
        self._announce = ANNOUNCE_COMPILES.set(verbose == 1 and sys.stderr.isatty())
        if verbose == 1 and total > 0 and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="pass", file=sys.stderr, delay=BAR_DELAY_S, dynamic_ncols=True,
                            leave=True)

    def log(self, updates: int, loss: float, extra: dict[str, float]) -> None:
        if self.verbose == 2:
            tail = "".join(f", {name} {value:f}" for name, value in extra.items())
            print(f"Loss after pass {updates}: {loss:f}{tail}", flush=True)
        elif self.bar is not None:
            self.bar.update(updates - self.start - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4g}", **{k: f"{v:.4g}" for k, v in extra.items()}, refresh=False)

    def advance(self, updates: int) -> None:
        """Updates done inside a long logging interval (between its backend calls)."""
        if self.bar is not None:
            self.bar.update(updates - self.start - self.bar.n)

    def close(self) -> None:
        ANNOUNCE_COMPILES.reset(self._announce)
        if self.bar is not None:
            self.bar.close()
