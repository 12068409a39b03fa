// swiglu.cu — the SwiGLU gate silu(gate) * up, forward and backward, elementwise in fp32.
//   out = g * s(g) * u, s = sigmoid;  dg = dout * u * s(g) * (1 + g * (1 - s(g))),  du = dout * g * s(g)
// Each thread moves V consecutive elements per access (V = 8 when the length and the pointers
// allow 16/32-byte vectors, else 1): these passes are pure memory traffic. The backward's
// outputs may be row-strided (the model packs d_gate|d_up as one [rows, 2F] matrix).
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

constexpr int kVec = 8;

template <class T, int V>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * V; i < n;
       i += int64_t(gridDim.x) * blockDim.x * V) {
    const Pack<T, V> g = load_pack<V>(gate + i), u = load_pack<V>(up + i);
    Pack<T, V> y;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float gj = to_float(g.v[j]);
      y.v[j] = from_float<T>(gj * sigmoid(gj) * to_float(u.v[j]));
    }
    store_pack(out + i, y);
  }
}

// Element i = (row, col) of the inputs goes to row * out_stride + col of the outputs (cols % V
// == 0, so a vector never spans two rows).
template <class T, int V>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up,
                                       int64_t n, int64_t cols, int64_t out_stride) {
  for (int64_t i = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * V; i < n;
       i += int64_t(gridDim.x) * blockDim.x * V) {
    const int64_t row = i / cols, o = i + row * (out_stride - cols);
    const Pack<T, V> g = load_pack<V>(gate + i), u = load_pack<V>(up + i), dy = load_pack<V>(dout + i);
    Pack<T, V> dg, du;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float gj = to_float(g.v[j]), uj = to_float(u.v[j]), dyj = to_float(dy.v[j]);
      const float s = sigmoid(gj);
      dg.v[j] = from_float<T>(dyj * uj * s * (1.f + gj * (1.f - s)));
      du.v[j] = from_float<T>(dyj * gj * s);
    }
    store_pack(dgate + o, dg);
    store_pack(dup + o, du);
  }
}

}  // namespace

void swiglu_forward(DType dtype, void* out, const void* gate, const void* up, int64_t n,
                    cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(dtype, T, {
    auto* o = static_cast<T*>(out);
    auto* g = static_cast<const T*>(gate);
    auto* u = static_cast<const T*>(up);
    if (n % kVec == 0 && all_aligned(sizeof(Pack<T, kVec>), out, gate, up))
      swiglu_forward_kernel<T, kVec><<<blocks_for(n / kVec, 256), 256, 0, stream>>>(o, g, u, n);
    else
      swiglu_forward_kernel<T, 1><<<blocks_for(n, 256), 256, 0, stream>>>(o, g, u, n);
  });
  SF_CUDA_LAUNCH_CHECK("swiglu_forward");
}

void swiglu_backward(DType dtype, void* dgate, void* dup, const void* dout, const void* gate,
                     const void* up, int64_t rows, int64_t cols, cudaStream_t stream,
                     int64_t out_stride) {
  const int64_t n = rows * cols;
  if (n == 0) return;
  if (out_stride == 0) out_stride = cols;
  SF_DISPATCH_FLOAT(dtype, T, {
    auto* dg = static_cast<T*>(dgate);
    auto* du = static_cast<T*>(dup);
    auto* dy = static_cast<const T*>(dout);
    auto* g = static_cast<const T*>(gate);
    auto* u = static_cast<const T*>(up);
    if (cols % kVec == 0 && out_stride % kVec == 0 &&
        all_aligned(sizeof(Pack<T, kVec>), dgate, dup, dout, gate, up))
      swiglu_backward_kernel<T, kVec><<<blocks_for(n / kVec, 256), 256, 0, stream>>>(
          dg, du, dy, g, u, n, cols, out_stride);
    else
      swiglu_backward_kernel<T, 1><<<blocks_for(n, 256), 256, 0, stream>>>(dg, du, dy, g, u, n,
                                                                           cols, out_stride);
  });
  SF_CUDA_LAUNCH_CHECK("swiglu_backward");
}

}  // namespace sf::cuda
