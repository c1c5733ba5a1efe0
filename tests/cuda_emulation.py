"""A CPU stand-in for the GPU: the real kernel sources compiled as C++ for the host.

The ``.cu`` files are compiled with g++ through a shim that defines the CUDA
qualifiers and thread indices; each launch runs every (block, thread) of its
grid one after another. That is exact for grid-stride kernels whose threads
never talk to each other, and for the single-block ``nnx_tiny_train`` when it
is given one thread. ``EmulatedDevice`` then runs ``cuda_program``'s passes
with NumPy standing in for cuBLAS, so the orchestration and the kernel
arithmetic are checked against the NumPy backend without a GPU.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from nnx.backends import cuda_plan
from nnx.backends.cuda_program import kernel_args
from nnx.kernels import cuda_sources as src

SHIM = r"""
#include <math.h>
#include <algorithm>
struct nnx_uint3 { unsigned x, y, z; };
static nnx_uint3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
static inline void __syncthreads() {}
using std::min;
using std::max;
"""
_CTYPES = {"int": ctypes.c_int, "long long": ctypes.c_longlong}
_ELEMENT = {"float": ctypes.c_float, "double": ctypes.c_double}
GUARD = 8  # elements of NaN before and after every buffer the programs allocate


def _wrapper(kernel: src.Kernel, ctype: str) -> str:
    params = [p.replace("T", ctype) if p != "T" else ctype for p in kernel.params]
    decl = ", ".join(f"{p} a{i}" for i, p in enumerate(params))
    call = ", ".join(f"a{i}" for i in range(len(params)))
    return (f'extern "C" void emu_{kernel.name}_{ctype}(unsigned grid, unsigned block, {decl}) {{\n'
            f"  gridDim.x = grid; blockDim.x = block;\n"
            f"  for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {{\n"
            f"    blockIdx.x = b; threadIdx.x = t; {kernel.name}<{ctype}>({call});\n  }}\n}}\n")


def build(tmp: Path) -> ctypes.CDLL:
    """Compile every kernel source for the host into one shared library."""
    compiler = shutil.which("g++")
    if compiler is None:
        raise FileNotFoundError("g++")
    code = SHIM + "".join(s.code() for s in src.SOURCES)
    code += "".join(_wrapper(k, c) for s in src.SOURCES for k in s.kernels for c in src.ELEMENT_TYPES.values())
    (tmp / "kernels.cpp").write_text(code)
    lib = tmp / "libnnx_kernels_emu.so"
    subprocess.run([compiler, "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off", "-o", str(lib),
                    str(tmp / "kernels.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(lib))


class EmulatedDevice:
    """The device interface of ``cuda_program`` on NumPy and the host-compiled kernels."""

    xp = np

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        self.launches: list[str] = []
        self._buffers: list[np.ndarray] = []

    def empty(self, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape))
        raw = np.full(n + 2 * GUARD, np.nan, dtype=dtype)
        self._buffers.append(raw)
        return raw[GUARD:GUARD + n].reshape(shape)

    def guards_intact(self) -> bool:
        """No kernel wrote outside a buffer it was given."""
        return all(np.isnan(b[:GUARD]).all() and np.isnan(b[-GUARD:]).all() for b in self._buffers)

    def ptr(self, a) -> int:
        return a.ctypes.data

    def gemm(self, transa: str, transb: str, a, b, out, beta: float) -> None:
        self.launches.append("gemm")
        prod = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
        if beta == 0.0:
            out[...] = prod
        else:
            out *= beta
            out += prod

    def launch(self, name: str, dtype, n_items: int, args: tuple, *, one_block: bool = False) -> None:
        self.launches.append(name)
        ctype = src.ELEMENT_TYPES[np.dtype(dtype).name]
        spec = src.kernel(name)[1]
        converted = []
        for param, value in zip(spec.params, kernel_args(name, np.dtype(dtype), args)):
            if param.endswith("*"):
                assert value.flags.c_contiguous, f"{name}: a non-contiguous array would be misread on the GPU"
                converted.append(ctypes.c_void_p(value.ctypes.data))
            elif param == "T":
                converted.append(_ELEMENT[ctype](float(value)))
            else:
                converted.append(_CTYPES[param](int(value)))
        # One thread for the single-block kernel (its threads synchronise); otherwise a
        # small grid so that the grid-stride arithmetic is exercised across threads.
        grid, block = (1, 1) if one_block else (min(3, cuda_plan.grid_for(n_items)), 5)
        getattr(self.lib, f"emu_{name}_{ctype}")(ctypes.c_uint(grid), ctypes.c_uint(block), *converted)
