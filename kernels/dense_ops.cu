// Fused elementwise work around the cuBLAS products of a dense network.
// Instances: each kernel for T = float and T = double (see cuda_sources.py).
#include "nnx_common.cuh"

// z = f(z + b) in place, z being rows x width (the product x @ W from cuBLAS).
template <typename T>
__global__ void nnx_bias_activation(T* z, const T* b, long long rows, int width, int act) {
    const long long n = rows * width;
    for (long long i = nnx_first(); i < n; i += nnx_stride()) {
        z[i] = nnx_activate(act, z[i] + b[i % width]);
    }
}

// grad *= f'(z), from the layer output a: the incoming gradient fused with f'.
template <typename T>
__global__ void nnx_activation_backward(T* grad, const T* a, long long n, int act) {
    for (long long i = nnx_first(); i < n; i += nnx_stride()) {
        grad[i] *= nnx_activation_grad(act, a[i]);
    }
}

// One thread per row: logits (sum of partial products + bias), then softmax
// + cross-entropy + gradient (or sigmoid / identity with squared error). The
// rows are rows row0.. of a batch of counters[NNX_CTR_LEN] rows; in DELTA mode
// a row past the batch (the padding of a last, smaller minibatch) gets a zero
// delta, so the products over the whole buffer add nothing for it. The delta
// is scaled by coef[NNX_COEF_SCALE].
template <typename T>
__global__ void nnx_head_rows(const T* parts, int n_parts, long long part_stride, const T* b, const T* t,
                              T* out, T* loss, long long rows, long long row0, int classes, int head, int mode,
                              const long long* counters, const T* coef) {
    const long long valid = counters[NNX_CTR_LEN] - row0;
    const T scale = coef[NNX_COEF_SCALE];
    for (long long r = nnx_first(); r < rows; r += nnx_stride()) {
        if (r < valid) {
            nnx_head_row(parts + r * classes, n_parts, part_stride, b, t + r * classes, out + r * classes,
                         loss + r, classes, head, scale, mode);
        } else if (mode == NNX_MODE_DELTA) {
            for (int k = 0; k < classes; ++k) out[r * classes + k] = T(0);
        }
    }
}
