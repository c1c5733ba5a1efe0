"""Shared fixtures: every parity test runs once per backend through ``backend``."""
from __future__ import annotations

import os
import signal

import pytest

import nnx

ALL_BACKENDS = ("numpy", "numba", "cupy")
# `nnx train` in the tests' subprocesses compiles its kernels in the foreground, as before the
# background compile existed: no detached compiles outliving a test (test_background_compile and
# the fresh-install test run the background path on purpose).
os.environ.setdefault("NNX_BACKGROUND_COMPILE", "0")
# Backends that must run here: CI sets NNX_REQUIRE_BACKENDS=numpy,numba, so a broken
# Numba install fails the run instead of quietly skipping half the suite.
REQUIRED = tuple(name.strip() for name in os.environ.get("NNX_REQUIRE_BACKENDS", "").split(",") if name.strip())


def pytest_configure(config):
    # A suite a script starts in the background (`pytest &`) inherits Ctrl-C ignored,
    # which nnx then leaves alone; the interrupt tests press Ctrl-C in this process and in the
    # commands they start, so the suite runs with Python's own handler, as from a terminal
    # (the processes it starts get the default disposition from it).
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    unknown = set(REQUIRED) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"NNX_REQUIRE_BACKENDS names unknown backends {sorted(unknown)}; "
                                f"expected some of {ALL_BACKENDS}")
    missing = {name: reason for name, reason in nnx.available_backends().items()
               if name in REQUIRED and reason is not None}
    if missing:
        raise pytest.UsageError("NNX_REQUIRE_BACKENDS requires backends that cannot run here: "
                                + "; ".join(f"{name}: {reason}" for name, reason in missing.items()))


def _backend_param(name: str):
    marks = [pytest.mark.gpu] if name == "cupy" else []
    return pytest.param(name, id=name, marks=marks)


@pytest.fixture(params=[_backend_param(name) for name in ALL_BACKENDS])
def backend_name(request) -> str:
    """A backend name, skipped with the registry's own reason where unavailable."""
    reason = nnx.available_backends()[request.param]
    if reason is not None and request.param in REQUIRED:
        pytest.fail(f"backend {request.param!r} is required (NNX_REQUIRE_BACKENDS) but unavailable: {reason}")
    if reason is not None:
        pytest.skip(f"backend {request.param!r} unavailable here: {reason}")
    return request.param


@pytest.fixture
def backend(backend_name):
    """The backend object, active for the test's duration."""
    with nnx.use_backend(backend_name) as active:
        yield active


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    """The CUDA kernels built for the host by the emulation (``cuda_emulation``), for the tests
    that run them without a GPU (each of those modules skips where g++ is missing)."""
    import cuda_emulation

    return cuda_emulation.build(tmp_path_factory.mktemp("kernels"))
