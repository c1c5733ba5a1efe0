"""Backend registry and selection.

Backends are named here and imported only when first asked for, so
``NNX_BACKEND=numpy python -c "import nnx"`` never imports numba or cupy.
Each backend module provides ``check()`` (raises when it cannot run here) and
``create()`` (returns the backend object).

Precedence: ``use_backend`` scope > ``set_backend`` > ``NNX_BACKEND`` > auto.
"""
from __future__ import annotations

import contextlib
import contextvars
import difflib
import functools
import importlib
import os
from collections.abc import Iterator

from ..errors import BackendUnavailableError
from .base import Backend

ENV_VAR = "NNX_BACKEND"
BACKEND_NAMES = ("numpy", "numba", "cupy")
AUTO = "auto"
# auto tries the fastest hardware first; numpy always works.
AUTO_ORDER = ("cupy", "numba", "numpy")

_MODULES = {
    "numpy": "nnx.backends.numpy_backend",
    "numba": "nnx.backends.numba_backend",
    "cupy": "nnx.backends.cupy_backend",
}
_INSTALL_HINTS = {
    "numba": "pip install numba",
    "cupy": "pip install 'nnx[cuda12]' (CUDA 12) or 'nnx[cuda13]' (CUDA 13)",
}

_scoped: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("nnx_backend_scope", default=None)
_explicit: Backend | None = None


def _check_name(name: str, *, allow_auto: bool = True, source: str = "backend") -> str:
    valid = ((AUTO,) if allow_auto else ()) + BACKEND_NAMES
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a string, one of {valid}; got {type(name).__name__}")
    key = name.strip().lower()
    if key in valid:
        return key
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown {source} {name!r}. Expected one of {', '.join(map(repr, valid))}.{hint}")


def _reason_from(name: str, exc: BaseException) -> str:
    if isinstance(exc, ImportError) and exc.name is not None and exc.name.split(".")[0] == name:
        return f"{name} is not installed: {_INSTALL_HINTS.get(name, 'pip install ' + name)}"
    if isinstance(exc, BackendUnavailableError):
        return str(exc)
    return f"{name} failed to load ({type(exc).__name__}: {exc})"


@functools.lru_cache(maxsize=None)
def _status(name: str):
    """(module, reason, exception) for a backend; cached, never raises."""
    try:
        module = importlib.import_module(_MODULES[name])
        module.check()
    except Exception as exc:  # noqa: BLE001 - any failure means "unavailable", with the cause kept
        return None, _reason_from(name, exc), exc
    return module, None, None


@functools.lru_cache(maxsize=None)
def _instance(name: str) -> Backend:
    module, reason, exc = _status(name)
    if module is None:
        raise BackendUnavailableError(f"Backend {name!r} is unavailable: {reason}") from exc
    return module.create()


def available_backends() -> dict[str, str | None]:
    """Each known backend mapped to None when usable here, else a one-line reason."""
    return {name: _status(name)[1] for name in BACKEND_NAMES}


def _auto() -> tuple[Backend, str]:
    skipped = []
    for name in AUTO_ORDER:
        reason = _status(name)[1]
        if reason is None:
            why = "auto: " + ("; ".join(skipped) + "; " if skipped else "") + f"picked {name}"
            return _instance(name), why
        skipped.append(f"{name} unavailable ({reason})")
    raise AssertionError("the numpy backend is always available")


def _resolve(name: str, source: str, origin: str) -> tuple[Backend, str]:
    """``source`` names the setting in errors; ``origin`` says where the choice came from."""
    key = _check_name(name, source=source)
    if key == AUTO:
        return _auto()
    return _instance(key), f"{key} (from {origin})"


def _current() -> tuple[Backend, str]:
    scoped = _scoped.get()
    if scoped is not None:
        return scoped, f"{scoped.name} (from use_backend)"
    if _explicit is not None:
        return _explicit, f"{_explicit.name} (from set_backend)"
    env = os.environ.get(ENV_VAR, "").strip() or AUTO
    return _resolve(env, f"{ENV_VAR} value", f"{ENV_VAR}={env}")


def get_backend() -> Backend:
    """The active backend object (``.name`` says which)."""
    return _current()[0]


def explain_backend() -> str:
    """Which backend is active and why, e.g. 'auto: cupy unavailable (...); picked numba'."""
    return _current()[1]


def set_backend(name: str | None) -> Backend | None:
    """Make ``name`` the active backend (``None`` returns to ``NNX_BACKEND`` / auto)."""
    global _explicit
    if name is None:
        _explicit = None
        return None
    backend = _resolve(name, "backend", "set_backend")[0]
    _explicit = backend
    return backend


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Backend]:
    """Run a block on ``name``; the previous choice returns on exit, even on exceptions."""
    backend = _resolve(name, "backend", "use_backend")[0]
    token = _scoped.set(backend)
    try:
        yield backend
    finally:
        _scoped.reset(token)


__all__ = [
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "explain_backend",
    "get_backend",
    "set_backend",
    "use_backend",
]
