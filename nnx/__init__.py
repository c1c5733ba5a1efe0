"""nnx: the from-scratch neural-network math, on NumPy, Numba-fused CPU kernels or CuPy GPUs.

Pick the backend with ``NNX_BACKEND`` (numpy, numba, cupy, auto), ``set_backend``
or, for a block, ``with use_backend(name):``.
"""
from . import datasets, metrics, optim
from .backends import available_backends, explain_backend, get_backend, set_backend, use_backend
from .early_stopping import EarlyStopping
from .errors import (BackendUnavailableError, GpuMemoryError, NonFiniteLossError, OutOfMemoryError,
                     PerformanceWarning)
from .model import MLP
from .persistence import load
from .version import __version__



def __getattr__(name: str):
    # nnx.sweep (callable: nnx.sweep(...)) and nnx.sklearn (needs scikit-learn) load on first use,
    # keeping `import nnx` light.
    if name in ("sweep", "sklearn"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'nnx' has no attribute {name!r}")


__all__ = [
    "MLP",
    "BackendUnavailableError",
    "EarlyStopping",
    "GpuMemoryError",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "PerformanceWarning",
    "available_backends",
    "datasets",
    "explain_backend",
    "get_backend",
    "load",
    "metrics",
    "optim",
    "set_backend",
    "sweep",
    "use_backend",
]
