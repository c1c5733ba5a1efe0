"""cuBLAS called directly, on a handle nnx owns, so matrix products can be captured in CUDA graphs.

CuPy's cuBLAS bindings (``cupy.cublas`` and every compute function of
``cupy_backends.cuda.libs.cublas``, CuPy 14) call ``setStream`` first, and that
raises ``NotImplementedError`` while the stream is capturing (CuPy issue 6290).
cuBLAS itself supports capture: products with host-side ``alpha``/``beta`` are
recorded with their values, and with a workspace set by ``cublasSetWorkspace``
nothing is allocated during capture. So nnx creates its own handle, binds its
stream and workspace once, outside any capture, and calls ``cublas<S|D>gemm_v2``
through ctypes on the libcublas CuPy has already loaded. Eager and captured
passes call the same function on the same handle, stream and workspace, so they
run the same kernels and give the same bits.

Nothing here needs a GPU to be checked: ``gemm_call`` is plain arithmetic, and
``CublasLibrary`` takes any library with cuBLAS's C interface (the tests load a
reference implementation compiled for the CPU).
"""
from __future__ import annotations

import ctypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OPERATIONS = {"N": 0, "T": 1}  # cublasOperation_t: CUBLAS_OP_N, CUBLAS_OP_T
WORKSPACE_BYTES = 32 << 20     # what the cuBLAS documentation recommends for Hopper GPUs
_NOLOAD = getattr(os, "RTLD_NOLOAD", 0)  # find an already loaded library, never load another copy
_STATUS = {0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
           7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
           13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR",
           15: "CUBLAS_STATUS_NOT_SUPPORTED", 16: "CUBLAS_STATUS_LICENSE_ERROR"}


class CublasError(RuntimeError):
    """A cuBLAS call returned an error status."""

    def __init__(self, call: str, status: int):
        self.status = status
        super().__init__(f"{call} failed with {_STATUS.get(status, 'status')} ({status})")


@dataclass(frozen=True)
class GemmCall:
    """Arguments of one column-major ``cublas<t>gemm``: C = op(first) @ op(second)."""

    op_first: int
    op_second: int
    m: int
    n: int
    k: int
    ld_first: int
    ld_second: int
    ldc: int


def gemm_call(transa: str, transb: str, a_shape: tuple[int, int], b_shape: tuple[int, int],
              out_shape: tuple[int, int]) -> GemmCall:
    """The cuBLAS arguments for the row-major product ``out = op(a) @ op(b)`` (C-contiguous arrays).

    A row-major r x c buffer is the column-major c x r matrix of its transpose,
    so cuBLAS computes out^T = op(b)^T op(a)^T: ``b`` goes first with ``transb``,
    then ``a`` with ``transa``; every leading dimension is a row length.
    """
    if transa not in OPERATIONS or transb not in OPERATIONS:
        raise ValueError(f"transa and transb must be 'N' or 'T', got {transa!r}, {transb!r}")
    rows, inner = a_shape if transa == "N" else a_shape[::-1]
    inner_b, cols = b_shape if transb == "N" else b_shape[::-1]
    if inner != inner_b or tuple(out_shape) != (rows, cols):
        raise ValueError(f"gemm shapes do not match: op(a) {rows}x{inner} @ op(b) {inner_b}x{cols} "
                         f"into {tuple(out_shape)}")
    return GemmCall(OPERATIONS[transb], OPERATIONS[transa], m=cols, n=rows, k=inner,
                    ld_first=max(1, b_shape[1]), ld_second=max(1, a_shape[1]), ldc=max(1, cols))


class CublasLibrary:
    """The few cuBLAS entry points nnx calls, with their C prototypes."""

    def __init__(self, lib: ctypes.CDLL):
        handle, vp, c_int = ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int
        self._create = self._bind(lib, "cublasCreate_v2", [ctypes.POINTER(handle)])
        self._destroy = self._bind(lib, "cublasDestroy_v2", [handle])
        self._set_stream = self._bind(lib, "cublasSetStream_v2", [handle, vp])
        self._version = self._bind(lib, "cublasGetVersion_v2", [handle, ctypes.POINTER(c_int)])
        # cuBLAS 11+; without it cuBLAS takes its workspace from its own pool.
        self._set_workspace = (self._bind(lib, "cublasSetWorkspace_v2", [handle, vp, ctypes.c_size_t])
                               if hasattr(lib, "cublasSetWorkspace_v2") else None)
        gemm_args = [handle, c_int, c_int, c_int, c_int, c_int, vp, vp, c_int, vp, c_int, vp, vp, c_int]
        self._gemm = {np.dtype(np.float32): (self._bind(lib, "cublasSgemm_v2", gemm_args), ctypes.c_float),
                      np.dtype(np.float64): (self._bind(lib, "cublasDgemm_v2", gemm_args), ctypes.c_double)}

    @staticmethod
    def _bind(lib: ctypes.CDLL, name: str, argtypes: list):
        fn = getattr(lib, name)  # AttributeError names the missing symbol
        fn.argtypes, fn.restype = argtypes, ctypes.c_int
        return fn

    @staticmethod
    def _check(call: str, status: int) -> None:
        if status != 0:
            raise CublasError(call, status)

    def create(self) -> int:
        handle = ctypes.c_void_p()
        self._check("cublasCreate", self._create(ctypes.byref(handle)))
        return int(handle.value)

    def destroy(self, handle: int) -> None:
        self._check("cublasDestroy", self._destroy(handle))

    def version(self, handle: int) -> int:
        value = ctypes.c_int()
        self._check("cublasGetVersion", self._version(handle, ctypes.byref(value)))
        return int(value.value)

    def set_stream(self, handle: int, stream_ptr: int) -> None:
        self._check("cublasSetStream", self._set_stream(handle, stream_ptr))

    def set_workspace(self, handle: int, ptr: int, nbytes: int) -> bool:
        """Give the handle its workspace; False where this cuBLAS has no cublasSetWorkspace."""
        if self._set_workspace is None:
            return False
        self._check("cublasSetWorkspace", self._set_workspace(handle, ptr, nbytes))
        return True

    def gemm(self, handle: int, dtype: np.dtype, call: GemmCall, alpha: float, first: int, second: int,
             beta: float, out: int) -> None:
        """One product on device pointers; ``alpha`` and ``beta`` are host values (recorded by a capture)."""
        try:
            fn, scalar = self._gemm[np.dtype(dtype)]
        except KeyError:
            raise TypeError(f"cuBLAS gemm takes float32 or float64, not {np.dtype(dtype)}") from None
        a, b = scalar(alpha), scalar(beta)
        self._check("cublasGemm", fn(handle, call.op_first, call.op_second, call.m, call.n, call.k,
                                     ctypes.byref(a), first, call.ld_first, second, call.ld_second,
                                     ctypes.byref(b), out, call.ldc))


class OwnedHandle:
    """A cuBLAS handle bound once to one stream and one workspace.

    Create it outside any stream capture (creating, binding a stream and
    setting a workspace are not capturable); then ``gemm`` may be called
    eagerly or while the stream captures.
    """

    def __init__(self, library: CublasLibrary, stream_ptr: int, workspace_ptr: int, workspace_bytes: int):
        self.library, self.stream_ptr = library, stream_ptr
        self.handle = library.create()
        try:
            library.set_stream(self.handle, stream_ptr)  # resets the workspace, so it goes first
            self.own_workspace = library.set_workspace(self.handle, workspace_ptr, workspace_bytes)
        except CublasError:
            library.destroy(self.handle)
            raise

    def gemm(self, dtype: np.dtype, transa: str, transb: str, a: tuple[int, tuple], b: tuple[int, tuple],
             out: tuple[int, tuple], beta: float) -> None:
        """``out = op(a) @ op(b) + beta * out`` for C-contiguous (pointer, shape) operands."""
        call = gemm_call(transa, transb, a[1], b[1], out[1])
        self.library.gemm(self.handle, dtype, call, 1.0, b[0], a[0], beta, out[0])

    def close(self) -> None:
        if self.handle:
            handle, self.handle = self.handle, 0
            self.library.destroy(handle)


def loaded_library(major_versions: tuple[int, ...] = (13, 12, 11)) -> ctypes.CDLL:
    """The libcublas already loaded into this process (by CuPy), never a second copy.

    Tries ``libcublas.so.<major>`` with RTLD_NOLOAD, then the path of a loaded
    libcublas of one of those majors in /proc/self/maps (never another major's,
    whose handle would not match the runtime); raises OSError saying what was
    looked for.
    """
    names = [f"libcublas.so.{v}" for v in major_versions]
    for name in names:
        try:
            return ctypes.CDLL(name, mode=_NOLOAD)
        except OSError:
            continue
    maps = Path("/proc/self/maps")
    if maps.exists():
        for path, major in re.findall(r"(/\S*/libcublas\.so\.(\d+)[.\d]*)$", maps.read_text(), re.MULTILINE):
            if int(major) in major_versions:
                return ctypes.CDLL(path, mode=_NOLOAD)
    raise OSError(f"no libcublas is loaded in this process (looked for {', '.join(names)} and in /proc/self/maps)")
