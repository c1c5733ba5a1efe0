"""Compile a fit's C-callable kernel in a helper process while this process compiles the rest.

Numba compiles one function at a time in a process (under the GIL and its own lock), and a
fit on a cold cache compiles two large pieces that do not depend on each other: the entry
point and the chunk kernel it calls by address (``_Plan.chunk_kernel``). Where a second core
is free, a helper process compiles the chunk kernel into the disk cache while this process
compiles the entry point, and this process then loads it: the two compiles overlap, as in
``make -j2``. Where there is no chunk kernel (XOR-sized networks, BLAS layers only), the entry
point's compile is the long one: the helper then compiles the optimiser step and, for BLAS
layers, the row helpers (loss head, backward) that compile reaches last, and this process finds
them in the cache when it gets there. Whatever goes wrong in the helper (it cannot start, it
fails, the machine has one core, the cache cannot be written) leaves this process to compile
everything itself, as it would have anyway: the helper only ever saves time.
"""
from __future__ import annotations

import os
import subprocess
import sys

from ..background_compile import python_module
from ..bench.machine import usable_cores

# A helper still compiling after this long is stopped, and this process compiles the kernel.
WAIT_S = 300


def start(dtype: str, jobs) -> subprocess.Popen | None:
    """A helper process compiling, in order, ``nnx.kernels.<module>.compile_aside(name, dtype)``
    for each (module, name) of ``jobs`` (a chunk kernel, BLAS layers' row helpers, an optimiser
    step) into the cache, or None where it cannot help (one core, no writable cache, no Python
    to start: an embedded or frozen interpreter, whose executable is not a Python that runs ``-m``)."""
    import numba

    from ..kernels.cpu_math import CACHE

    if not CACHE or usable_cores() < 2 or not sys.executable or getattr(sys, "frozen", False):
        return None
    # the same cache key as here: Numba's cache tells CPUs apart by name and features
    from numba.core.codegen import get_host_cpu_features

    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba.config.CACHE_DIR),
               NUMBA_CPU_FEATURES=numba.config.CPU_FEATURES or get_host_cpu_features())
    try:
        return python_module("nnx.backends.compile_aside", dtype, *(f"{module}:{name}" for module, name in jobs),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=env)
    except OSError:
        return None


def finish(helper: subprocess.Popen) -> None:
    """Wait for ``helper`` (stopped after ``WAIT_S``, or when this process is interrupted)."""
    try:
        helper.wait(WAIT_S)
    except BaseException as stopped:
        helper.kill()
        helper.wait()
        if not isinstance(stopped, subprocess.TimeoutExpired):
            raise


def _main(dtype: str, *jobs: str) -> int:
    import importlib

    from . import numba_backend

    numba_backend.create()  # the threading layer and vector width a fit sets up
    for job in jobs:
        module, name = job.split(":")
        importlib.import_module(f"nnx.kernels.{module}").compile_aside(name, dtype)
    return 0


if __name__ == "__main__":
    status = _main(*sys.argv[1:])
    # The kernels are in the cache: leave now. The fit waits for this process to end, and the
    # interpreter's own shutdown (Numba's and LLVM's clean-up) takes another quarter second.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
