"""Shared fixtures: every parity test runs once per backend through ``backend``."""
from __future__ import annotations

import pytest

import nnx

ALL_BACKENDS = ("numpy", "numba", "cupy")


def _backend_param(name: str):
    marks = [pytest.mark.gpu] if name == "cupy" else []
    return pytest.param(name, id=name, marks=marks)


@pytest.fixture(params=[_backend_param(name) for name in ALL_BACKENDS])
def backend_name(request) -> str:
    """A backend name, skipped with the registry's own reason where unavailable."""
    reason = nnx.available_backends()[request.param]
    if reason is not None:
        pytest.skip(f"backend {request.param!r} unavailable here: {reason}")
    return request.param


@pytest.fixture
def backend(backend_name):
    """The backend object, active for the test's duration."""
    with nnx.use_backend(backend_name) as active:
        yield active
