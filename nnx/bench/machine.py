"""What a result was measured on: CPU, GPU, thread counts, commit.

Speeds mean nothing without the machine, so every saved run carries this, in
the keys pytest-benchmark writes (``machine_info``, ``commit_info``) plus the
thread counts nnx pinned.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def usable_cores() -> int:
    """CPUs this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def pin_threads(n: int) -> dict:
    """Limit BLAS and Numba to ``n`` threads and return the counts actually in force.

    BLAS pools are resized through threadpoolctl when it is installed (it comes
    with scikit-learn); without it they keep the size they started with, and the
    record says ``"blas_pinned": False`` so a reader knows.
    """
    info: dict = {"requested": n, "env": {k: os.environ[k] for k in THREAD_ENV_VARS if k in os.environ}}
    try:
        import threadpoolctl
    except ImportError:
        info["blas_pinned"] = False
        info["blas"] = None
    else:
        threadpoolctl.threadpool_limits(limits=n)  # stays in force for the process
        info["blas_pinned"] = True
        info["blas"] = sorted({p["internal_api"] + ":" + str(p["num_threads"])
                               for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"})
    if "numba" in sys.modules or _numba_importable():
        import numba

        from ..backends.numba_backend import configure_threading

        # before set_num_threads starts a pool: Numba's default OpenMP one would fight PyTorch's
        # (PyTorch eager ran 4-5x slower beside it) and is not the layer nnx's fits run under
        configure_threading()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        info["numba"] = numba.get_num_threads()
    return info


def _numba_importable() -> bool:
    from importlib.util import find_spec
    return find_spec("numba") is not None


def cpu_model() -> str:
    """The CPU's model name, as ``lscpu`` shows it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_model() -> str | None:
    """The first CUDA device's name when CuPy can see one, else None."""
    if "cupy" not in sys.modules:
        return None
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(0)
    except Exception:  # noqa: BLE001 - no device: the run simply has no GPU rows
        return None
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def machine_info(threads: dict | None = None) -> dict:
    """pytest-benchmark's ``machine_info`` keys, plus ``nnx`` (cores, threads, GPU)."""
    try:
        import cpuinfo  # py-cpuinfo, a pytest-benchmark dependency
        cpu = cpuinfo.get_cpu_info()
    except Exception:  # noqa: BLE001 - optional; fall back to /proc/cpuinfo
        cpu = {"brand_raw": cpu_model(), "count": os.cpu_count(), "arch": platform.machine()}
    return {
        "node": platform.node(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": platform.python_version(),
        "python_version": platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": platform.release(),
        "system": platform.system(),
        "cpu": cpu,
        "nnx": {"cpu_model": cpu_model(), "usable_cores": usable_cores(), "gpu": gpu_model(),
                "threads": threads or {}, "load_average": load_average()},
    }


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: above the core count, other work shared the CPUs."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_id() -> str:
    """pytest-benchmark's storage folder name, so ``pytest-benchmark compare 0001 0002`` finds our runs."""
    return "{}-{}-{}-{}".format(platform.system(), platform.python_implementation(),
                                ".".join(platform.python_version_tuple()[:2]), platform.architecture()[0])


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=10).stdout.strip()


def commit_info() -> dict:
    """pytest-benchmark's ``commit_info`` keys, best effort (outside a checkout: 'unversioned')."""
    info = {"id": "unversioned", "time": None, "author_time": None, "dirty": False, "project": "nnx",
            "branch": "(unknown)"}
    try:
        info["id"] = _git("rev-parse", "HEAD")
        info["time"] = _git("show", "-s", "--pretty=format:%cI")
        info["author_time"] = _git("show", "-s", "--pretty=format:%aI")
        info["branch"] = _git("rev-parse", "--abbrev-ref", "HEAD")
        info["dirty"] = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError) as exc:
        info["error"] = repr(exc)
    return info
