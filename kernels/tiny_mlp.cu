// Fused kernels for one-hidden-layer networks whose input and output are
// narrow (at most NNX_TINY_MAX_WIDTH wide), whatever the hidden width H.
//
// A pass runs one of two ways (cuda_plan.plan_tiny decides from the shapes):
// * sliced, any N x H: nnx_tiny_logits (partial logits over slices of H),
//   nnx_head_rows (dense_ops.cu), nnx_tiny_grads (partial gradients over
//   slices of the samples, one item per hidden unit and slice; the N x H
//   activations are recomputed, never stored) and two nnx_dense_update
//   launches that add the slices in order; the host replays these from graphs;
// * one block, small N x H: nnx_tiny_train runs many whole passes inside one
//   thread block, with the data, parameters, activations and partial sums
//   staged in shared memory, so a pass makes no global-memory round trip.
//
// Every kernel is a template over the element type T and a width W (2, 4 or
// 8, see cuda_sources.TINY_WIDTHS): inputs and outputs are at most W wide, and
// loops over them are unrolled over W with guards, so the per-thread rows stay
// in registers (no local memory) and narrow networks pay only for W registers.
#include "nnx_common.cuh"

// row[0, width) into registers, zeros beyond.
template <typename T, int W>
__device__ __forceinline__ void nnx_load_row(T (&out)[W], const T* row, int width) {
#pragma unroll
    for (int i = 0; i < W; ++i) out[i] = i < width ? row[i] : T(0);
}

// Partial logits of the sample x over hidden units [j0, j1), into acc; with
// A_row given, the activations a_j are stored at A_row[j] as well.
template <typename T, int W>
__device__ __forceinline__ void nnx_tiny_logits_item(const T* x, const T* W1, const T* b1, const T* W2,
                                                     T (&acc)[W], T* A_row, int d, int h, int c, int j0, int j1,
                                                     int act) {
    T xr[W];
    nnx_load_row<T, W>(xr, x, d);
#pragma unroll
    for (int k = 0; k < W; ++k) acc[k] = T(0);
    for (int j = j0; j < j1; ++j) {
        T z = T(0);
#pragma unroll
        for (int i = 0; i < W; ++i) {
            if (i < d) z += xr[i] * W1[(long long)i * h + j];
        }
        const T a = nnx_activate(act, z + b1[j]);
        if (A_row != nullptr) A_row[j] = a;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            if (k < c) acc[k] += a * W2[(long long)j * c + k];
        }
    }
}

template <typename T, int W>
__device__ void nnx_tiny_logits_items(const T* X, const T* W1, const T* b1, const T* W2, T* parts, int n, int d,
                                      int h, int c, int slices, int act, long long first, long long stride) {
    const int width = (h + slices - 1) / slices;
    for (long long item = first; item < (long long)slices * n; item += stride) {
        const int s = (int)(item / n), row = (int)(item % n);
        const int j0 = s * width, j1 = min(h, j0 + width);
        T acc[W];
        nnx_tiny_logits_item<T, W>(X + (long long)row * d, W1, b1, W2, acc, (T*)nullptr, d, h, c, j0, j1, act);
        T* part = parts + item * c;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            if (k < c) part[k] = acc[k];
        }
    }
}

// Gradient contributions of samples [n0, n1) to hidden unit j, written to g
// (one slice's block, laid out dW1 | db1 | dW2 | db2). The activations come
// from A (N x H) when given, else they are recomputed from X, W1 and b1.
template <typename T, int W>
__device__ __forceinline__ void nnx_tiny_grads_item(const T* X, const T* W1, const T* b1, const T* W2,
                                                    const T* delta, const T* A, T* g, int d, int h, int c, int j,
                                                    int n0, int n1, int act) {
    T w1[W], w2[W], dw1[W], dw2[W], db2[W];
#pragma unroll
    for (int i = 0; i < W; ++i) {
        w1[i] = i < d ? W1[(long long)i * h + j] : T(0);
        w2[i] = i < c ? W2[(long long)j * c + i] : T(0);
        dw1[i] = dw2[i] = db2[i] = T(0);
    }
    const T bj = b1[j];
    T db1 = T(0);
    for (int r = n0; r < n1; ++r) {
        T xr[W], er[W];
        nnx_load_row<T, W>(xr, X + (long long)r * d, d);
        nnx_load_row<T, W>(er, delta + (long long)r * c, c);
        T a;
        if (A != nullptr) {
            a = A[(long long)r * h + j];
        } else {
            T z = T(0);
#pragma unroll
            for (int i = 0; i < W; ++i) {
                if (i < d) z += xr[i] * w1[i];
            }
            a = nnx_activate(act, z + bj);
        }
        T back = T(0);
#pragma unroll
        for (int k = 0; k < W; ++k) {
            if (k < c) back += er[k] * w2[k];
        }
        const T dz = back * nnx_activation_grad(act, a);
#pragma unroll
        for (int i = 0; i < W; ++i) {
            if (i < d) dw1[i] += xr[i] * dz;
        }
        db1 += dz;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            if (k < c) {
                dw2[k] += a * er[k];
                db2[k] += er[k];
            }
        }
    }
    const long long dh = (long long)d * h;
#pragma unroll
    for (int i = 0; i < W; ++i) {
        if (i < d) g[(long long)i * h + j] = dw1[i];
    }
    g[dh + j] = db1;
#pragma unroll
    for (int k = 0; k < W; ++k) {
        if (k < c) g[dh + h + (long long)j * c + k] = dw2[k];
    }
    if (j == 0) {
#pragma unroll
        for (int k = 0; k < W; ++k) {
            if (k < c) g[dh + h + (long long)h * c + k] = db2[k];
        }
    }
}

template <typename T, int W>
__device__ void nnx_tiny_grads_items(const T* X, const T* W1, const T* b1, const T* W2, const T* delta, const T* A,
                                     T* grad_parts, int n, int d, int h, int c, int slices, int act,
                                     long long first, long long stride) {
    const int rows = (n + slices - 1) / slices;
    const long long size = (long long)d * h + h + (long long)h * c + c;
    for (long long item = first; item < (long long)slices * h; item += stride) {
        const int s = (int)(item / h), j = (int)(item % h);
        const int n0 = s * rows, n1 = min(n, n0 + rows);
        nnx_tiny_grads_item<T, W>(X, W1, b1, W2, delta, A, grad_parts + s * size, d, h, c, j, n0, n1, act);
    }
}

template <typename T, int W>
__global__ void nnx_tiny_logits(const T* X, const T* W1, const T* b1, const T* W2, T* parts, int n, int d, int h,
                                int c, int slices, int act) {
    nnx_tiny_logits_items<T, W>(X, W1, b1, W2, parts, n, d, h, c, slices, act, nnx_first(), nnx_stride());
}

template <typename T, int W>
__global__ void nnx_tiny_grads(const T* X, const T* W1, const T* b1, const T* W2, const T* delta, T* grad_parts,
                               int n, int d, int h, int c, int slices, int act) {
    nnx_tiny_grads_items<T, W>(X, W1, b1, W2, delta, (const T*)nullptr, grad_parts, n, d, h, c, slices, act,
                               nnx_first(), nnx_stride());
}

// Whether parameter i of the layout W1 | b1 | W2 | b2 is a weight (L2 applies).
__device__ __forceinline__ bool nnx_tiny_is_weight(long long i, long long dh, int h, int c) {
    return i < dh || (i >= dh + h && i < dh + h + (long long)h * c);
}

// `passes` full passes in one launch of ONE thread block of a multiple of 32
// threads, at most NNX_ONE_BLOCK_THREADS(W) (registers), and `lanes` a power
// of two up to 32. The dynamic
// shared memory holds, in elements of T (cuda_plan.TinyPlan.one_block_elements
// computes the same total): X | targets | W1 b1 W2 b2 | activations (N x H) |
// delta (N x C) | partial logits (slices_h x N x C, only if slices_h > 1) |
// partial gradients (slices_n x parameters). Per pass:
//   1. one item per sample and slice of H: activations and (partial) logits;
//      with one slice the same thread applies the head in registers;
//   2. one item per hidden unit and slice of samples: partial gradients;
//   3. `lanes` threads per parameter add its slices (strided), combine them
//      with a fixed shuffle tree and lane 0 applies the update.
// The phases are separated by __syncthreads(); the parameters go back to
// global memory at the end. Every sum has a fixed order: same launch, same bits.
//
// Estimate for tutorial 003 (N=200, 2-3-2, float64; 256 threads, 85 sample
// slices, 8 lanes), to compare with the GPU check's CUDA-event timing: phase 1
// about 210 instructions per thread (3 tanh, 2 exp, 2 divisions) on a chain of
// ~800 cycles; phase 2 about 55 (2-3 rows) on ~220; phase 3 about 40 (11
// partials, 3 shuffle levels) on ~300; 3 barriers ~90. About 2,300 warp
// instructions and 1,400-2,000 cycles, 0.7-1.0 us per pass at 1.98 GHz, with
// no global-memory round trip (about 7 dependent shared-memory ones).
template <typename T, int W>
__global__ void __launch_bounds__(NNX_ONE_BLOCK_THREADS(W))
    nnx_tiny_train(const T* X, const T* targets, T* W1, T* b1, T* W2, T* b2, int n, int d, int h, int c,
                   int slices_h, int slices_n, int lanes, int act, int head, T scale, T lr, T l2, int passes) {
    extern __shared__ __align__(16) unsigned char nnx_smem[];
    const int tid = threadIdx.x, nt = blockDim.x;
    const long long dh = (long long)d * h, size = dh + h + (long long)h * c + c;
    T* sx = reinterpret_cast<T*>(nnx_smem);
    T* st = sx + (long long)n * d;
    T* sp = st + (long long)n * c;
    T* sa = sp + size;
    T* se = sa + (long long)n * h;
    T* sparts = se + (long long)n * c;
    T* sg = sparts + (slices_h > 1 ? (long long)slices_h * n * c : 0);
    const T* sW1 = sp;
    const T* sb1 = sp + dh;
    const T* sW2 = sb1 + h;
    const T* sb2 = sW2 + (long long)h * c;

    for (long long i = tid; i < (long long)n * d; i += nt) sx[i] = X[i];
    for (long long i = tid; i < (long long)n * c; i += nt) st[i] = targets[i];
    for (long long i = tid; i < size; i += nt) {
        sp[i] = i < dh ? W1[i] : i < dh + h ? b1[i - dh] : i < size - c ? W2[i - dh - h] : b2[i - (size - c)];
    }
    __syncthreads();

    const int width = (h + slices_h - 1) / slices_h;
    const int groups = nt / lanes;
    for (int pass = 0; pass < passes; ++pass) {
        if (slices_h == 1) {
            for (int r = tid; r < n; r += nt) {
                T z[W];
                nnx_tiny_logits_item<T, W>(sx + (long long)r * d, sW1, sb1, sW2, z, sa + (long long)r * h, d, h, c,
                                           0, h, act);
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    if (k < c) z[k] += sb2[k];
                }
                nnx_head_logits<W>(z, st + (long long)r * c, (T*)nullptr, c, head, scale, NNX_MODE_DELTA);
                T* e = se + (long long)r * c;
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    if (k < c) e[k] = z[k];
                }
            }
        } else {
            for (long long item = tid; item < (long long)slices_h * n; item += nt) {
                const int s = (int)(item / n), r = (int)(item % n);
                const int j0 = s * width, j1 = min(h, j0 + width);
                T z[W];
                nnx_tiny_logits_item<T, W>(sx + (long long)r * d, sW1, sb1, sW2, z, sa + (long long)r * h, d, h, c,
                                           j0, j1, act);
                T* part = sparts + item * c;
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    if (k < c) part[k] = z[k];
                }
            }
            __syncthreads();
            for (int r = tid; r < n; r += nt) {
                nnx_head_row(sparts + (long long)r * c, slices_h, (long long)n * c, sb2, st + (long long)r * c,
                             se + (long long)r * c, se + (long long)r * c, c, head, scale, (int)NNX_MODE_DELTA);
            }
        }
        __syncthreads();
        nnx_tiny_grads_items<T, W>(sx, sW1, sb1, sW2, se, sa, sg, n, d, h, c, slices_n, act, (long long)tid,
                                   (long long)nt);
        __syncthreads();
        for (long long base = 0; base < size; base += groups) {
            const long long i = base + tid / lanes;
            const int lane = tid % lanes;
            T g = T(0);
            if (i < size) {
#pragma unroll 4
                for (int s = lane; s < slices_n; s += lanes) g += sg[(long long)s * size + i];
            }
            for (int offset = lanes / 2; offset > 0; offset /= 2) {
                g += __shfl_down_sync(0xffffffffu, g, offset, lanes);
            }
            if (i < size && lane == 0) nnx_apply_update(sp[i], g, lr, nnx_tiny_is_weight(i, dh, h, c) ? l2 : T(0));
        }
        __syncthreads();
    }

    for (long long i = tid; i < size; i += nt) {
        const T p = sp[i];
        if (i < dh) {
            W1[i] = p;
        } else if (i < dh + h) {
            b1[i - dh] = p;
        } else if (i < size - c) {
            W2[i - dh - h] = p;
        } else {
            b2[i - (size - c)] = p;
        }
    }
}
