// Device helpers shared by nnx's CUDA kernels: activation and head math per
// element or per row, the record of one training update, and the optimiser
// step of one parameter.
//
// Every loop over work items is grid-stride (first = global thread id,
// stride = total threads), so the same device function serves a many-block
// launch and the single-block kernel that runs whole passes, and every sum is
// taken in a fixed order (no atomics): the same launch gives the same bits.
//
// The codes the kernels switch on (NNX_ACT_*, NNX_HEAD_*, NNX_OPT_*, NNX_MODE_*)
// and the layout of the update record (NNX_CTR_*, NNX_COEF_*) are not written
// here: cuda_sources.prelude() generates them from the Python tables
// (nnx.network, nnx.optim, cuda_sources) ahead of every source. A code outside
// those tables never reaches a kernel (cuda_program.kernel_args refuses it
// before any launch); were one to, the kernel traps instead of computing.
#ifndef NNX_COMMON_CUH
#define NNX_COMMON_CUH

#ifndef NNX_PRELUDE
#error "compile nnx's CUDA sources through cuda_sources.CudaSource.code(), which adds the generated codes"
#endif

// Threads of the single-block kernel for width W: its registers allow 512
// threads up to width 4 and 256 at width 8 (cuda_plan.one_block_threads).
#define NNX_ONE_BLOCK_THREADS(W) ((W) <= 4 ? 512 : 256)

__device__ __forceinline__ float nnx_exp(float x) { return expf(x); }
__device__ __forceinline__ double nnx_exp(double x) { return exp(x); }
__device__ __forceinline__ float nnx_log(float x) { return logf(x); }
__device__ __forceinline__ double nnx_log(double x) { return log(x); }
__device__ __forceinline__ float nnx_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double nnx_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float nnx_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double nnx_sqrt(double x) { return sqrt(x); }

__device__ __forceinline__ long long nnx_first() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long nnx_stride() {
    return (long long)blockDim.x * gridDim.x;
}

// Reached only by a code outside the generated tables: stop the kernel, compute nothing.
[[noreturn]] __device__ __forceinline__ void nnx_bad_code() {
    __trap();
    __builtin_unreachable();
}

// f(z), written as the reference math does (sigmoid = 1 / (1 + exp(-z))).
template <typename T>
__device__ __forceinline__ T nnx_activate(int act, T z) {
    switch (act) {
        case NNX_ACT_SIGMOID: return T(1) / (T(1) + nnx_exp(-z));
        case NNX_ACT_TANH: return nnx_tanh(z);
        case NNX_ACT_RELU: return z < T(0) ? T(0) : z;  // NaN passes through
        case NNX_ACT_IDENTITY: return z;
        default: nnx_bad_code();
    }
}

// f'(z) from the layer output a = f(z), as the tutorials write it.
template <typename T>
__device__ __forceinline__ T nnx_activation_grad(int act, T a) {
    switch (act) {
        case NNX_ACT_SIGMOID: return a * (T(1) - a);
        case NNX_ACT_TANH: return T(1) - a * a;
        case NNX_ACT_RELU: return a > T(0) ? T(1) : T(0);
        case NNX_ACT_IDENTITY: return T(1);
        default: nnx_bad_code();
    }
}

// The output of an elementwise head (sigmoid or identity) from its logit.
template <typename T>
__device__ __forceinline__ T nnx_head_output(int head, T z) {
    switch (head) {
        case NNX_HEAD_SIGMOID: return nnx_activate(NNX_ACT_SIGMOID, z);
        case NNX_HEAD_IDENTITY: return z;
        default: nnx_bad_code();
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
        const T y = nnx_head_output(head, z[k]);
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

// ------------------------------------------------------------------ updates
// The record of one update (cuda_program.UpdateRecord): counters
// [NNX_CTR_NEXT] the next update's index into the interval's learning rates,
// [NNX_CTR_STEP] updates made with the optimiser state (the current one's
// 1-based count once the update has begun), [NNX_CTR_START, NNX_CTR_LEN] the
// batch (start in the interval's sample order, rows); coefficients in T:
// [NNX_COEF_LR], [NNX_COEF_SCALE] the data gradient's factor (1/rows for
// "mean", 1 for "sum"), [NNX_COEF_STEP_SIZE] lr / (1 - beta1^t) and
// [NNX_COEF_ROOT_BC2] sqrt(1 - beta2^t) for Adam, [NNX_COEF_DECAY]
// 1 - lr * weight_decay for AdamW.
//
// base^n for n >= 0 by repeated squaring: at most 2 log2(n) roundings, a few
// ulp from pow(), without the call pow() compiles to (a call makes the
// single-block kernel keep registers in local memory around it).
__device__ __forceinline__ double nnx_powi(double base, long long n) {
    double result = 1.0;
    while (n > 0) {
        if (n & 1) result *= base;
        base *= base;
        n >>= 1;
    }
    return result;
}

// The counters and coefficients of update u (0-based in the interval) at
// optimiser step `step` (1-based). Scalars are computed in float64, as the
// reference computes them in Python, and rounded to T once. `hyper` is the
// optimiser's kernel_hyper() (nnx.optim): sgd [momentum, dampening, nesterov,
// weight_decay], adam and adamw [beta1, beta2, eps, weight_decay, amsgrad],
// rmsprop [alpha, eps, momentum, centered, weight_decay].
template <typename T>
__device__ __forceinline__ void nnx_fill_update(long long u, long long step, const double* lrs,
                                                const long long* bounds, int batched, long long n_full, int mean,
                                                int code, const double* hyper, long long* ctr, T* coef) {
    const double lr = lrs[u];
    const long long start = batched ? bounds[u] : 0;
    const long long len = batched ? bounds[u + 1] - start : n_full;
    ctr[NNX_CTR_STEP] = step;
    ctr[NNX_CTR_START] = start;
    ctr[NNX_CTR_LEN] = len;
    double step_size = lr, root_bc2 = 1.0, decay = 1.0;
    if (code == NNX_OPT_ADAM || code == NNX_OPT_ADAMW) {
        step_size = lr / (1.0 - nnx_powi(hyper[0], step));
        root_bc2 = sqrt(1.0 - nnx_powi(hyper[1], step));
        if (code == NNX_OPT_ADAMW) decay = 1.0 - lr * hyper[3];
    }
    coef[NNX_COEF_LR] = T(lr);
    coef[NNX_COEF_SCALE] = mean ? T(1.0 / (double)len) : T(1);
    coef[NNX_COEF_STEP_SIZE] = T(step_size);
    coef[NNX_COEF_ROOT_BC2] = T(root_bc2);
    coef[NNX_COEF_DECAY] = T(decay);
}

// An optimiser's settings in T, derived from kernel_hyper() in float64 (so
// 1 - beta1 rounds once, as the reference's Python float does).
template <typename T>
struct NnxOptimizer {
    int code;
    T momentum, keep;      // sgd: momentum, 1 - dampening; rmsprop: momentum
    T beta1, beta1c;       // adam: beta1, 1 - beta1
    T beta2, beta2c;       // adam: beta2, 1 - beta2; rmsprop: alpha, 1 - alpha
    T eps, weight_decay;
    bool nesterov, amsgrad, centered;
};

template <typename T>
__device__ __forceinline__ NnxOptimizer<T> nnx_optimizer(int code, const double* h) {
    NnxOptimizer<T> o = {};
    o.code = code;
    switch (code) {
        case NNX_OPT_SGD:
            o.momentum = T(h[0]);
            o.keep = T(1.0 - h[1]);
            o.nesterov = h[2] != 0.0;
            o.weight_decay = T(h[3]);
            break;
        case NNX_OPT_ADAM:
        case NNX_OPT_ADAMW:
            o.beta1 = T(h[0]);
            o.beta1c = T(1.0 - h[0]);
            o.beta2 = T(h[1]);
            o.beta2c = T(1.0 - h[1]);
            o.eps = T(h[2]);
            o.weight_decay = T(h[3]);
            o.amsgrad = h[4] != 0.0;
            break;
        case NNX_OPT_RMSPROP:
            o.beta2 = T(h[0]);
            o.beta2c = T(1.0 - h[0]);
            o.eps = T(h[1]);
            o.momentum = T(h[2]);
            o.centered = h[3] != 0.0;
            o.weight_decay = T(h[4]);
            break;
        default: nnx_bad_code();
    }
    return o;
}

// max as numpy.maximum takes it: NaN in either gives NaN.
template <typename T>
__device__ __forceinline__ T nnx_max_nan(T a, T b) { return (a > b || a != a) ? a : b; }

// One optimiser step of parameter p from g (the objective's gradient, the
// tutorial's L2 already added), in the op order of nnx.optim's reference
// (PyTorch's formulas). s0..s2 are the element's state in slots() order
// (nullptr where the optimiser keeps fewer); step is the 1-based update count
// of this state. Plain SGD keeps the tutorials' g *= -lr; p += g.
template <typename T>
__device__ __forceinline__ void nnx_optimizer_step(const NnxOptimizer<T>& o, const T* coef, long long step, T& p,
                                                   T g, T* s0, T* s1, T* s2) {
    switch (o.code) {
        case NNX_OPT_SGD: {
            if (o.weight_decay != T(0)) g = g + o.weight_decay * p;
            if (o.momentum != T(0)) {
                const T buf = step == 1 ? g : o.momentum * *s0 + o.keep * g;
                *s0 = buf;
                g = o.nesterov ? g + o.momentum * buf : buf;
            }
            g *= -coef[NNX_COEF_LR];
            p += g;
            return;
        }
        case NNX_OPT_ADAM:
        case NNX_OPT_ADAMW: {
            if (o.code == NNX_OPT_ADAMW) {
                p = p * coef[NNX_COEF_DECAY];
            } else if (o.weight_decay != T(0)) {
                g = g + o.weight_decay * p;
            }
            const T m = o.beta1 * *s0 + o.beta1c * g;
            T v = o.beta2 * *s1 + o.beta2c * (g * g);
            *s0 = m;
            *s1 = v;
            if (o.amsgrad) {
                v = nnx_max_nan(*s2, v);
                *s2 = v;
            }
            const T denom = nnx_sqrt(v) / coef[NNX_COEF_ROOT_BC2] + o.eps;
            p = p - coef[NNX_COEF_STEP_SIZE] * (m / denom);
            return;
        }
        case NNX_OPT_RMSPROP: {
            // slots: square_avg, then momentum_buffer if momentum, then grad_avg if centered
            T* const buf = o.momentum != T(0) ? s1 : nullptr;
            T* const ga = o.centered ? (buf != nullptr ? s2 : s1) : nullptr;
            if (o.weight_decay != T(0)) g = g + o.weight_decay * p;
            const T sq = o.beta2 * *s0 + o.beta2c * (g * g);
            *s0 = sq;
            T avg;
            if (ga != nullptr) {
                const T mean_g = o.beta2 * *ga + o.beta2c * g;
                *ga = mean_g;
                avg = nnx_sqrt(sq - mean_g * mean_g) + o.eps;
            } else {
                avg = nnx_sqrt(sq) + o.eps;
            }
            if (buf != nullptr) {
                const T b = o.momentum * *buf + g / avg;
                *buf = b;
                p = p - coef[NNX_COEF_LR] * b;
            } else {
                p = p - coef[NNX_COEF_LR] * (g / avg);
            }
            return;
        }
        default: nnx_bad_code();
    }
}

// base + i, or nullptr for a state array the optimiser does not keep.
template <typename T>
__device__ __forceinline__ T* nnx_slot_at(T* base, long long i) {
    return base == nullptr ? nullptr : base + i;
}

// p's update from the sum of n_parts partial gradients (stride part_stride),
// taken in order, plus l2 * p (l2 = 0 for biases), then the optimiser's step.
template <typename T>
__device__ __forceinline__ void nnx_update_one(T* p, const T* g_parts, int n_parts, long long part_stride, T l2,
                                               const NnxOptimizer<T>& o, const T* coef, long long step, T* s0,
                                               T* s1, T* s2) {
    T g = g_parts[0];
    for (int s = 1; s < n_parts; ++s) g += g_parts[s * part_stride];
    if (l2 != T(0)) g += *p * l2;
    nnx_optimizer_step(o, coef, step, *p, g, s0, s1, s2);
}

#endif  // NNX_COMMON_CUH
