// rmsnorm.cu — RMSNorm forward and backward (fp32 statistics, F32 or BF16 rows).
//
// Forward: one block per row. Backward: each block walks a contiguous range of rows (one row at
// a time, the whole block on it) and keeps its partial weight gradient per column in shared
// memory, adding it to the F32 weight gradient once at the end: one atomic per column per block
// instead of one per element.
//   y = x * r * w,  r = 1/sqrt(mean(x^2) + eps)
//   dx = r * (w*dy) - x * r^3 * mean(w*dy*x),   dw += dy * x * r
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

constexpr int kThreads = 256;

template <class T, class W>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const W* weight,
                                       int64_t dim, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    const float v = to_float(xr[j]);
    sum += v * v;
  }
  sum = block_sum(sum, scratch);
  const float r = rsqrtf(sum / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  T* yr = out + row * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
    yr[j] = from_float<T>(to_float(xr[j]) * r * to_float(weight[j]));
}

template <class T, class W>
__global__ void rmsnorm_backward_kernel(T* dx, float* dweight, const T* dout, const T* x,
                                        const W* weight, const float* rstd, int64_t rows,
                                        int64_t dim, int64_t rows_per_block) {
  extern __shared__ float dweight_partial[];  // [dim]
  __shared__ float scratch[32];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dweight_partial[j] = 0.f;
  const int64_t first = blockIdx.x * rows_per_block;
  const int64_t last = min(rows, first + rows_per_block);
  for (int64_t row = first; row < last; ++row) {
    const T* xr = x + row * dim;
    const T* dyr = dout + row * dim;
    const float r = rstd[row];
    float dot = 0.f;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
      dot += to_float(dyr[j]) * to_float(weight[j]) * to_float(xr[j]);
    dot = block_sum(dot, scratch);
    const float coef = dot / static_cast<float>(dim) * r * r * r;
    T* dxr = dx + row * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      const float xv = to_float(xr[j]), dy = to_float(dyr[j]);
      dxr[j] = from_float<T>(to_float(dxr[j]) + r * dy * to_float(weight[j]) - xv * coef);
      dweight_partial[j] += dy * xv * r;
    }
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(dweight + j, dweight_partial[j]);
}

}  // namespace

void rmsnorm_forward(DType dtype, void* out, float* rstd, const void* x, DType weight_dtype,
                     const void* weight, int64_t rows, int64_t dim, float eps,
                     cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T, SF_DISPATCH_FLOAT(weight_dtype, W,
      rmsnorm_forward_kernel<T, W><<<rows, kThreads, 0, stream>>>(
          static_cast<T*>(out), rstd, static_cast<const T*>(x), static_cast<const W*>(weight),
          dim, eps)));
  SF_CUDA_LAUNCH_CHECK("rmsnorm_forward");
}

void rmsnorm_backward(DType dtype, void* dx, float* dweight, const void* dout, const void* x,
                      DType weight_dtype, const void* weight, const float* rstd, int64_t rows,
                      int64_t dim, cudaStream_t stream) {
  if (rows == 0) return;
  const int64_t blocks = rows < 132 * 4 ? rows : 132 * 4;
  const int64_t rows_per_block = (rows + blocks - 1) / blocks;
  const int64_t grid = (rows + rows_per_block - 1) / rows_per_block;
  const size_t shared = static_cast<size_t>(dim) * sizeof(float);
  SF_DISPATCH_FLOAT(dtype, T, SF_DISPATCH_FLOAT(weight_dtype, W, {
    auto kernel = rmsnorm_backward_kernel<T, W>;
    if (shared > 48 * 1024)
      SF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(shared)));
    kernel<<<grid, kThreads, shared, stream>>>(
        static_cast<T*>(dx), dweight, static_cast<const T*>(dout), static_cast<const T*>(x),
        static_cast<const W*>(weight), rstd, rows, dim, rows_per_block);
  }));
  SF_CUDA_LAUNCH_CHECK("rmsnorm_backward");
}

}  // namespace sf::cuda
