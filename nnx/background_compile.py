"""Compile a fit's Numba kernels in a detached process, so a first run need not wait for them.

A cold compile takes seconds (tutorial 003's kernel about 5 s on a 2-core machine), longer
than the NumPy backend takes for a short run. ``nnx train`` therefore starts the compile
here, trains that run on NumPy, and the next run loads the kernels from the disk cache.
The process is detached: it finishes and fills the cache even when the run that started it
has already ended. One compile per kernel runs at a time (a lock file per network, in the
kernel cache folder, beside its log), and it never starts when the cache cannot be written
(nothing would be kept).

``NNX_BACKGROUND_COMPILE=0`` turns it off: kernels then compile in the foreground, as a
library ``fit`` always does.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

from .network import Network
from .optim import Optimizer

ENV_VAR = "NNX_BACKGROUND_COMPILE"
# A lock older than this belongs to a compile that died without removing it.
STALE_LOCK_S = 15 * 60


def enabled() -> bool:
    """Off with ``NNX_BACKGROUND_COMPILE=0`` or when kernels cannot be cached."""
    if os.environ.get(ENV_VAR, "").strip() == "0":
        return False
    from .kernels.cpu_math import CACHE

    return bool(CACHE)


LOCK_PATTERN = "compiling-*.lock"


def _lock_path(spec: tuple) -> Path:
    """In the kernel cache folder itself: the one folder nnx knows it may write."""
    from . import cache

    folder, _ = cache.numba_cache_dir()
    return folder / LOCK_PATTERN.replace("*", hashlib.sha256(repr(spec).encode()).hexdigest()[:16])


def wait(folder: Path, timeout: float) -> bool:
    """Wait until no background compile holds a lock anywhere under ``folder`` (a cache folder);
    whether none is left within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while any(Path(folder).rglob(LOCK_PATTERN)):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def python_module(module: str, *args: str, **popen) -> subprocess.Popen:
    """``python -m module args`` as nnx's helper processes start it: in the kernel cache folder,
    because `-m` puts the working folder first on sys.path, and a source checkout there (no
    nnx.kernels until installed) would shadow the installed nnx."""
    from . import cache

    folder, _ = cache.numba_cache_dir()
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=folder, **popen)


def _alive(pid: int) -> bool:
    if sys.platform == "win32":  # os.kill(pid, 0) would send CTRL_C_EVENT there: the lock's age decides
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or no way to tell: assume running
    return True


def _take_lock(path: Path) -> bool:
    """Create ``path`` exclusively; a stale lock (dead process, or too old) is replaced once."""
    for _ in range(2):
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            try:
                pid = int(path.read_text() or 0)
                age = time.time() - path.stat().st_mtime
            except (OSError, ValueError):
                return False
            if (pid and _alive(pid) and age < STALE_LOCK_S) or (not pid and age < 60):
                return False  # a compile of these kernels is already running
            path.unlink(missing_ok=True)
        except OSError:
            return False
    return False


def start(net: Network, n_samples: int, optimizer: Optimizer | None = None) -> int | None:
    """Start compiling what ``warm_up(net, n_samples, optimizer)`` compiles in a detached
    process; its pid, or None when one is already running for these kernels. Raises OSError
    when no process can be started (the lock is then removed)."""
    spec = (net, n_samples, optimizer)
    lock = _lock_path(spec)
    lock.parent.mkdir(parents=True, exist_ok=True)
    if not _take_lock(lock):
        return None
    env = dict(os.environ, **{ENV_VAR: "0", "NNX_BACKEND": "numba"})
    detach = ({"creationflags": subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP}
              if sys.platform == "win32" else {"start_new_session": True})
    try:
        with open(lock.parent / "background-compile.log", "ab") as log:
            child = python_module("nnx.background_compile", str(lock), stdin=subprocess.PIPE, stdout=log, stderr=log,
                                  env=env, **detach)
        lock.write_text(str(child.pid))
        child.stdin.write(pickle.dumps(spec))
        child.stdin.close()
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    return child.pid


def _main(lock: str) -> int:
    """The detached process: compile (or load) the kernels, then drop the lock."""
    try:
        net, n_samples, optimizer = pickle.loads(sys.stdin.buffer.read())
        from .backends import numba_backend

        seconds = numba_backend.create().warm_up(net, n_samples, optimizer)
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} compiled {net} for {n_samples} samples "
              f"in {seconds:.1f} s", flush=True)
        return 0
    finally:
        Path(lock).unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
