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
import re
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
#define __trap() abort()
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

# Runs nnx_tiny_train<double, W> from a file (write_race_input): 24 int64 (RACE_HEADER), then float64 l2,
# hyper[6] and the interval's lrs; int64 order, bounds and counters; then X, targets, W1, b1, W2, b2 and the
# optimiser's state (n_slots x W1 b1 W2 b2) in the element type. Writes the parameters, the state and the
# counters back. Exit status: the launch's.
RACE_HEADER = ("is_double", "width", "block", "shared", "n", "rows", "d", "h", "c", "slices_h", "slices_n", "lanes",
               "act", "head", "mean", "code", "n_slots", "batched", "passes", "skip_line", "n_lrs", "n_order")
RACE_MAIN = r"""
template <typename T>
static bool nnx_emu_read(std::vector<T>& v, size_t n, FILE* in) {
    v.resize(n);
    return fread(v.data(), sizeof(T), n, in) == n;
}

template <typename T, int W>
static int nnx_emu_run_file(const long long* hdr, FILE* in, FILE* out) {
    const long long n = hdr[4], rows = hdr[5], d = hdr[6], h = hdr[7], c = hdr[8], n_slots = hdr[16];
    std::vector<double> l2(1), hyper(6), lrs;
    std::vector<long long> order, bounds, counters;
    if (!nnx_emu_read(l2, 1, in) || !nnx_emu_read(hyper, 6, in) || !nnx_emu_read(lrs, hdr[20], in) ||
        !nnx_emu_read(order, std::max(1LL, hdr[21]), in) || !nnx_emu_read(bounds, hdr[20] + 1, in) ||
        !nnx_emu_read(counters, %(counters)d, in))
        return 3;
    std::vector<T> X, Y, W1, b1, W2, b2;
    const long long sizes[6] = {n * d, n * c, d * h, h, h * c, c};
    std::vector<T>* arrays[6] = {&X, &Y, &W1, &b1, &W2, &b2};
    for (int i = 0; i < 6; ++i) {
        if (!nnx_emu_read(*arrays[i], sizes[i], in)) return 3;
    }
    std::vector<std::vector<T>> state(4 * n_slots);
    std::vector<T*> table(2 * 2 * %(slots_max)d, nullptr);
    for (long long k = 0; k < n_slots; ++k) {
        for (int a = 0; a < 4; ++a) {
            if (!nnx_emu_read(state[4 * k + a], sizes[2 + a], in)) return 3;
            table[(a / 2) * 2 * %(slots_max)d + (a %% 2) * %(slots_max)d + k] = state[4 * k + a].data();
        }
    }
    const int status = nnx_emu_block((unsigned)hdr[2], (unsigned)hdr[3], (int)hdr[19], [&] {
        nnx_tiny_train<T, W>(X.data(), Y.data(), W1.data(), b1.data(), W2.data(), b2.data(), table.data(), (int)n,
                             (int)rows, (int)d, (int)h, (int)c, (int)hdr[9], (int)hdr[10], (int)hdr[11], (int)hdr[12],
                             (int)hdr[13], (int)hdr[14], (T)l2[0], (int)hdr[15], (int)n_slots, hyper.data(),
                             lrs.data(), order.data(), bounds.data(), (int)hdr[17], counters.data(), (int)hdr[18]);
    });
    for (auto* v : {&W1, &b1, &W2, &b2}) fwrite(v->data(), sizeof(T), v->size(), out);
    for (auto& v : state) fwrite(v.data(), sizeof(T), v.size(), out);
    fwrite(counters.data(), sizeof(long long), counters.size(), out);
    return status;
}

int main(int argc, char** argv) {
    if (argc != 3) return 2;
    FILE* in = fopen(argv[1], "rb");
    FILE* out = fopen(argv[2], "wb");
    long long hdr[24];
    if (!in || !out || fread(hdr, 8, 24, in) != 24) return 2;
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
    params = [re.sub(r"\bT\b", ctype, src.c_type(p)) for p in kernel.params]
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
        cases = "".join(f"        case {w}: status = is_double ? nnx_emu_run_file<double, {w}>(hdr, in, out)"
                        f" : 2; break;\n" for w in src.TINY_WIDTHS)
        return code + RACE_MAIN % {"cases": cases, "counters": len(src.COUNTERS), "slots_max": src.SLOTS_MAX}
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


_INT_FILL = -0x5A5A5A5A5A5A5A5A  # what an integer buffer holds before anything writes it (floats: NaN)


def _fill(dtype: np.dtype):
    return np.nan if np.dtype(dtype).kind == "f" else _INT_FILL


class EmulatedGraph:
    """A captured sequence of launches, replayed with the arguments they were captured with."""

    def __init__(self, stream: "EmulatedStream", ops: list):
        self.stream, self.ops = stream, ops

    def launch(self, stream) -> None:
        assert stream is self.stream, "a graph is launched on the stream the program runs on"
        stream.replays += 1
        for op in self.ops:
            op()


class EmulatedStream:
    """Stands in for a CUDA stream under capture: while it captures, the device records each
    kernel launch and product (pointers and scalar arguments as they are then) instead of
    running it, and ``end_capture`` returns the graph that replays them. Anything else the
    programs do during a capture (an upload, say) fails, as on a GPU."""

    def __init__(self):
        self.recording: list | None = None
        self.captures = 0
        self.replays = 0

    def begin_capture(self) -> None:
        assert self.recording is None, "captures do not nest"
        self.recording = []

    def end_capture(self) -> EmulatedGraph:
        ops, self.recording = self.recording, None
        self.captures += 1
        return EmulatedGraph(self, ops)


class EmulatedDevice:
    """The device interface of ``cuda_program`` on NumPy and the host-compiled kernels.

    ``blas`` (a ``cuda_blas.OwnedHandle`` on the reference cuBLAS) routes the
    products through nnx's cuBLAS argument translation; without it NumPy
    computes them. ``stream`` (an ``EmulatedStream``) records the work issued
    while it captures. ``launches`` lists every launch the host issued.
    """

    xp = np

    def __init__(self, lib: ctypes.CDLL, blas=None, stream: EmulatedStream | None = None):
        self.lib, self.blas, self.stream = lib, blas, stream
        self.launches: list[str] = []
        self._buffers: list[np.ndarray] = []

    def empty(self, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape))
        raw = np.full(n + 2 * GUARD, _fill(dtype), dtype=dtype)
        self._buffers.append(raw)
        return raw[GUARD:GUARD + n].reshape(shape)

    def guards_intact(self) -> bool:
        """No kernel wrote outside a buffer it was given."""
        def untouched(guard):
            return np.isnan(guard).all() if guard.dtype.kind == "f" else (guard == _INT_FILL).all()
        return all(untouched(b[:GUARD]) and untouched(b[-GUARD:]) for b in self._buffers)

    def ptr(self, a) -> int:
        return a.ctypes.data

    def free_bytes(self) -> int:
        return 1 << 40

    def upload(self, dst, values: np.ndarray) -> None:
        assert self.stream is None or self.stream.recording is None, "a host copy cannot be captured"
        assert dst.shape == values.shape and dst.dtype == values.dtype, (dst.shape, dst.dtype, values.shape)
        np.copyto(dst, values)

    def _issue(self, op) -> None:
        if self.stream is not None and self.stream.recording is not None:
            self.stream.recording.append(op)
        else:
            op()

    def gemm(self, transa: str, transb: str, a, b, out, beta: float) -> None:
        self.launches.append("gemm")
        self._issue(lambda: self._gemm(transa, transb, a, b, out, beta))

    def _gemm(self, transa: str, transb: str, a, b, out, beta: float) -> None:
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
        ctype = src.ELEMENT_TYPES[np.dtype(dtype).name]
        spec = src.kernel(name)[1]
        checked = kernel_args(name, np.dtype(dtype), args)  # what the real device checks before launching
        self.launches.append(name)
        converted = []
        for param, value in zip(spec.params, checked):
            c = src.c_type(param)
            if c.endswith("*"):
                assert value.flags.c_contiguous, f"{name}: a non-contiguous array would be misread on the GPU"
                converted.append(ctypes.c_void_p(value.ctypes.data))
            elif c == "T":
                converted.append(_ELEMENT[ctype](float(value)))
            else:
                converted.append(_CTYPES[c](int(value)))
        symbol = _symbol(spec, ctype, width)
        if one_block:
            def run():
                status = getattr(self.lib, f"emu_block_{symbol}")(ctypes.c_uint(threads), ctypes.c_uint(shared_mem),
                                                                 *converted)
                assert status == 0, f"{name}: launch refused or shared memory overrun (status {status})"
        else:
            # A small grid, so that the grid-stride arithmetic is exercised across threads.
            def run():
                getattr(self.lib, f"emu_{symbol}")(ctypes.c_uint(min(3, cuda_plan.grid_for(n_items))),
                                                   ctypes.c_uint(5), *converted)
        self._issue(run)


def write_race_input(path: Path, tiny: cuda_plan.TinyPlan, dtype: np.dtype, arrays: list[np.ndarray],
                     state: list[np.ndarray], codes: dict[str, int], l2: float, hyper: np.ndarray, lrs: np.ndarray,
                     batches, counters: np.ndarray, skip_line: int = -1) -> None:
    """The race checker's input file for one ``nnx_tiny_train`` launch (layout in RACE_MAIN): ``arrays``
    are X, targets, W1, b1, W2, b2; ``state`` the optimiser's arrays, per state W1 b1 W2 b2; ``codes``
    act, head, mean and code; ``batches`` a ``Batches`` or None."""
    order = np.zeros(1, np.int64) if batches is None else np.ascontiguousarray(batches.order, np.int64)
    bounds = np.zeros(lrs.size + 1, np.int64) if batches is None else np.ascontiguousarray(batches.bounds, np.int64)
    values = dict(is_double=int(dtype == np.float64), width=tiny.width, block=tiny.threads,
                  shared=tiny.shared_bytes(dtype.itemsize), n=tiny.n, rows=tiny.batch_rows, d=tiny.d, h=tiny.h,
                  c=tiny.c, slices_h=tiny.slices_h, slices_n=tiny.slices_n, lanes=tiny.lanes,
                  n_slots=len(state) // 4, batched=int(batches is not None), passes=int(lrs.size),
                  skip_line=skip_line, n_lrs=int(lrs.size), n_order=int(order.size), **codes)
    header = [values[name] for name in RACE_HEADER] + [0] * (24 - len(RACE_HEADER))
    with open(path, "wb") as f:
        f.write(np.array(header, dtype=np.int64).tobytes())
        f.write(np.array([l2, *hyper], dtype=np.float64).tobytes())
        f.write(np.ascontiguousarray(lrs, np.float64).tobytes())
        f.write(order.tobytes())
        f.write(bounds.tobytes())
        f.write(np.ascontiguousarray(counters, np.int64).tobytes())
        for a in list(arrays) + list(state):
            f.write(np.ascontiguousarray(a, dtype=dtype).tobytes())
