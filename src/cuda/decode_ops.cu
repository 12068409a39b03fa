// decode_ops.cu — the incremental-decoding kernels besides the fused step (attention_step.cu):
// key/value cache writes (one row per sequence, or a prefill's range of positions) and attention
// of one query per sequence over its cache (ring slots j % C, fp32 softmax).
//
// attention_decode (the unfused operation, kept as the tests' second opinion): one block per
// (sequence, query head); the block's threads split the keys for the scores (one warp per key,
// lanes over head_dim), then the head_dim outputs. Scores live in dynamic shared memory (C
// floats), so C is bounded by the shared-memory limit.
#include <algorithm>

#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

template <class T>
__global__ void kv_cache_write_kernel(T* cache, const T* rows, const int32_t* slots,
                                      int64_t capacity, int64_t width) {
  const int64_t b = blockIdx.x;
  T* dst = cache + (b * capacity + slots[b]) * width;
  const T* src = rows + b * width;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) dst[j] = src[j];
}

// Block r writes row skip + r (position first + skip + r) into its ring slot.
template <class T>
__global__ void kv_cache_write_range_kernel(T* cache, const T* rows, int64_t sequence,
                                            int64_t first_position, int64_t skip,
                                            int64_t capacity, int64_t width) {
  const int64_t r = skip + blockIdx.x;
  const int64_t slot = (first_position + r) % capacity;
  T* dst = cache + (sequence * capacity + slot) * width;
  const T* src = rows + r * width;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) dst[j] = src[j];
}

// One block's attention of one query over the keys [begin, end): query(d), key(j, d) and
// value(j, d) give the values as floats; the scores live in `scores` ([end - begin] floats of
// shared memory); the block's threads split the keys for the scores (one warp per key, lanes
// over head_dim), then the head_dim outputs. An empty range writes zeros.
template <class T, class Query, class Key, class Value>
__device__ __forceinline__ void attend(T* o, float* scores, int64_t begin, int64_t end,
                                       int64_t head_dim, Query query, Key key, Value value) {
  __shared__ float scratch[32];
  const float scale = rsqrtf(static_cast<float>(head_dim));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  for (int64_t j = begin + warp; j < end; j += warps) {
    float dot = 0.f;
    for (int64_t d = lane; d < head_dim; d += 32) dot += query(d) * key(j, d);
    dot = warp_sum(dot);
    if (lane == 0) scores[j - begin] = dot * scale;
  }
  __syncthreads();
  float max_v = -INFINITY;
  for (int64_t j = threadIdx.x; j < end - begin; j += blockDim.x) max_v = fmaxf(max_v, scores[j]);
  max_v = block_max(max_v, scratch);
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < end - begin; j += blockDim.x) {
    const float p = __expf(scores[j] - max_v);
    scores[j] = p;
    sum += p;
  }
  sum = block_sum(sum, scratch);  // its leading barrier also publishes scores[]
  const float inv = end > begin ? 1.f / sum : 0.f;
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float acc = 0.f;
    for (int64_t j = begin; j < end; ++j) acc += scores[j - begin] * value(j, d);
    o[d] = from_float<T>(acc * inv);
  }
}

template <class T>
__global__ void attention_decode_kernel(T* out, const T* q, const T* k_cache, const T* v_cache,
                                        const int32_t* key_begin, const int32_t* key_end,
                                        int64_t capacity, int64_t q_heads, int64_t kv_heads,
                                        int64_t head_dim) {
  extern __shared__ float scores[];  // [capacity]
  const int64_t b = blockIdx.x / q_heads, h = blockIdx.x % q_heads;
  const int64_t kvh = h / (q_heads / kv_heads);
  const T* qh = q + (b * q_heads + h) * head_dim;
  auto at = [=](int64_t j) { return ((b * capacity + j % capacity) * kv_heads + kvh) * head_dim; };
  attend(out + (b * q_heads + h) * head_dim, scores, key_begin[b], key_end[b], head_dim,
         [=](int64_t d) { return to_float(qh[d]); },
         [=](int64_t j, int64_t d) { return to_float(k_cache[at(j) + d]); },
         [=](int64_t j, int64_t d) { return to_float(v_cache[at(j) + d]); });
}

}  // namespace

void kv_cache_write(DType dtype, void* cache, const void* rows, const int32_t* slots,
                    int64_t batch, int64_t capacity, int64_t width, cudaStream_t stream) {
  if (batch == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    kv_cache_write_kernel<T><<<batch, 256, 0, stream>>>(
                        static_cast<T*>(cache), static_cast<const T*>(rows), slots, capacity,
                        width));
  SF_CUDA_LAUNCH_CHECK("kv_cache_write");
}

void kv_cache_write_range(DType dtype, void* cache, const void* rows, int64_t sequence,
                          int64_t first_position, int64_t n, int64_t capacity, int64_t width,
                          cudaStream_t stream) {
  const int64_t skip = n > capacity ? n - capacity : 0;  // a ring keeps the last C positions
  if (n - skip <= 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    kv_cache_write_range_kernel<T><<<n - skip, 256, 0, stream>>>(
                        static_cast<T*>(cache), static_cast<const T*>(rows), sequence,
                        first_position, skip, capacity, width));
  SF_CUDA_LAUNCH_CHECK("kv_cache_write_range");
}

void attention_decode(DType dtype, void* out, const void* q, const void* k_cache,
                      const void* v_cache, const int32_t* key_begin, const int32_t* key_end,
                      int64_t batch, int64_t capacity, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim, cudaStream_t stream) {
  if (batch == 0) return;
  const size_t shared = static_cast<size_t>(capacity) * sizeof(float);
  SF_DISPATCH_FLOAT(dtype, T, {
    auto kernel = attention_decode_kernel<T>;
    if (shared > 48 * 1024)
      SF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(shared)));
    kernel<<<batch * q_heads, 256, shared, stream>>>(
        static_cast<T*>(out), static_cast<const T*>(q), static_cast<const T*>(k_cache),
        static_cast<const T*>(v_cache), key_begin, key_end, capacity, q_heads, kv_heads,
        head_dim);
  });
  SF_CUDA_LAUNCH_CHECK("attention_decode");
}

}  // namespace sf::cuda
