// Device helpers shared by nnx's CUDA kernels: activation and head math per
// element or per row, and the gradient-descent update of one parameter.
//
// Every loop over work items is grid-stride (first = global thread id,
// stride = total threads), so the same device function serves a many-block
// launch and the single-block kernel that runs whole passes, and every sum is
// taken in a fixed order (no atomics): the same launch gives the same bits.
#ifndef NNX_COMMON_CUH
#define NNX_COMMON_CUH

// Codes match nnx.network.ACTIVATION_CODES and HEAD_CODES (checked by tests).
#define NNX_ACT_SIGMOID 0
#define NNX_ACT_TANH 1
#define NNX_ACT_RELU 2
#define NNX_ACT_IDENTITY 3

#define NNX_HEAD_SOFTMAX 0
#define NNX_HEAD_SIGMOID 1
#define NNX_HEAD_IDENTITY 2

// What nnx_head_rows writes: dLoss/dz, the head output, or the row's loss.
#define NNX_MODE_DELTA 0
#define NNX_MODE_OUTPUT 1
#define NNX_MODE_LOSS 2

// Widest input or output a fused small-network kernel accepts (registers).
#define NNX_TINY_MAX_WIDTH 8
// Threads of the single-block kernel for width W: its registers allow 512
// threads up to width 4 and 256 at width 8 (cuda_plan.one_block_threads).
#define NNX_ONE_BLOCK_THREADS(W) ((W) <= 4 ? 512 : 256)

__device__ __forceinline__ float nnx_exp(float x) { return expf(x); }
__device__ __forceinline__ double nnx_exp(double x) { return exp(x); }
__device__ __forceinline__ float nnx_log(float x) { return logf(x); }
__device__ __forceinline__ double nnx_log(double x) { return log(x); }
__device__ __forceinline__ float nnx_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double nnx_tanh(double x) { return tanh(x); }

__device__ __forceinline__ long long nnx_first() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long nnx_stride() {
    return (long long)blockDim.x * gridDim.x;
}

// f(z), written as the reference math does (sigmoid = 1 / (1 + exp(-z))).
template <typename T>
__device__ __forceinline__ T nnx_activate(int act, T z) {
    switch (act) {
        case NNX_ACT_SIGMOID: return T(1) / (T(1) + nnx_exp(-z));
        case NNX_ACT_TANH: return nnx_tanh(z);
        case NNX_ACT_RELU: return z < T(0) ? T(0) : z;  // NaN passes through
        default: return z;
    }
}

// f'(z) from the layer output a = f(z), as the tutorials write it.
template <typename T>
__device__ __forceinline__ T nnx_activation_grad(int act, T a) {
    switch (act) {
        case NNX_ACT_SIGMOID: return a * (T(1) - a);
        case NNX_ACT_TANH: return T(1) - a * a;
        case NNX_ACT_RELU: return a > T(0) ? T(1) : T(0);
        default: return T(1);
    }
}

// A loop over the classes of one row. With Max > 0 the row lives in registers
// (classes <= Max): the loop is unrolled over Max with a guard, so the array
// never goes to local memory. With Max == 0 the row lives in memory and the
// loop is a plain one over any number of classes.
#define NNX_FOR_CLASS(k, Max, classes) \
    _Pragma("unroll") for (int k = 0; k < ((Max) > 0 ? (Max) : (classes)); ++k) if ((Max) == 0 || k < (classes))

// The head on one row of logits z (bias included), in place: z becomes the
// delta (y - t) [* y(1-y) for sigmoid] * scale or the head output y; in LOSS
// mode *loss gets the row's data loss and z is left as it was.
template <int Max, typename T, typename Row>
__device__ __forceinline__ void nnx_head_logits(Row& z, const T* t, T* loss, int classes, int head, T scale,
                                                int mode) {
    if (head == NNX_HEAD_SOFTMAX) {
        T m = z[0];
        NNX_FOR_CLASS(k, Max, classes) m = z[k] > m ? z[k] : m;
        if (mode == NNX_MODE_LOSS) {
            T sum = T(0), tz = T(0);
            NNX_FOR_CLASS(k, Max, classes) {
                sum += nnx_exp(z[k] - m);
                tz += t[k] * z[k];
            }
            *loss = (nnx_log(sum) + m) - tz;
            return;
        }
        T sum = T(0);
        NNX_FOR_CLASS(k, Max, classes) {
            z[k] = nnx_exp(z[k] - m);
            sum += z[k];
        }
        NNX_FOR_CLASS(k, Max, classes) {
            const T y = z[k] / sum;
            z[k] = mode == NNX_MODE_DELTA ? (y - t[k]) * scale : y;
        }
        return;
    }
    T total = T(0);
    NNX_FOR_CLASS(k, Max, classes) {
        const T y = head == NNX_HEAD_SIGMOID ? nnx_activate(NNX_ACT_SIGMOID, z[k]) : z[k];
        if (mode == NNX_MODE_OUTPUT) {
            z[k] = y;
        } else if (mode == NNX_MODE_DELTA) {
            T d = y - t[k];
            if (head == NNX_HEAD_SIGMOID) d *= nnx_activation_grad(NNX_ACT_SIGMOID, y);
            z[k] = d * scale;
        } else {
            const T diff = y - t[k];
            total += diff * diff;
        }
    }
    if (mode == NNX_MODE_LOSS) *loss = T(0.5) * total;
}

// One row of the head. The row's logits are the sum of n_parts partial rows
// (stride part_stride) plus the bias b; they are written to out, which is then
// turned in place into the delta or the head output (see nnx_head_logits); in
// LOSS mode *loss gets the row's data loss and out is scratch.
template <typename T>
__device__ void nnx_head_row(const T* parts, int n_parts, long long part_stride, const T* b,
                             const T* t, T* out, T* loss, int classes, int head, T scale, int mode) {
    for (int c = 0; c < classes; ++c) {
        T z = parts[c];
        for (int s = 1; s < n_parts; ++s) z += parts[s * part_stride + c];
        out[c] = z + b[c];
    }
    nnx_head_logits<0>(out, t, loss, classes, head, scale, mode);
}

// p -= lr * (g + l2 * p) in the reference order (l2 = 0 for biases).
template <typename T>
__device__ __forceinline__ void nnx_apply_update(T& p, T g, T lr, T l2) {
    if (l2 != T(0)) g += p * l2;
    g *= -lr;
    p += g;
}

// p -= lr * (g + l2 * p) in the reference order, g being the sum of n_parts
// partial gradients (stride part_stride) taken in order.
template <typename T>
__device__ __forceinline__ void nnx_update_one(T* p, const T* g_parts, int n_parts, long long part_stride,
                                               T lr, T l2) {
    T g = g_parts[0];
    for (int s = 1; s < n_parts; ++s) g += g_parts[s * part_stride];
    nnx_apply_update(*p, g, lr, l2);
}

// Items [0, n_w) update W (with L2), items [n_w, n_w + n_b) update b (without).
template <typename T>
__device__ void nnx_dense_update_items(T* W, const T* dW_parts, long long n_w, T* b, const T* db_parts,
                                       long long n_b, int n_parts, long long part_stride, T lr, T l2,
                                       long long first, long long stride) {
    for (long long i = first; i < n_w + n_b; i += stride) {
        if (i < n_w) {
            nnx_update_one(W + i, dW_parts + i, n_parts, part_stride, lr, l2);
        } else {
            nnx_update_one(b + (i - n_w), db_parts + (i - n_w), n_parts, part_stride, lr, T(0));
        }
    }
}

#endif  // NNX_COMMON_CUH
