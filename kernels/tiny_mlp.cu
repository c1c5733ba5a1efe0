// Fused kernels for one-hidden-layer networks whose input and output are
// narrow (at most NNX_TINY_MAX_WIDTH wide), whatever the hidden width H.
//
// An update runs one of two ways (cuda_plan.plan_tiny decides from the shapes):
// * sliced, any N x H: nnx_begin_update and, for minibatches, nnx_gather_rows
//   (update_ops.cu), nnx_tiny_logits (partial logits over slices of H),
//   nnx_head_rows (dense_ops.cu), nnx_tiny_grads (partial gradients over
//   slices of the samples, one item per hidden unit and slice; the N x H
//   activations are recomputed, never stored) and two nnx_dense_update
//   launches that add the slices in order; the host replays these from graphs;
// * one block, small batch x H: nnx_tiny_train runs many whole updates inside
//   one thread block, with the data, parameters, optimiser state, activations
//   and partial sums staged in shared memory, so an update makes no
//   global-memory round trip beyond reading its minibatch's sample indices.
//
// The sliced kernels read the batch's length from the update record
// (counters[NNX_CTR_LEN]): rows past it, the padding of a last, smaller
// minibatch, are skipped, so one captured graph serves every batch.
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
__device__ void nnx_tiny_logits_items(const T* X, const T* W1, const T* b1, const T* W2, T* parts, int n, int valid,
                                      int d, int h, int c, int slices, int act, long long first, long long stride) {
    const int width = (h + slices - 1) / slices;
    for (long long item = first; item < (long long)slices * n; item += stride) {
        const int s = (int)(item / n), row = (int)(item % n);
        if (row >= valid) continue;
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

// Gradient contributions of rows [n0, n1) to hidden unit j, written to g
// (one slice's block, laid out dW1 | db1 | dW2 | db2). Row r's input is
// X[index[r]] when an index is given (a minibatch read in place), else X[r];
// its delta is delta[r]. The activations come from A (rows x H) when given,
// else they are recomputed from X, W1 and b1.
template <typename T, int W>
__device__ __forceinline__ void nnx_tiny_grads_item(const T* X, const int* index, const T* W1, const T* b1,
                                                    const T* W2, const T* delta, const T* A, T* g, int d, int h, int c,
                                                    int j, int n0, int n1, int act) {
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
        const long long row = index != nullptr ? index[r] : r;
        nnx_load_row<T, W>(xr, X + row * d, d);
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

// The rows of the batch (n of them) split into `slices` slices of consecutive
// rows; one item per hidden unit and slice. A slice past the batch's end
// writes zeros, so every slice's block is whole whatever the batch's length.
template <typename T, int W>
__device__ void nnx_tiny_grads_items(const T* X, const int* index, const T* W1, const T* b1, const T* W2,
                                     const T* delta, const T* A, T* grad_parts, int n, int d, int h, int c, int slices,
                                     int act, long long first, long long stride) {
    const int rows = (n + slices - 1) / slices;
    const long long size = (long long)d * h + h + (long long)h * c + c;
    for (long long item = first; item < (long long)slices * h; item += stride) {
        const int s = (int)(item / h), j = (int)(item % h);
        const int n0 = min(n, s * rows), n1 = min(n, n0 + rows);
        nnx_tiny_grads_item<T, W>(X, index, W1, b1, W2, delta, A, grad_parts + s * size, d, h, c, j, n0, n1, act);
    }
}

// Partial logits of the batch's rows (counters[NNX_CTR_LEN] of the n rows of X).
template <typename T, int W>
__global__ void nnx_tiny_logits(const T* X, const T* W1, const T* b1, const T* W2, T* parts, int n, int d, int h,
                                int c, int slices, int act, const long long* counters) {
    nnx_tiny_logits_items<T, W>(X, W1, b1, W2, parts, n, (int)counters[NNX_CTR_LEN], d, h, c, slices, act,
                                nnx_first(), nnx_stride());
}

// Partial gradients over the batch's rows (counters[NNX_CTR_LEN] of the n rows of X).
template <typename T, int W>
__global__ void nnx_tiny_grads(const T* X, const T* W1, const T* b1, const T* W2, const T* delta, T* grad_parts,
                               int n, int d, int h, int c, int slices, int act, const long long* counters) {
    const int valid = (int)min((long long)n, counters[NNX_CTR_LEN]);
    nnx_tiny_grads_items<T, W>(X, (const int*)nullptr, W1, b1, W2, delta, (const T*)nullptr, grad_parts, valid, d, h,
                               c, slices, act, nnx_first(), nnx_stride());
}

// Which array of the layout W1 | b1 | W2 | b2 holds parameter i (0 to 3), and
// i's offset in it. Arrays 0 and 2 are weights (the tutorial's L2 applies).
__device__ __forceinline__ int nnx_tiny_array(long long i, long long dh, int h, int c, long long* offset) {
    const long long w2_start = dh + h, b2_start = w2_start + (long long)h * c;
    if (i < dh) {
        *offset = i;
        return 0;
    }
    if (i < w2_start) {
        *offset = i - dh;
        return 1;
    }
    if (i < b2_start) {
        *offset = i - w2_start;
        return 2;
    }
    *offset = i - b2_start;
    return 3;
}

// The array numbered as nnx_tiny_array numbers them (selects: no local-memory array).
template <typename T>
__device__ __forceinline__ T* nnx_tiny_pick(int array, T* W1, T* b1, T* W2, T* b2) {
    return array == 0 ? W1 : array == 1 ? b1 : array == 2 ? W2 : b2;
}

// `passes` updates in one launch of ONE thread block of a multiple of 32
// threads, at most NNX_ONE_BLOCK_THREADS(W) (registers), and `lanes` a power
// of two up to 32. Update u of the interval trains on rows
// order[bounds[u]:bounds[u + 1]] of X when `batched` (at most `rows` of them),
// else on all n rows; its learning rate is lrs[u]; counters[NNX_CTR_NEXT] and
// [NNX_CTR_STEP] say where the interval stands and move on by `passes`.
// The dynamic shared memory holds (cuda_plan.TinyPlan.shared_bytes computes
// the same total): two update records (long long counters, then T
// coefficients) | the optimiser's settings (NNX_OPTIMIZER_BYTES: in shared
// memory, as the W=2 instances run short of registers) | X (n x d) | targets
// (n x c) | W1 b1 W2 b2 | the optimiser's n_slots state arrays, laid out like
// the parameters | activations (rows x H) | delta (rows x C) | partial logits
// (slices_h x rows x C, only if slices_h > 1) | partial gradients (slices_n x
// parameters) | the batch's sample indices (rows ints, only if batched).
// Per update:
//   1. one item per batch row and slice of H: activations and (partial)
//      logits; with one slice the same thread applies the head in registers;
//      a minibatch's rows are read in place through its sample indices;
//   2. one item per hidden unit and slice of rows: partial gradients; the
//      last thread meanwhile fills the next update's record (the records
//      alternate, so the current one stays readable);
//   3. `lanes` threads per parameter add its slices (strided), combine them
//      with a fixed shuffle tree and lane 0 applies the optimiser's step.
// The phases are separated by __syncthreads(); the parameters and the state
// go back to global memory at the end. Every sum has a fixed order: same
// launch, same bits.
//
// Estimate for tutorial 003 (N=200, 2-3-2, float64, full batch, plain SGD;
// 256 threads, 85 sample slices, 8 lanes), to compare with the GPU check's
// CUDA-event timing: phase 1 about 210 instructions per thread (3 tanh,
// 2 exp, 2 divisions) on a chain of ~800 cycles; phase 2 about 55 (2-3 rows)
// on ~220; phase 3 about 45 (11 partials, 3 shuffle levels, the optimiser's
// switch) on ~300; 3 barriers ~90. About 2,300 warp instructions and
// 1,400-2,000 cycles, 0.7-1.0 us per update at 1.98 GHz, with no global-memory
// round trip (about 7 dependent shared-memory ones). Adam adds about 20
// instructions per parameter in phase 3 (two divisions, a square root) and
// the record's two powers (about 40 multiplies at step 10^5), which the last
// thread overlaps with phase 2.
// Measured on an H200 (benchmarks/RESULTS.md): 3.2 us per update in float64
// and 2.3 us in float32, about three times the estimate; 32 to 512 threads
// were slower or no faster than 256, so the chain of dependent steps per
// update, not the parallelism, sets the time (a 16-core CPU takes 1.8 and
// 1.1 us on the Numba backend).
// A minibatch adds one dependent global load per update (its sample indices,
// at the start of phase 1).
// Launch bounds (threads, 1): the kernel runs one block, so ptxas may give each thread the whole
// register file's share; without the 1, NVRTC 13.0 capped the W=2 instances at 64 registers and spilled.
template <typename T, int W>
__global__ void __launch_bounds__(NNX_ONE_BLOCK_THREADS(W), 1)
    nnx_tiny_train(const T* X, const T* targets, T* W1, T* b1, T* W2, T* b2, T* const* slots, int n, int rows, int d,
                   int h, int c, int slices_h, int slices_n, int lanes, int act, int head, int mean, T l2, int code,
                   int n_slots, const double* hyper, const double* lrs, const long long* order,
                   const long long* bounds, int batched, long long* counters, int passes) {
    static_assert(sizeof(NnxOptimizer<T>) <= NNX_OPTIMIZER_BYTES, "the optimiser's settings outgrow their space");
    extern __shared__ __align__(16) unsigned char nnx_smem[];
    const int tid = threadIdx.x, nt = blockDim.x;
    const long long dh = (long long)d * h, size = dh + h + (long long)h * c + c;
    long long* const rec_ctr = reinterpret_cast<long long*>(nnx_smem);
    T* const rec_coef = reinterpret_cast<T*>(rec_ctr + 2 * NNX_CTR_COUNT);
    NnxOptimizer<T>* const so = reinterpret_cast<NnxOptimizer<T>*>(rec_coef + 2 * NNX_COEF_COUNT);
    T* const sx = reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(so) + NNX_OPTIMIZER_BYTES);
    T* const st = sx + (long long)n * d;
    T* const sp = st + (long long)n * c;
    T* const ss = sp + size;
    T* const sa = ss + (long long)n_slots * size;
    T* const se = sa + (long long)rows * h;
    T* const sparts = se + (long long)rows * c;
    T* const sg = sparts + (slices_h > 1 ? (long long)slices_h * rows * c : 0);
    int* const sidx = reinterpret_cast<int*>(sg + (long long)slices_n * size);
    const T* sW1 = sp;
    const T* sb1 = sp + dh;
    const T* sW2 = sb1 + h;
    const T* sb2 = sW2 + (long long)h * c;

    const long long u0 = counters[NNX_CTR_NEXT], step0 = counters[NNX_CTR_STEP];
    for (long long i = tid; i < (long long)n * d; i += nt) sx[i] = X[i];
    for (long long i = tid; i < (long long)n * c; i += nt) st[i] = targets[i];
    for (long long i = tid; i < size; i += nt) {
        long long offset;
        const int array = nnx_tiny_array(i, dh, h, c, &offset);
        sp[i] = nnx_tiny_pick(array, W1, b1, W2, b2)[offset];
        for (int k = 0; k < n_slots; ++k) {
            ss[k * size + i] = slots[(array / 2) * 2 * NNX_SLOTS_MAX + (array % 2) * NNX_SLOTS_MAX + k][offset];
        }
    }
    if (tid == 0) {
        nnx_fill_update<T>(u0, step0 + 1, lrs, bounds, batched, n, mean, code, hyper, rec_ctr, rec_coef);
        *so = nnx_optimizer<T>(code, hyper);
    }
    __syncthreads();

    const int width = (h + slices_h - 1) / slices_h;
    const int groups = nt / lanes;
    for (int pass = 0; pass < passes; ++pass) {
        const int cur = pass & 1;
        const long long* const ctr = rec_ctr + cur * NNX_CTR_COUNT;
        const T* const coef = rec_coef + cur * NNX_COEF_COUNT;
        const long long start = ctr[NNX_CTR_START];
        const int len = (int)ctr[NNX_CTR_LEN];
        const T scale = coef[NNX_COEF_SCALE];
        if (slices_h == 1) {
            for (int r = tid; r < len; r += nt) {
                const int row = batched ? (int)order[start + r] : r;
                if (batched) sidx[r] = row;
                T z[W];
                nnx_tiny_logits_item<T, W>(sx + (long long)row * d, sW1, sb1, sW2, z, sa + (long long)r * h, d, h,
                                           c, 0, h, act);
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    if (k < c) z[k] += sb2[k];
                }
                nnx_head_logits<W>(z, st + (long long)row * c, (T*)nullptr, c, head, scale, NNX_MODE_DELTA);
                T* e = se + (long long)r * c;
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    if (k < c) e[k] = z[k];
                }
            }
        } else {
            for (long long item = tid; item < (long long)slices_h * rows; item += nt) {
                const int s = (int)(item / rows), r = (int)(item % rows);
                if (r >= len) continue;
                const int row = batched ? (int)order[start + r] : r;
                if (batched && s == 0) sidx[r] = row;
                const int j0 = s * width, j1 = min(h, j0 + width);
                T z[W];
                nnx_tiny_logits_item<T, W>(sx + (long long)row * d, sW1, sb1, sW2, z, sa + (long long)r * h, d, h,
                                           c, j0, j1, act);
                T* part = sparts + item * c;
#pragma unroll
                for (int k = 0; k < W; ++k) {
                    if (k < c) part[k] = z[k];
                }
            }
            __syncthreads();
            for (int r = tid; r < len; r += nt) {
                const int row = batched ? sidx[r] : r;
                nnx_head_row(sparts + (long long)r * c, slices_h, (long long)rows * c, sb2, st + (long long)row * c,
                             se + (long long)r * c, se + (long long)r * c, c, head, scale, (int)NNX_MODE_DELTA);
            }
        }
        __syncthreads();
        nnx_tiny_grads_items<T, W>(sx, batched ? sidx : (const int*)nullptr, sW1, sb1, sW2, se, sa, sg, len, d, h, c,
                                   slices_n, act, (long long)tid, (long long)nt);
        if (tid == nt - 1 && pass + 1 < passes) {
            nnx_fill_update<T>(u0 + pass + 1, step0 + pass + 2, lrs, bounds, batched, n, mean, code, hyper,
                               rec_ctr + (1 - cur) * NNX_CTR_COUNT, rec_coef + (1 - cur) * NNX_COEF_COUNT);
        }
        __syncthreads();
        const long long step = ctr[NNX_CTR_STEP];
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
            if (i < size && lane == 0) {
                long long offset;
                const int array = nnx_tiny_array(i, dh, h, c, &offset);
                if (l2 != T(0) && array % 2 == 0) g += sp[i] * l2;
                nnx_optimizer_step(*so, coef, step, sp[i], g, n_slots > 0 ? ss + i : (T*)nullptr,
                                   n_slots > 1 ? ss + size + i : (T*)nullptr,
                                   n_slots > 2 ? ss + 2 * size + i : (T*)nullptr);
            }
        }
        __syncthreads();
    }

    for (long long i = tid; i < size; i += nt) {
        long long offset;
        const int array = nnx_tiny_array(i, dh, h, c, &offset);
        nnx_tiny_pick(array, W1, b1, W2, b2)[offset] = sp[i];
        for (int k = 0; k < n_slots; ++k) {
            slots[(array / 2) * 2 * NNX_SLOTS_MAX + (array % 2) * NNX_SLOTS_MAX + k][offset] = ss[k * size + i];
        }
    }
    if (tid == 0) {
        counters[NNX_CTR_NEXT] = u0 + passes;
        counters[NNX_CTR_STEP] = step0 + passes;
    }
}
