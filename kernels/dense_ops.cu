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
// + cross-entropy + gradient (or sigmoid / identity with squared error).
template <typename T>
__global__ void nnx_head_rows(const T* parts, int n_parts, long long part_stride, const T* b, const T* t,
                              T* out, T* loss, long long rows, int classes, int head, T scale, int mode) {
    for (long long r = nnx_first(); r < rows; r += nnx_stride()) {
        nnx_head_row(parts + r * classes, n_parts, part_stride, b, t + r * classes, out + r * classes,
                     loss + r, classes, head, scale, mode);
    }
}

// Gradient-descent step with L2 on W (not on b) for one layer, one launch.
template <typename T>
__global__ void nnx_dense_update(T* W, const T* dW_parts, long long n_w, T* b, const T* db_parts, long long n_b,
                                 int n_parts, long long part_stride, T lr, T l2) {
    nnx_dense_update_items(W, dW_parts, n_w, b, db_parts, n_b, n_parts, part_stride, lr, l2, nnx_first(),
                           nnx_stride());
}
