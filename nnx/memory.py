"""How much memory a fit or a prediction needs, and whether the device has it.

Checked before any work starts, so a fit that cannot complete is refused with
the figures (``nnx.OutOfMemoryError``, a ``MemoryError``) instead of failing
halfway through with the model half-trained. Each backend states its own need
(``Backend.fit_bytes`` / ``predict_bytes``): the buffers it allocates, the data
in its layout, and the parameter copies the training driver keeps.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path, PurePosixPath

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


# What host_available_bytes reads (module names, so the tests can point them at a fake tree).
MEMINFO = "/proc/meminfo"
SELF_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
# cgroup v1 writes "no limit" as a huge page-rounded number; v2 writes "max".
_UNLIMITED = 1 << 60
# (limit, usage, reclaimable page cache in memory.stat) per cgroup version
_CGROUP_FILES = {2: ("memory.max", "memory.current", ("inactive_file",)),
                 1: ("memory.limit_in_bytes", "memory.usage_in_bytes", ("total_inactive_file", "inactive_file"))}


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat_value(path: Path, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` found in a memory.stat file (0 when none is)."""
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except OSError:
        return 0
    fields = dict(parts for parts in (line.split() for line in lines) if len(parts) == 2)
    for key in keys:
        if fields.get(key, "").isdigit():
            return int(fields[key])
    return 0


def _meminfo_available() -> int | None:
    try:
        with open(MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _memory_cgroups() -> list[tuple[Path, int]]:
    """(folder, cgroup version) of the memory cgroup this process is in and of each parent
    (their limits apply too), from /proc/self/cgroup. The mount's own root is always among
    them: inside a container with its own cgroup namespace, that root is the container."""
    try:
        text = Path(SELF_CGROUP).read_text(encoding="ascii")
    except OSError:
        return []
    return list(_cgroup_folders(text, CGROUP_ROOT))


@functools.lru_cache(maxsize=8)
def _cgroup_folders(text: str, root: str) -> tuple[tuple[Path, int], ...]:
    """The folders of ``_memory_cgroups`` for one /proc/self/cgroup text, found once: every fit's
    memory check reads them, and walking the tree cost more than a small fit's passes."""
    found = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[1] == "":  # "0::/path": the cgroup v2 unified hierarchy
            base, version = Path(root), 2
        elif "memory" in parts[1].split(","):  # "4:memory:/path": cgroup v1
            base, version = Path(root) / "memory", 1
        else:
            continue
        path = PurePosixPath(parts[2].strip() or "/")
        for folder in (base / str(p).lstrip("/") for p in (path, *path.parents)):
            if folder.is_dir() and (folder, version) not in found:
                found.append((folder, version))
    return tuple(found)


def host_available_bytes() -> int | None:
    """Memory this process can still take: the kernel's MemAvailable, capped by the room
    left under every cgroup limit that applies to it (containers, systemd slices, batch
    schedulers), with reclaimable page cache counted as free there as the kernel counts it;
    None where nothing can be read (then nothing is refused)."""
    available = _meminfo_available()
    for folder, version in _memory_cgroups():
        limit_file, usage_file, reclaimable = _CGROUP_FILES[version]
        limit = _read_int(folder / limit_file)
        if limit is None or limit >= _UNLIMITED:
            continue
        usage = _read_int(folder / usage_file)
        if usage is None:
            continue
        in_use = max(usage - _stat_value(folder / "memory.stat", reclaimable), 0)
        room = max(limit - in_use, 0)
        available = room if available is None else min(available, room)
    return available


def fit_bytes(backend: str | Backend, net: Network, n_samples: int) -> int:
    """Bytes a fit of ``net`` on ``n_samples`` samples needs on the backend's device."""
    return _backend(backend).fit_bytes(net, n_samples)


def predict_bytes(backend: str | Backend, net: Network, n_samples: int) -> int:
    """Bytes a prediction for ``n_samples`` samples needs on the backend's device."""
    return _backend(backend).predict_bytes(net, n_samples)


def loss_bytes(backend: str | Backend, net: Network, n_samples: int) -> int:
    """Bytes ``MLP.loss`` on ``n_samples`` samples needs on the backend's device."""
    return _backend(backend).loss_bytes(net, n_samples)


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


def check_fit(backend: str | Backend, net: Network, n_samples: int, what: str = "training", *,
              batch_size: int | None = None, n_slots: int = 0) -> None:
    """Raise ``OutOfMemoryError`` (with the figures) when the fit cannot complete here."""
    found = _backend(backend)
    _check(found, found.fit_bytes(net, n_samples, batch_size, n_slots), f"{what} {_describe(net, n_samples, found)}")


def check_predict(backend: str | Backend, net: Network, n_samples: int, what: str = "prediction") -> None:
    """Raise ``OutOfMemoryError`` (with the figures) when the prediction cannot complete here."""
    found = _backend(backend)
    _check(found, found.predict_bytes(net, n_samples), f"{what} {_describe(net, n_samples, found)}")


def check_loss(backend: str | Backend, net: Network, n_samples: int, what: str = "loss evaluation") -> None:
    """Raise ``OutOfMemoryError`` (with the figures) when the loss evaluation cannot complete here."""
    found = _backend(backend)
    _check(found, found.loss_bytes(net, n_samples), f"{what} {_describe(net, n_samples, found)}")


__all__ = ["OutOfMemoryError", "available_bytes", "check_fit", "check_loss", "check_predict", "fit_bytes",
           "host_available_bytes", "loss_bytes", "predict_bytes"]
