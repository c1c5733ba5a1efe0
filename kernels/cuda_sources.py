"""The CUDA C sources nnx compiles through ``cupy.RawModule`` and their named instances.

Pure data plus file reading, so tests and tools can list, compile and check the
kernels without CuPy. Each kernel is a template over the element type ``T``
(and, for the small-network kernels, a width ``W``: see ``TINY_WIDTHS``); its
parameter list here is what the Python side passes (and a compile test asserts
it equals the signature in the source), so a launch can never pass an argument
of the wrong width.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

HEADER = "nnx_common.cuh"
ELEMENT_TYPES = {"float32": "float", "float64": "double"}
_INCLUDE = re.compile(r'^#include "([^"]+)"$', re.MULTILINE)


@dataclass(frozen=True)
class Kernel:
    """A template kernel ``name<T>`` (``name<T, W>`` when ``widths`` lists the W instantiated)
    and its C parameter types (``T`` is the element type)."""

    name: str
    params: tuple[str, ...]
    widths: tuple[int, ...] = ()

    def instance(self, ctype: str, width: int | None = None) -> str:
        """The name expression passed to ``RawModule(name_expressions=...)``."""
        if bool(self.widths) != (width is not None) or (width is not None and width not in self.widths):
            raise ValueError(f"{self.name} is instantiated for widths {self.widths or 'none'}, not {width!r}")
        return f"{self.name}<{ctype}>" if width is None else f"{self.name}<{ctype}, {width}>"

    def instances(self, ctype: str) -> tuple[str, ...]:
        """Every instance for the element type ``ctype``."""
        return tuple(self.instance(ctype, w) for w in self.widths) if self.widths else (self.instance(ctype),)

    def signature(self, ctype: str) -> str:
        """The C function-pointer type of the instance, e.g. ``void (*)(float*, int)``."""
        args = ", ".join(re.sub(r"\bT\b", ctype, p) for p in self.params)
        return f"void (*)({args})"


@dataclass(frozen=True)
class CudaSource:
    """One ``.cu`` file in ``nnx.kernels`` and the kernels it defines."""

    filename: str
    kernels: tuple[Kernel, ...]

    def name_expressions(self) -> tuple[str, ...]:
        return tuple(name for k in self.kernels for ctype in ELEMENT_TYPES.values() for name in k.instances(ctype))

    def raw_text(self) -> str:
        return read_text(self.filename)

    def code(self) -> str:
        """The source with local ``#include "..."`` lines inlined, ready for NVRTC."""
        return _INCLUDE.sub(lambda m: read_text(m.group(1)), self.raw_text())


def read_text(filename: str) -> str:
    return resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")


_PTR, _CPTR = "T*", "const T*"
DENSE_OPS = CudaSource("dense_ops.cu", (
    Kernel("nnx_bias_activation", (_PTR, _CPTR, "long long", "int", "int")),
    Kernel("nnx_activation_backward", (_PTR, _CPTR, "long long", "int")),
    Kernel("nnx_head_rows", (_CPTR, "int", "long long", _CPTR, _CPTR, _PTR, _PTR, "long long", "int", "int",
                             "T", "int")),
    Kernel("nnx_dense_update", (_PTR, _CPTR, "long long", _PTR, _CPTR, "long long", "int", "long long", "T", "T")),
))
# Widths W the small-network kernels are instantiated for: registers grow with W,
# so the 2-input, 2-class networks of the tutorials run the lean W=2 instances.
TINY_WIDTHS = (2, 4, 8)
TINY_MLP = CudaSource("tiny_mlp.cu", (
    Kernel("nnx_tiny_logits", (_CPTR, _CPTR, _CPTR, _CPTR, _PTR) + ("int",) * 6, TINY_WIDTHS),
    Kernel("nnx_tiny_grads", (_CPTR, _CPTR, _CPTR, _CPTR, _CPTR, _PTR) + ("int",) * 6, TINY_WIDTHS),
    Kernel("nnx_tiny_train", (_CPTR, _CPTR) + (_PTR,) * 4 + ("int",) * 9 + ("T", "T", "T", "int"), TINY_WIDTHS),
))
SOURCES = (DENSE_OPS, TINY_MLP)

# Constants the Python side relies on, as #defined in the header.
MODE_DELTA, MODE_OUTPUT, MODE_LOSS = 0, 1, 2
TINY_MAX_WIDTH = 8


def tiny_width(n_inputs: int, n_outputs: int) -> int:
    """The narrowest instantiated width that holds both ends of a small network."""
    widest = max(n_inputs, n_outputs)
    for width in TINY_WIDTHS:
        if widest <= width:
            return width
    raise ValueError(f"{widest} inputs or outputs exceed the fused kernels' maximum of {TINY_MAX_WIDTH}")


def one_block_threads(width: int) -> int:
    """Most threads the single-block kernel of this width takes (NNX_ONE_BLOCK_THREADS, its
    launch bounds: the registers of the W=8 instances allow 256, narrower ones 512)."""
    return 512 if width <= 4 else 256


def header_defines() -> dict[str, int]:
    """``#define NAME <int>`` lines of the shared header, for consistency checks."""
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"^#define (NNX_\w+) (-?\d+)$", read_text(HEADER), re.MULTILINE)}


def kernel(name: str) -> tuple[CudaSource, Kernel]:
    """The source and spec of the kernel called ``name``."""
    for source in SOURCES:
        for k in source.kernels:
            if k.name == name:
                return source, k
    raise KeyError(f"no CUDA kernel named {name!r} in nnx.kernels")
