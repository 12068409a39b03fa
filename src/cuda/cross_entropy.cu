// cross_entropy.cu — softmax cross-entropy over the vocabulary, fused: the F32 or BF16 logits
// are read in fp32 registers and never materialised as a full fp32 [rows, V] tensor.
//
// One kernel, one block per row, does any of: the loss (lse - logit[target]), the gradient
// scale * (softmax - onehot), or both. Pass 1 reads the row once with an online max/sum of
// exponentials; pass 2 writes the gradient. When both are wanted (training's forward) and the
// row fits in shared memory (BF16 rows up to ~110k entries), pass 1 also keeps the row there, so
// the logits are read from device memory once and the gradient written once — the least traffic
// a loss + gradient can have. Rows with target -1 get loss 0 and a zero gradient.
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

constexpr int kThreads = 512;

// V: elements per access (8 when the row length and pointers allow vectors, else 1).
// kCached: pass 1 keeps the row in (dynamic) shared memory for pass 2.
template <class T, int V, bool kCached>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(float* losses, unsigned long long* counted, T* dlogits, const T* logits,
                         const int32_t* targets, int64_t vocab, float scale) {
  extern __shared__ __align__(16) unsigned char row_cache_bytes[];
  T* row_cache = reinterpret_cast<T*>(row_cache_bytes);
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int32_t target = targets[r];
  const int64_t vecs = vocab / V;
  T* drow = dlogits ? dlogits + r * vocab : nullptr;
  if (target < 0) {
    if (losses && threadIdx.x == 0) losses[r] = 0.f;
    if (drow) {
      Pack<T, V> zero;
#pragma unroll
      for (int j = 0; j < V; ++j) zero.v[j] = from_float<T>(0.f);
      for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) store_pack(drow + c * V, zero);
    }
    return;
  }
  const T* row = logits + r * vocab;
  // Pass 1: this thread's running max and sum of exp(x - max) over its elements.
  // kUnroll vectors are loaded before any is used: more reads in flight per thread.
  constexpr int kUnroll = 4;
  float max_v = -INFINITY, sum = 0.f;
  auto accumulate = [&](const Pack<T, V>& p) {
    float m = to_float(p.v[0]);
#pragma unroll
    for (int j = 1; j < V; ++j) m = fmaxf(m, to_float(p.v[j]));
    if (m > max_v) {
      sum = max_v == -INFINITY ? 0.f : sum * __expf(max_v - m);
      max_v = m;
    }
#pragma unroll
    for (int j = 0; j < V; ++j) sum += __expf(to_float(p.v[j]) - max_v);
  };
  int64_t c = threadIdx.x;
  for (; c + (kUnroll - 1) * int64_t(blockDim.x) < vecs; c += kUnroll * int64_t(blockDim.x)) {
    Pack<T, V> p[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) p[u] = load_pack<V>(row + (c + u * blockDim.x) * V);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if constexpr (kCached) store_pack(row_cache + (c + u * blockDim.x) * V, p[u]);
      accumulate(p[u]);
    }
  }
  for (; c < vecs; c += blockDim.x) {
    const Pack<T, V> p = load_pack<V>(row + c * V);
    if constexpr (kCached) store_pack(row_cache + c * V, p);
    accumulate(p);
  }
  const float row_max = block_max(max_v, scratch);
  sum = max_v == -INFINITY ? 0.f : sum * __expf(max_v - row_max);
  const float lse = row_max + logf(block_sum(sum, scratch));  // block_sum syncs: cache complete
  if (losses && threadIdx.x == 0) {
    losses[r] = lse - to_float(kCached ? row_cache[target] : row[target]);
    if (counted) atomicAdd(counted, 1ull);
  }
  if (!drow) return;
  // Pass 2: the gradient.
  for (int64_t c = threadIdx.x; c < vecs; c += blockDim.x) {
    const Pack<T, V> p = load_pack<V>((kCached ? row_cache : row) + c * V);
    Pack<T, V> g;
#pragma unroll
    for (int j = 0; j < V; ++j) {
      const float onehot = c * V + j == target ? 1.f : 0.f;
      g.v[j] = from_float<T>(scale * (__expf(to_float(p.v[j]) - lse) - onehot));
    }
    store_pack(drow + c * V, g);
  }
}

template <class T, int V, bool kCached>
void launch(float* losses, unsigned long long* counted, T* dlogits, const T* logits,
            const int32_t* targets, int64_t rows, int64_t vocab, float scale, size_t shared,
            cudaStream_t stream) {
  auto kernel = cross_entropy_kernel<T, V, kCached>;
  if (shared > 48 * 1024)
    SF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared)));
  kernel<<<rows, kThreads, shared, stream>>>(losses, counted, dlogits, logits, targets, vocab, scale);
}

// Any combination of loss (losses != nullptr) and gradient (dlogits != nullptr); the counted
// rows are added to *counted when it is given.
template <class T>
void cross_entropy(float* losses, unsigned long long* counted, T* dlogits, const T* logits,
                   const int32_t* targets, int64_t rows, int64_t vocab, float scale,
                   cudaStream_t stream) {
  const bool vectors = vocab % 8 == 0 && all_aligned(sizeof(Pack<T, 8>), dlogits, logits);
  int device = 0, shared_limit = 0;
  SF_CUDA_CHECK(cudaGetDevice(&device));
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&shared_limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  const size_t row_bytes = static_cast<size_t>(vocab) * sizeof(T);
  const bool cached = dlogits && losses && vectors &&
                      row_bytes + 1024 <= static_cast<size_t>(shared_limit);
  if (cached) launch<T, 8, true>(losses, counted, dlogits, logits, targets, rows, vocab, scale, row_bytes, stream);
  else if (vectors) launch<T, 8, false>(losses, counted, dlogits, logits, targets, rows, vocab, scale, 0, stream);
  else launch<T, 1, false>(losses, counted, dlogits, logits, targets, rows, vocab, scale, 0, stream);
}

}  // namespace

void cross_entropy_forward(DType dtype, float* losses, int64_t* counted, const void* logits,
                           const int32_t* targets, int64_t rows, int64_t vocab,
                           cudaStream_t stream) {
  SF_CUDA_CHECK(cudaMemsetAsync(counted, 0, sizeof(int64_t), stream));
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    cross_entropy<T>(losses, reinterpret_cast<unsigned long long*>(counted),
                                     nullptr, static_cast<const T*>(logits), targets, rows, vocab,
                                     1.f, stream));
  SF_CUDA_LAUNCH_CHECK("cross_entropy_forward");
}

void cross_entropy_backward(DType dtype, void* dlogits, const void* logits,
                            const int32_t* targets, int64_t rows, int64_t vocab, float scale,
                            cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    cross_entropy<T>(nullptr, nullptr, static_cast<T*>(dlogits),
                                     static_cast<const T*>(logits), targets, rows, vocab, scale,
                                     stream));
  SF_CUDA_LAUNCH_CHECK("cross_entropy_backward");
}

void cross_entropy_forward_backward(DType dtype, float* losses, void* dlogits, const void* logits,
                                    const int32_t* targets, int64_t rows, int64_t vocab,
                                    cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    cross_entropy<T>(losses, nullptr, static_cast<T*>(dlogits),
                                     static_cast<const T*>(logits), targets, rows, vocab, 1.f,
                                     stream));
  SF_CUDA_LAUNCH_CHECK("cross_entropy_forward_backward");
}

}  // namespace sf::cuda
