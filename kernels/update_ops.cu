// The steps every training pass shares, whatever computes its gradients:
// beginning an update (its record, from the interval's learning rates and
// batches in device memory), gathering a minibatch, and the optimiser update
// of one layer. A captured CUDA graph of passes stays valid across steps,
// schedules and intervals because every per-update value is read here from
// device memory, never baked into a launch.
// Instances: each kernel for T = float and T = double (see cuda_sources.py).
#include "nnx_common.cuh"

// One thread: the record of the next update (see nnx_fill_update), then the
// interval's position moves on (counters[NNX_CTR_NEXT] += 1).
template <typename T>
__global__ void nnx_begin_update(const double* lrs, const long long* bounds, const double* hyper, long long* counters,
                                 T* coef, int code, int mean, int batched, long long n_full) {
    if (nnx_first() != 0) return;
    const long long u = counters[NNX_CTR_NEXT];
    nnx_fill_update<T>(u, counters[NNX_CTR_STEP] + 1, lrs, bounds, batched, n_full, mean, code, hyper, counters,
                       coef);
    counters[NNX_CTR_NEXT] = u + 1;
}

// The batch's rows of X and of the targets into the batch buffers Xb (rows x
// d) and Tb (rows x c), row r from sample order[start + r]; rows past the
// batch's length get zeros, so the products over the whole buffer read finite
// inputs (and, with zero deltas, add nothing).
template <typename T>
__global__ void nnx_gather_rows(const T* X, const T* targets, const long long* order, const long long* counters, T* Xb,
                                T* Tb, long long rows, int d, int c) {
    const long long start = counters[NNX_CTR_START], len = counters[NNX_CTR_LEN];
    const int w = d + c;
    for (long long i = nnx_first(); i < rows * w; i += nnx_stride()) {
        const long long r = i / w;
        const int k = (int)(i % w);
        T value = T(0);
        if (r < len) {
            const long long sample = order[start + r];
            value = k < d ? X[sample * d + k] : targets[sample * c + (k - d)];
        }
        if (k < d) {
            Xb[r * d + k] = value;
        } else {
            Tb[r * c + (k - d)] = value;
        }
    }
}

// One layer's update: items [0, n_w) update W (with the tutorial's L2), items
// [n_w, n_w + n_b) update b (without), each from the sum of n_parts partial
// gradients; the optimiser's state comes from the pointer table `slots`
// (W's state arrays at [0, NNX_SLOTS_MAX), b's after them; 0 where absent).
template <typename T>
__global__ void nnx_dense_update(T* W, const T* dW_parts, long long n_w, T* b, const T* db_parts, long long n_b,
                                 int n_parts, long long part_stride, T l2, int code, const double* hyper,
                                 const T* coef, const long long* counters, T* const* slots) {
    const NnxOptimizer<T> o = nnx_optimizer<T>(code, hyper);
    const long long step = counters[NNX_CTR_STEP];
    T* const w0 = slots[0];
    T* const w1 = slots[1];
    T* const w2 = slots[2];
    T* const b0 = slots[NNX_SLOTS_MAX];
    T* const b1 = slots[NNX_SLOTS_MAX + 1];
    T* const b2 = slots[NNX_SLOTS_MAX + 2];
    for (long long i = nnx_first(); i < n_w + n_b; i += nnx_stride()) {
        if (i < n_w) {
            nnx_update_one(W + i, dW_parts + i, n_parts, part_stride, l2, o, coef, step, nnx_slot_at(w0, i),
                           nnx_slot_at(w1, i), nnx_slot_at(w2, i));
        } else {
            const long long j = i - n_w;
            nnx_update_one(b + j, db_parts + j, n_parts, part_stride, T(0), o, coef, step, nnx_slot_at(b0, j),
                           nnx_slot_at(b1, j), nnx_slot_at(b2, j));
        }
    }
}
