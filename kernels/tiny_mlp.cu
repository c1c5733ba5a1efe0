// Fused kernels for one-hidden-layer networks whose input and output are
// narrow (at most NNX_TINY_MAX_WIDTH wide), whatever the hidden width H: the
// N x H activations are recomputed where needed and never stored.
//
// A pass is: logits (partial sums over slices of H), the head per row (the
// dense_ops kernel nnx_head_rows or its device function), gradients (partial
// sums over slices of the samples, one item per hidden unit and slice) and the
// update, which adds the slices in order. nnx_tiny_train runs whole passes in
// one thread block for networks small enough that launches would dominate.
#include "nnx_common.cuh"

// Partial logits of sample n over hidden units [j0, j1).
template <typename T>
__device__ void nnx_tiny_logits_item(const T* X, const T* W1, const T* b1, const T* W2, T* part, int n, int d,
                                     int h, int c, int j0, int j1, int act) {
    T acc[NNX_TINY_MAX_WIDTH];
    for (int k = 0; k < c; ++k) acc[k] = T(0);
    const T* x = X + (long long)n * d;
    for (int j = j0; j < j1; ++j) {
        T z = T(0);
        for (int i = 0; i < d; ++i) z += x[i] * W1[(long long)i * h + j];
        const T a = nnx_activate(act, z + b1[j]);
        for (int k = 0; k < c; ++k) acc[k] += a * W2[(long long)j * c + k];
    }
    for (int k = 0; k < c; ++k) part[k] = acc[k];
}

template <typename T>
__device__ void nnx_tiny_logits_items(const T* X, const T* W1, const T* b1, const T* W2, T* parts, int n, int d,
                                      int h, int c, int slices, int act, long long first, long long stride) {
    const int width = (h + slices - 1) / slices;
    for (long long item = first; item < (long long)slices * n; item += stride) {
        const int s = (int)(item / n), row = (int)(item % n);
        const int j0 = s * width, j1 = min(h, j0 + width);
        nnx_tiny_logits_item(X, W1, b1, W2, parts + item * c, row, d, h, c, j0, j1, act);
    }
}

// Gradient contributions of samples [n0, n1) to hidden unit j, written to
// the slice's block of grad_parts laid out as dW1 | db1 | dW2 | db2.
template <typename T>
__device__ void nnx_tiny_grads_item(const T* X, const T* W1, const T* b1, const T* W2, const T* delta, T* g,
                                    int d, int h, int c, int j, int n0, int n1, int act) {
    T dw1[NNX_TINY_MAX_WIDTH], dw2[NNX_TINY_MAX_WIDTH], db2[NNX_TINY_MAX_WIDTH];
    T db1 = T(0);
    for (int k = 0; k < NNX_TINY_MAX_WIDTH; ++k) dw1[k] = dw2[k] = db2[k] = T(0);
    for (int r = n0; r < n1; ++r) {
        const T* x = X + (long long)r * d;
        const T* e = delta + (long long)r * c;
        T z = T(0);
        for (int i = 0; i < d; ++i) z += x[i] * W1[(long long)i * h + j];
        const T a = nnx_activate(act, z + b1[j]);
        T back = T(0);
        for (int k = 0; k < c; ++k) back += e[k] * W2[(long long)j * c + k];
        const T dz = back * nnx_activation_grad(act, a);
        for (int i = 0; i < d; ++i) dw1[i] += x[i] * dz;
        db1 += dz;
        for (int k = 0; k < c; ++k) {
            dw2[k] += a * e[k];
            db2[k] += e[k];
        }
    }
    const long long dh = (long long)d * h;
    for (int i = 0; i < d; ++i) g[(long long)i * h + j] = dw1[i];
    g[dh + j] = db1;
    for (int k = 0; k < c; ++k) g[dh + h + (long long)j * c + k] = dw2[k];
    if (j == 0) {
        for (int k = 0; k < c; ++k) g[dh + h + (long long)h * c + k] = db2[k];
    }
}

template <typename T>
__device__ void nnx_tiny_grads_items(const T* X, const T* W1, const T* b1, const T* W2, const T* delta,
                                     T* grad_parts, int n, int d, int h, int c, int slices, int act,
                                     long long first, long long stride) {
    const int rows = (n + slices - 1) / slices;
    const long long size = (long long)d * h + h + (long long)h * c + c;
    for (long long item = first; item < (long long)slices * h; item += stride) {
        const int s = (int)(item / h), j = (int)(item % h);
        const int n0 = s * rows, n1 = min(n, n0 + rows);
        nnx_tiny_grads_item(X, W1, b1, W2, delta, grad_parts + s * size, d, h, c, j, n0, n1, act);
    }
}

template <typename T>
__global__ void nnx_tiny_logits(const T* X, const T* W1, const T* b1, const T* W2, T* parts, int n, int d, int h,
                                int c, int slices, int act) {
    nnx_tiny_logits_items(X, W1, b1, W2, parts, n, d, h, c, slices, act, nnx_first(), nnx_stride());
}

template <typename T>
__global__ void nnx_tiny_grads(const T* X, const T* W1, const T* b1, const T* W2, const T* delta, T* grad_parts,
                               int n, int d, int h, int c, int slices, int act) {
    nnx_tiny_grads_items(X, W1, b1, W2, delta, grad_parts, n, d, h, c, slices, act, nnx_first(), nnx_stride());
}

// `passes` full passes in one launch of ONE thread block: the phases are
// separated by __syncthreads(), which also makes the block's global writes
// visible to the next phase. Launching more than one block is a bug.
template <typename T>
__global__ void nnx_tiny_train(const T* X, const T* targets, T* W1, T* b1, T* W2, T* b2, T* parts, T* delta,
                               T* grad_parts, int n, int d, int h, int c, int slices_h, int slices_n, int act,
                               int head, T scale, T lr, T l2, int passes) {
    const long long first = threadIdx.x, stride = blockDim.x;
    const long long size = (long long)d * h + h + (long long)h * c + c;
    const long long dh = (long long)d * h;
    for (int pass = 0; pass < passes; ++pass) {
        nnx_tiny_logits_items(X, W1, b1, W2, parts, n, d, h, c, slices_h, act, first, stride);
        __syncthreads();
        for (long long r = first; r < n; r += stride) {
            nnx_head_row(parts + r * c, slices_h, (long long)n * c, b2, targets + r * c, delta + r * c,
                         delta + r * c, c, head, scale, (int)NNX_MODE_DELTA);
        }
        __syncthreads();
        nnx_tiny_grads_items(X, W1, b1, W2, delta, grad_parts, n, d, h, c, slices_n, act, first, stride);
        __syncthreads();
        nnx_dense_update_items(W1, grad_parts, dh, b1, grad_parts + dh, (long long)h, slices_n, size, lr, l2,
                               first, stride);
        nnx_dense_update_items(W2, grad_parts + dh + h, (long long)h * c, b2, grad_parts + dh + h + (long long)h * c,
                               (long long)c, slices_n, size, lr, l2, first, stride);
        __syncthreads();
    }
}
