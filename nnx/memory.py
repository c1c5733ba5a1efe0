"""How much memory a fit or a prediction needs, and whether the device has it.

Checked before any work starts, so a fit that cannot complete is refused with
the figures (``nnx.OutOfMemoryError``, a ``MemoryError``) instead of failing
halfway through with the model half-trained. Each backend states its own need
(``Backend.fit_bytes`` / ``predict_bytes``): the buffers it allocates, the data
in its layout, and the parameter copies the training driver keeps.
"""
from __future__ import annotations

import os

from .backends import Backend, use_backend
from .errors import OutOfMemoryError
from .network import Network

ADVICE = ("Use dtype='float32', fewer hidden units or fewer samples (minibatches), or a machine or "
          "backend with more memory.")


def _backend(backend: str | Backend) -> Backend:
    if isinstance(backend, Backend):
        return backend
    with use_backend(backend) as found:
        return found


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def host_available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, capped by a cgroup
    limit (containers); None where neither can be read (then nothing is refused)."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            room = max(limit - usage, 0)
            available = room if available is None else min(available, room)
            break
    return available


def fit_bytes(backend: str | Backend, net: Network, n_samples: int) -> int:
    """Bytes a fit of ``net`` on ``n_samples`` samples needs on the backend's device."""
    return _backend(backend).fit_bytes(net, n_samples)


def predict_bytes(backend: str | Backend, net: Network, n_samples: int) -> int:
    """Bytes a prediction for ``n_samples`` samples needs on the backend's device."""
    return _backend(backend).predict_bytes(net, n_samples)


def available_bytes(backend: str | Backend) -> int | None:
    """Bytes free on the backend's device now (None: unknown, nothing is refused)."""
    return _backend(backend).available_bytes()


def _check(backend: Backend, need: int, what: str) -> None:
    available = backend.available_bytes()
    if available is not None and need > available:
        raise backend.out_of_memory_error(what, need, available, ADVICE)


def _describe(net: Network, n_samples: int, backend: Backend) -> str:
    return (f"a {'-'.join(map(str, net.layer_sizes))} {net.dtype} network on {n_samples} samples "
            f"(backend {backend.name!r})")


def check_fit(backend: str | Backend, net: Network, n_samples: int, what: str = "training") -> None:
    """Raise ``OutOfMemoryError`` (with the figures) when the fit cannot complete here."""
    found = _backend(backend)
    _check(found, found.fit_bytes(net, n_samples), f"{what} {_describe(net, n_samples, found)}")


def check_predict(backend: str | Backend, net: Network, n_samples: int, what: str = "prediction") -> None:
    """Raise ``OutOfMemoryError`` (with the figures) when the prediction cannot complete here."""
    found = _backend(backend)
    _check(found, found.predict_bytes(net, n_samples), f"{what} {_describe(net, n_samples, found)}")


__all__ = ["OutOfMemoryError", "available_bytes", "check_fit", "check_predict", "fit_bytes",
           "host_available_bytes", "predict_bytes"]
