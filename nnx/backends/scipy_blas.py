"""SciPy's BLAS module, which Numba's matrix products call into, found and loaded cheaply.

Numba's CPU target imports ``scipy.linalg.cython_blas`` when it is first set up (its BLAS
check): in every cold compile, and at the first matrix product of a start from the cache.
Imported the ordinary way, the module's package runs first, all of SciPy's linear algebra
(0.17 s); the module alone, all Numba calls into, loads in milliseconds. So the Numba
backend loads it alone (``load_alone``), and a later ``import scipy.linalg`` gets it as its
attribute, as an ordinary import would have left it (``_AttachToPackage``).
"""
from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import sys
from pathlib import Path

MODULE = "scipy.linalg.cython_blas"
PACKAGE = "scipy.linalg"


@functools.lru_cache(maxsize=1)
def module_file() -> Path | None:
    """The module's file, or None where SciPy or the module is not installed; found without
    importing anything, once a process (the backend's check and ``load_alone`` both ask)."""
    spec = importlib.util.find_spec("scipy")
    folders = (spec.submodule_search_locations or []) if spec is not None else []
    found = [path for folder in folders for path in Path(folder, "linalg").glob("cython_blas.*")
             if path.suffix in (".so", ".pyd")]
    return found[0] if found else None


class _AttachToPackage(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``scipy.linalg`` is imported after the module was loaded alone,
    sets the module as the package's attribute once the package has run, then leaves."""

    def find_spec(self, name, path, target=None):
        if name != PACKAGE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_package = spec.loader.exec_module

        def run_and_attach(module) -> None:
            run_package(module)
            if MODULE in sys.modules:
                module.cython_blas = sys.modules[MODULE]
        spec.loader.exec_module = run_and_attach
        return spec


def load_alone() -> None:
    """Load the module without its package, unless either is loaded already; anything unexpected
    leaves the ordinary import to Numba."""
    if MODULE in sys.modules or PACKAGE in sys.modules:
        return
    try:
        path = module_file()
        if path is None:
            return
        spec = importlib.util.spec_from_file_location(MODULE, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[MODULE] = module
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - a start-up saving only
        sys.modules.pop(MODULE, None)
        return
    sys.meta_path.insert(0, _AttachToPackage())
