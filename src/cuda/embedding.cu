// embedding.cu — token embedding lookup and its gradient (scatter-add into the F32 table
// gradient with atomics: rows with the same token add in any order, so the gradient is exact
// up to fp32 rounding order, not bit-reproducible run to run).
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

template <class T>
__global__ void embedding_forward_kernel(T* out, const int32_t* tokens, const T* table,
                                         int64_t dim) {
  const int64_t row = blockIdx.x;
  const T* src = table + static_cast<int64_t>(tokens[row]) * dim;
  T* dst = out + row * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dst[j] = src[j];
}

template <class T>
__global__ void embedding_backward_kernel(float* dtable, const T* dout, const int32_t* tokens,
                                          int64_t dim) {
  const int64_t row = blockIdx.x;
  float* dst = dtable + static_cast<int64_t>(tokens[row]) * dim;
  const T* src = dout + row * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(dst + j, to_float(src[j]));
}

}  // namespace

void embedding_forward(DType dtype, void* out, const int32_t* tokens, const void* table,
                       int64_t rows, int64_t dim, cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    embedding_forward_kernel<T><<<rows, 256, 0, stream>>>(
                        static_cast<T*>(out), tokens, static_cast<const T*>(table), dim));
  SF_CUDA_LAUNCH_CHECK("embedding_forward");
}

void embedding_backward(float* dtable, DType dout_dtype, const void* dout, const int32_t* tokens,
                        int64_t rows, int64_t dim, cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dout_dtype, T,
                    embedding_backward_kernel<T><<<rows, 256, 0, stream>>>(
                        dtable, static_cast<const T*>(dout), tokens, dim));
  SF_CUDA_LAUNCH_CHECK("embedding_backward");
}

}  // namespace sf::cuda
