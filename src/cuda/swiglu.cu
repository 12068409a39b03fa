// swiglu.cu — the SwiGLU gate silu(gate) * up, forward and backward, elementwise in fp32.
//   out = g * s(g) * u, s = sigmoid;  dg = dout * u * s(g) * (1 + g * (1 - s(g))),  du = dout * g * s(g)
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

template <class T>
__global__ void swiglu_forward_kernel(T* out, const T* gate, const T* up, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]);
    const float s = 1.f / (1.f + __expf(-g));
    out[i] = from_float<T>(g * s * to_float(up[i]));
  }
}

template <class T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dout, const T* gate, const T* up,
                                       int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = to_float(gate[i]), u = to_float(up[i]), dy = to_float(dout[i]);
    const float s = 1.f / (1.f + __expf(-g));
    dgate[i] = from_float<T>(dy * u * s * (1.f + g * (1.f - s)));
    dup[i] = from_float<T>(dy * g * s);
  }
}

}  // namespace

void swiglu_forward(DType dtype, void* out, const void* gate, const void* up, int64_t n,
                    cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    swiglu_forward_kernel<T><<<blocks_for(n, 256), 256, 0, stream>>>(
                        static_cast<T*>(out), static_cast<const T*>(gate),
                        static_cast<const T*>(up), n));
  SF_CUDA_LAUNCH_CHECK("swiglu_forward");
}

void swiglu_backward(DType dtype, void* dgate, void* dup, const void* dout, const void* gate,
                     const void* up, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    swiglu_backward_kernel<T><<<blocks_for(n, 256), 256, 0, stream>>>(
                        static_cast<T*>(dgate), static_cast<T*>(dup),
                        static_cast<const T*>(dout), static_cast<const T*>(gate),
                        static_cast<const T*>(up), n));
  SF_CUDA_LAUNCH_CHECK("swiglu_backward");
}

}  // namespace sf::cuda
