// cross_entropy.cu — softmax cross-entropy over the vocabulary, fused: the F32 or BF16 logits
// are read in fp32 registers and never materialised as a full fp32 [rows, V] tensor.
//
// Forward, one block per row: one online max/sum-of-exp pass, loss = lse - logit[target].
// Backward, one block per row: the same pass for lse, then dlogits = scale * (softmax - onehot)
// written once. Rows with target -1 get loss 0 and a zero gradient.
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

constexpr int kThreads = 512;

// log-sum-exp of row `r` of length V, computed by the whole block (every thread gets it).
template <class T>
__device__ float row_logsumexp(const T* row, int64_t vocab, float* scratch) {
  float max_v = -INFINITY, sum = 0.f;
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float v = to_float(row[j]);
    if (v > max_v) {
      sum = sum * __expf(max_v - v) + 1.f;
      max_v = v;
    } else {
      sum += __expf(v - max_v);
    }
  }
  const float block_max_v = block_max(max_v, scratch);
  sum = max_v == -INFINITY ? 0.f : sum * __expf(max_v - block_max_v);
  sum = block_sum(sum, scratch);
  return block_max_v + logf(sum);
}

template <class T>
__global__ void cross_entropy_forward_kernel(float* losses, unsigned long long* counted,
                                             const T* logits, const int32_t* targets,
                                             int64_t vocab) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int32_t target = targets[r];
  if (target < 0) {
    if (threadIdx.x == 0) losses[r] = 0.f;
    return;
  }
  const T* row = logits + r * vocab;
  const float lse = row_logsumexp(row, vocab, scratch);
  if (threadIdx.x == 0) {
    losses[r] = lse - to_float(row[target]);
    atomicAdd(counted, 1ull);
  }
}

template <class T>
__global__ void cross_entropy_backward_kernel(T* dlogits, const T* logits, const int32_t* targets,
                                              int64_t vocab, float scale) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int32_t target = targets[r];
  T* drow = dlogits + r * vocab;
  if (target < 0) {
    for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) drow[j] = from_float<T>(0.f);
    return;
  }
  const T* row = logits + r * vocab;
  const float lse = row_logsumexp(row, vocab, scratch);
  for (int64_t j = threadIdx.x; j < vocab; j += blockDim.x) {
    const float p = __expf(to_float(row[j]) - lse);
    drow[j] = from_float<T>(scale * (p - (j == target ? 1.f : 0.f)));
  }
}

}  // namespace

void cross_entropy_forward(DType dtype, float* losses, int64_t* counted, const void* logits,
                           const int32_t* targets, int64_t rows, int64_t vocab,
                           cudaStream_t stream) {
  SF_CUDA_CHECK(cudaMemsetAsync(counted, 0, sizeof(int64_t), stream));
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    cross_entropy_forward_kernel<T><<<rows, kThreads, 0, stream>>>(
                        losses, reinterpret_cast<unsigned long long*>(counted),
                        static_cast<const T*>(logits), targets, vocab));
  SF_CUDA_LAUNCH_CHECK("cross_entropy_forward");
}

void cross_entropy_backward(DType dtype, void* dlogits, const void* logits,
                            const int32_t* targets, int64_t rows, int64_t vocab, float scale,
                            cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    cross_entropy_backward_kernel<T><<<rows, kThreads, 0, stream>>>(
                        static_cast<T*>(dlogits), static_cast<const T*>(logits), targets, vocab,
                        scale));
  SF_CUDA_LAUNCH_CHECK("cross_entropy_backward");
}

}  // namespace sf::cuda
