"""The exceptions nnx raises on purpose, each with a message that says what to do."""
from __future__ import annotations


def format_bytes(n: float) -> str:
    """1536 -> '1.50 KiB': memory figures in messages, in the units people read."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here (the cause is chained)."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the model keeps its last finite parameters."""

    def __init__(self, message: str, pass_number: int):
        super().__init__(message)
        self.pass_number = pass_number


class OutOfMemoryError(MemoryError):
    """A fit or prediction would need more memory than the device has; nothing was changed.

    Raised before any work starts, with the need, the amount available and what to change.
    """

    device = "memory"

    def __init__(self, what: str, needed: int, available: int, advice: str):
        self.needed, self.available = needed, available
        super().__init__(
            f"not enough {self.device} for {what}: needs {format_bytes(needed)}, {format_bytes(available)} "
            f"available. {advice} The model was left as it was.")


class GpuMemoryError(OutOfMemoryError):
    """The GPU lacks the memory a fit or prediction needs; nothing was changed."""

    device = "GPU memory"


class PerformanceWarning(UserWarning):
    """Work runs on a slower path than usual (same results); said once per cause."""
