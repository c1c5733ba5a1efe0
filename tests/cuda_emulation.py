"""A CPU stand-in for the GPU: the real kernel sources compiled as C++ for the host.

The ``.cu`` files are compiled with g++ through a shim that defines the CUDA
qualifiers, thread indices, shared memory, ``__syncthreads`` and
``__shfl_down_sync``. A grid-stride launch runs every (block, thread) of a
small grid one after another: exact for kernels whose threads never talk to
each other. A single-block launch (``nnx_tiny_train``) runs its block as it
runs on a GPU: one ``std::thread`` per CUDA thread, a barrier for each
``__syncthreads()``, warp-wide barriers around each shuffle, and the dynamic
shared memory it asked for (filled with NaN, with a guard after it).
``EmulatedDevice`` then runs ``cuda_program``'s passes with NumPy, or a
reference cuBLAS compiled for the CPU, standing in for cuBLAS, so the
orchestration and the kernel arithmetic are checked against the NumPy backend
without a GPU.

``build_race_checker`` compiles the same source with ThreadSanitizer into a
program that runs ``nnx_tiny_train`` from a file of inputs (TSAN must own the
process, so it cannot be loaded into Python). The host compiler keeps
multiply-adds separate (``-ffp-contract=off``) while NVRTC fuses them, so the
emulation and a GPU agree within the parity tolerances, not bit for bit.
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

SMEM_BYTES = 64 << 10
SHIM = r"""
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <thread>
#include <vector>
struct nnx_uint3 { unsigned x, y, z; };
static thread_local nnx_uint3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0};
static nnx_uint3 blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
using std::min;
using std::max;

// The shared memory of the one block that runs at a time, a guard after what the launch asked for.
#define NNX_EMU_SMEM_BYTES %(smem)d
#define NNX_EMU_GUARD 256
alignas(16) unsigned char nnx_smem[NNX_EMU_SMEM_BYTES + NNX_EMU_GUARD];
// Two barriers used in turn: ThreadSanitizer orders a barrier's waiters after every release made
// on it, so a fast thread already at the next __syncthreads() must not release on the same object
// (it would hide races from the threads still leaving the previous one). No thread can get two
// barriers ahead of another, so two objects are enough. Shuffles do the same per warp.
static pthread_barrier_t nnx_emu_block_barrier[2];
static pthread_barrier_t nnx_emu_warp_barrier[32][2];
static thread_local unsigned nnx_emu_block_turn = 0, nnx_emu_warp_turn = 0;
static double nnx_emu_lanes[32][32];
static int nnx_emu_skip_line = -1;  // one __syncthreads() left out on purpose: the race checker's self-test

static inline void nnx_emu_syncthreads(int line) {
    if (line != nnx_emu_skip_line) pthread_barrier_wait(&nnx_emu_block_barrier[nnx_emu_block_turn++ %% 2]);
}
#define __syncthreads() nnx_emu_syncthreads(__LINE__)

static inline void nnx_emu_syncwarp() {
    pthread_barrier_wait(&nnx_emu_warp_barrier[threadIdx.x / 32][nnx_emu_warp_turn++ %% 2]);
}

// Every lane of the warp takes part (full mask), as the kernels guarantee.
template <typename T>
static inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const unsigned lane = threadIdx.x %% 32, warp = threadIdx.x / 32;
    nnx_emu_lanes[warp][lane] = (double)v;
    nnx_emu_syncwarp();
    const double got = lane %% width + delta < (unsigned)width ? nnx_emu_lanes[warp][lane + delta] : (double)v;
    nnx_emu_syncwarp();
    return (T)got;
}

// Runs body(t) on `block` threads as one CUDA block; 0 when the shared-memory guard held,
// 1 when the kernel wrote past the bytes it asked for, -1 for an impossible launch.
template <typename Body>
static int nnx_emu_block(unsigned block, unsigned shared_bytes, int skip_line, Body body) {
    if (block == 0 || block > 1024 || (block > 32 && block %% 32) || shared_bytes > NNX_EMU_SMEM_BYTES) return -1;
    memset(nnx_smem, 0xFF, shared_bytes);  // all-ones bytes read as NaN: unwritten shared memory shows
    memset(nnx_smem + shared_bytes, 0xA5, NNX_EMU_GUARD);
    gridDim.x = 1;
    blockDim.x = block;
    nnx_emu_skip_line = skip_line;
    const unsigned warps = (block + 31) / 32;
    for (int turn = 0; turn < 2; ++turn) {
        pthread_barrier_init(&nnx_emu_block_barrier[turn], nullptr, block);
        for (unsigned w = 0; w < warps; ++w) {
            pthread_barrier_init(&nnx_emu_warp_barrier[w][turn], nullptr, min(32u, block - 32 * w));
        }
    }
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t) threads.emplace_back([t, &body] {
        threadIdx.x = t;
        blockIdx.x = 0;
        nnx_emu_block_turn = nnx_emu_warp_turn = 0;
        body();
    });
    for (auto& thread : threads) thread.join();
    for (int turn = 0; turn < 2; ++turn) {
        pthread_barrier_destroy(&nnx_emu_block_barrier[turn]);
        for (unsigned w = 0; w < warps; ++w) pthread_barrier_destroy(&nnx_emu_warp_barrier[w][turn]);
    }
    for (unsigned i = 0; i < NNX_EMU_GUARD; ++i) {
        if (nnx_smem[shared_bytes + i] != 0xA5) return 1;
    }
    return 0;
}
""" % {"smem": SMEM_BYTES}

# Runs nnx_tiny_train<double, W> from a file: 16 int64 (is_double, width, block, shared bytes, n, d, h, c, slices_h,
# slices_n, lanes, act, head, passes, skip line, 0), 3 float64 (scale, lr, l2), then X, targets, W1, b1,
# W2, b2 in the element type; writes W1 b1 W2 b2 to the output file. Exit status: the launch's.
RACE_MAIN = r"""
template <typename T, int W>
static int nnx_emu_run_file(const long long* hdr, const double* sc, FILE* in, FILE* out) {
    const long long n = hdr[4], d = hdr[5], h = hdr[6], c = hdr[7];
    std::vector<T> X(n * d), Y(n * c), W1(d * h), b1(h), W2(h * c), b2(c);
    for (auto* v : {&X, &Y, &W1, &b1, &W2, &b2}) {
        if (fread(v->data(), sizeof(T), v->size(), in) != v->size()) return 3;
    }
    const int status = nnx_emu_block((unsigned)hdr[2], (unsigned)hdr[3], (int)hdr[14], [&] {
        nnx_tiny_train<T, W>(X.data(), Y.data(), W1.data(), b1.data(), W2.data(), b2.data(), (int)n, (int)d, (int)h,
                             (int)c, (int)hdr[8], (int)hdr[9], (int)hdr[10], (int)hdr[11], (int)hdr[12], (T)sc[0],
                             (T)sc[1], (T)sc[2], (int)hdr[13]);
    });
    for (auto* v : {&W1, &b1, &W2, &b2}) fwrite(v->data(), sizeof(T), v->size(), out);
    return status;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    FILE* in = fopen(argv[1], "rb");
    FILE* out = fopen(argv[2], "wb");
    long long hdr[16];
    double sc[3];
    if (!in || !out || fread(hdr, 8, 16, in) != 16 || fread(sc, 8, 3, in) != 3) return 2;
    int status = 2;
    const bool is_double = hdr[0] != 0;
    switch (hdr[1]) {
%(cases)s
    }
    fclose(in);
    fclose(out);
    return status;
}
"""

_CTYPES = {"int": ctypes.c_int, "long long": ctypes.c_longlong}
_ELEMENT = {"float": ctypes.c_float, "double": ctypes.c_double}
GUARD = 8  # elements of NaN before and after every buffer the programs allocate


def _symbol(kernel: src.Kernel, ctype: str, width: int | None) -> str:
    return f"{kernel.name}_{ctype}" + ("" if width is None else f"_{width}")


def _wrappers(kernel: src.Kernel, ctype: str, width: int | None) -> str:
    """A grid-stride wrapper (every thread in turn) and a one-block wrapper (real threads)."""
    params = [p.replace("T", ctype) if p != "T" else ctype for p in kernel.params]
    decl = ", ".join(f"{p} a{i}" for i, p in enumerate(params))
    call = ", ".join(f"a{i}" for i in range(len(params)))
    inst = kernel.instance(ctype, width)
    sym = _symbol(kernel, ctype, width)
    return (f'extern "C" void emu_{sym}(unsigned grid, unsigned block, {decl}) {{\n'
            f"  gridDim.x = grid; blockDim.x = block;\n"
            f"  for (unsigned b = 0; b < grid; ++b) for (unsigned t = 0; t < block; ++t) {{\n"
            f"    blockIdx.x = b; threadIdx.x = t; {inst}({call});\n  }}\n}}\n"
            f'extern "C" int emu_block_{sym}(unsigned block, unsigned shared, {decl}) {{\n'
            f"  return nnx_emu_block(block, shared, -1, [&] {{ {inst}({call}); }});\n}}\n")


def source(sources: tuple[src.CudaSource, ...] = src.SOURCES, with_main: bool = False) -> str:
    """The C++ translation unit: the shim, kernel sources and either a wrapper per kernel instance
    (the shared library) or the race checker's main (float64 only: it checks ordering, not rounding)."""
    code = SHIM + "".join(s.code() for s in sources)
    if with_main:
        cases = "".join(f"        case {w}: status = is_double ? nnx_emu_run_file<double, {w}>(hdr, sc, in, out)"
                        f" : 2; break;\n" for w in src.TINY_WIDTHS)
        return code + RACE_MAIN % {"cases": cases}
    return code + "".join(_wrappers(k, c, w) for s in sources for k in s.kernels
                          for c in src.ELEMENT_TYPES.values() for w in (k.widths or (None,)))


def _compiler() -> str:
    compiler = shutil.which("g++")
    if compiler is None:
        raise FileNotFoundError("g++")
    return compiler


_BUILT: dict[str, ctypes.CDLL] = {}


def build(tmp: Path) -> ctypes.CDLL:
    """Compile every kernel source for the host into one shared library (once per process)."""
    code = source()
    if code not in _BUILT:
        (tmp / "kernels.cpp").write_text(code)
        lib = tmp / "libnnx_kernels_emu.so"
        subprocess.run([_compiler(), "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", "-ffp-contract=off",
                        "-o", str(lib), str(tmp / "kernels.cpp")], check=True, capture_output=True, text=True)
        _BUILT[code] = ctypes.CDLL(str(lib))
    return _BUILT[code]


def build_race_checker(tmp: Path) -> Path:
    """The kernels with ThreadSanitizer, as a program (raises CalledProcessError where g++ lacks TSAN)."""
    (tmp / "race.cpp").write_text(source((src.TINY_MLP,), with_main=True))
    exe = tmp / "nnx_race_check"
    subprocess.run([_compiler(), "-std=c++17", "-O1", "-g", "-fsanitize=thread", "-pthread", "-ffp-contract=off",
                    "-o", str(exe), str(tmp / "race.cpp")], check=True, capture_output=True, text=True)
    return exe


REFERENCE_CUBLAS = r"""
// The cuBLAS entry points nnx calls, written from the BLAS definition of gemm
// (column-major, C = alpha op(A) op(B) + beta C, C not read when beta == 0).
#include <stdlib.h>
struct handle { void* stream; void* workspace; size_t workspace_bytes; };
extern "C" {
int cublasCreate_v2(handle** h) { *h = (handle*)calloc(1, sizeof(handle)); return 0; }
int cublasDestroy_v2(handle* h) { free(h); return 0; }
int cublasGetVersion_v2(handle*, int* v) { *v = 130000; return 0; }
int cublasSetStream_v2(handle* h, void* s) { h->stream = s; h->workspace = 0; h->workspace_bytes = 0; return 0; }
int cublasSetWorkspace_v2(handle* h, void* w, size_t n) { h->workspace = w; h->workspace_bytes = n; return 0; }
}
template <typename T>
static int gemm(int ta, int tb, int m, int n, int k, const T* alpha, const T* A, int lda, const T* B, int ldb,
                const T* beta, T* C, int ldc) {
    auto at_least = [](int ld, int rows) { return ld >= (rows > 1 ? rows : 1); };
    if (m < 0 || n < 0 || k < 0 || !at_least(lda, ta ? k : m) || !at_least(ldb, tb ? n : k) || !at_least(ldc, m))
        return 7;  // CUBLAS_STATUS_INVALID_VALUE
    for (int j = 0; j < n; ++j) {
        for (int i = 0; i < m; ++i) {
            T s = 0;
            for (int l = 0; l < k; ++l) {
                const T a = ta ? A[l + (long)i * lda] : A[i + (long)l * lda];
                const T b = tb ? B[j + (long)l * ldb] : B[l + (long)j * ldb];
                s += a * b;
            }
            T& c = C[i + (long)j * ldc];
            c = *beta == T(0) ? *alpha * s : *alpha * s + *beta * c;
        }
    }
    return 0;
}
extern "C" int cublasSgemm_v2(handle*, int ta, int tb, int m, int n, int k, const float* alpha, const float* A,
                              int lda, const float* B, int ldb, const float* beta, float* C, int ldc) {
    return gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
extern "C" int cublasDgemm_v2(handle*, int ta, int tb, int m, int n, int k, const double* alpha, const double* A,
                              int lda, const double* B, int ldb, const double* beta, double* C, int ldc) {
    return gemm(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
"""


def build_reference_cublas(tmp: Path, soname: str = "libcublas_ref.so") -> ctypes.CDLL:
    """A CPU library with cuBLAS's C interface for the entry points nnx uses, loaded."""
    (tmp / "cublas_ref.cpp").write_text(REFERENCE_CUBLAS)
    lib = tmp / soname
    subprocess.run([_compiler(), "-std=c++17", "-O1", "-shared", "-fPIC", "-ffp-contract=off", f"-Wl,-soname,{soname}",
                    "-o", str(lib), str(tmp / "cublas_ref.cpp")], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(lib))


class EmulatedDevice:
    """The device interface of ``cuda_program`` on NumPy and the host-compiled kernels.

    ``blas`` (a ``cuda_blas.OwnedHandle`` on the reference cuBLAS) routes the
    products through nnx's cuBLAS argument translation; without it NumPy
    computes them.
    """

    xp = np

    def __init__(self, lib: ctypes.CDLL, blas=None):
        self.lib, self.blas = lib, blas
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
        if self.blas is not None:
            for x in (a, b, out):
                assert x.flags.c_contiguous, "cuBLAS reads operands as C-contiguous buffers"
            self.blas.gemm(out.dtype, transa, transb, (self.ptr(a), a.shape), (self.ptr(b), b.shape),
                           (self.ptr(out), out.shape), beta)
            return
        prod = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
        if beta == 0.0:
            out[...] = prod
        else:
            out *= beta
            out += prod

    def launch(self, name: str, dtype, n_items: int, args: tuple, *, width: int | None = None,
               one_block: bool = False, threads: int = cuda_plan.THREADS, shared_mem: int = 0) -> None:
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
        symbol = _symbol(spec, ctype, width)
        if one_block:
            status = getattr(self.lib, f"emu_block_{symbol}")(ctypes.c_uint(threads), ctypes.c_uint(shared_mem),
                                                             *converted)
            assert status == 0, f"{name}: launch refused or shared memory overrun (status {status})"
            return
        # A small grid, so that the grid-stride arithmetic is exercised across threads.
        getattr(self.lib, f"emu_{symbol}")(ctypes.c_uint(min(3, cuda_plan.grid_for(n_items))), ctypes.c_uint(5),
                                           *converted)


def write_race_input(path: Path, tiny: cuda_plan.TinyPlan, dtype: np.dtype, arrays: list[np.ndarray],
                     codes: tuple[int, int], scalars: tuple[float, float, float], passes: int,
                     skip_line: int = -1) -> None:
    """The race checker's input file for one ``nnx_tiny_train`` launch (layout in RACE_MAIN)."""
    header = [int(dtype == np.float64), tiny.width, tiny.threads, tiny.shared_bytes(dtype.itemsize), tiny.n,
              tiny.d, tiny.h, tiny.c, tiny.slices_h, tiny.slices_n, tiny.lanes, codes[0], codes[1], passes,
              skip_line, 0]
    with open(path, "wb") as f:
        f.write(np.array(header, dtype=np.int64).tobytes())
        f.write(np.array(scalars, dtype=np.float64).tobytes())
        for a in arrays:
            f.write(np.ascontiguousarray(a, dtype=dtype).tobytes())
