"""Where compiled kernels are cached: a per-user folder, never inside the installed package.

``NNX_CACHE_DIR`` when set, else the platform's user cache folder
(``$XDG_CACHE_HOME/nnx`` or ``~/.cache/nnx`` on Linux, ``~/Library/Caches/nnx``
on macOS, ``%LOCALAPPDATA%\\nnx\\Cache`` on Windows), in a subfolder per nnx
version and set of kernel sources (``kernel_fingerprint``). An explicit
``NUMBA_CACHE_DIR`` is respected. The package folder may be read-only (system
site-packages, a container image) and a cache written there would outlive
``pip uninstall``, so nnx never writes there; a cache folder that cannot be
written warns once and kernels run uncached. Without platformdirs (an install
with ``--no-deps``) the Linux folder is used everywhere, with one warning.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from .version import __version__

ENV_VAR = "NNX_CACHE_DIR"


def cache_root() -> Path:
    """The folder holding every nnx version's cache (what ``nnx cache clear`` empties)."""
    explicit = os.environ.get(ENV_VAR, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return _root_without_platformdirs()
    return Path(user_cache_dir("nnx", appauthor=False))


@functools.lru_cache(maxsize=None)
def _root_without_platformdirs() -> Path:
    """The XDG folder, said once, where platformdirs (a dependency of nnx) is missing, as after an
    install without dependencies: a fit should not fail for want of a folder name."""
    root = Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache").expanduser() / "nnx"
    warnings.warn(f"platformdirs, a dependency of nnx, is not installed, so nnx caches its kernels in {root}. "
                  f"Run `pip install platformdirs` for the platform's own cache folder, or set {ENV_VAR}.",
                  RuntimeWarning, stacklevel=3)
    return root


# The sources compiled kernels are made from besides their own files: the code tables they
# bake in (activations and heads, optimisers). Every module of nnx.kernels counts as well.
KERNEL_INPUTS = (("nnx", "network.py"), ("nnx.optim", "optimizers.py"))


@functools.lru_cache(maxsize=None)
def kernel_fingerprint() -> str:
    """A short hash of the kernel sources (every ``nnx.kernels`` module and ``KERNEL_INPUTS``).

    Numba checks a cached function against its own file only, so cached machine code would
    outlive a change in a helper or an argument layout in another file: between two installs
    of the same version (a git checkout, an editable install), that code would run stale, or
    crash. One folder per fingerprint keeps each set of sources with its own kernels. Empty
    where the sources cannot be read (a frozen app): the version alone then decides."""
    from importlib.resources import files

    digest = hashlib.sha256()
    try:
        kernels = sorted((p for p in files("nnx.kernels").iterdir() if p.name.endswith(".py")), key=lambda p: p.name)
        for path in (*kernels, *(files(package) / name for package, name in KERNEL_INPUTS)):
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    except (OSError, ModuleNotFoundError, TypeError):
        return ""
    return digest.hexdigest()[:12]


def numba_cache_dir() -> tuple[Path, str]:
    """(folder Numba caches nnx's kernels in, where that choice came from)."""
    explicit = os.environ.get("NUMBA_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser(), "NUMBA_CACHE_DIR"
    source = ENV_VAR if os.environ.get(ENV_VAR, "").strip() else "user cache folder"
    fingerprint = kernel_fingerprint()
    return cache_root() / __version__ / (f"numba-{fingerprint}" if fingerprint else "numba"), source


def _writable(folder: Path) -> str | None:
    """None when files can be created in ``folder`` (made if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@functools.lru_cache(maxsize=None)
def configure_numba() -> bool:
    """Point Numba's kernel cache at nnx's folder; returns whether kernels may be cached.

    Runs once, when the first kernel module is imported (before any ``@njit``
    with ``cache=True`` is created, which is when Numba picks the folder).
    """
    import numba

    folder, source = numba_cache_dir()
    problem = _writable(folder)
    if problem is not None:
        warnings.warn(f"nnx cannot write its kernel cache folder {folder} (from {source}: {problem}); "
                      f"kernels will be compiled in every process. Set {ENV_VAR} to a writable folder.",
                      RuntimeWarning, stacklevel=2)
        return False
    numba.config.CACHE_DIR = str(folder)
    return True


def folder_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def clear() -> tuple[Path, int]:
    """Remove nnx's cache folder (every version); returns (folder, bytes freed).

    An explicit ``NUMBA_CACHE_DIR`` may hold other projects' kernels, so it is
    left alone: a ``ValueError`` says so.
    """
    if os.environ.get("NUMBA_CACHE_DIR", "").strip():
        raise ValueError(f"NUMBA_CACHE_DIR is set ({os.environ['NUMBA_CACHE_DIR']}): that folder may hold other "
                         "projects' kernels, so nnx does not empty it. Remove it yourself, or unset "
                         "NUMBA_CACHE_DIR to use nnx's own cache folder.")
    root = cache_root()
    freed = folder_size(root)
    if root.exists():
        shutil.rmtree(root)
    return root, freed
