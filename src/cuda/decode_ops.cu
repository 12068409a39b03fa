// decode_ops.cu — the incremental-decoding kernels: key/value cache writes (one row per sequence,
// or a prefill's range of positions), attention of one query per sequence over its cache (ring
// slots j % C, fp32 softmax), and one decode step of attention fused (RoPE, cache write,
// attention).
//
// attention_decode (the unfused operation, kept as the tests' second opinion): one block per
// (sequence, query head); the block's threads split the keys for the scores (one warp per key,
// lanes over head_dim), then the head_dim outputs. Scores live in dynamic shared memory (C
// floats), so C is bounded by the shared-memory limit. attention_step (the decoder's): see its
// section below — split over blocks, online softmax, no bound on C.
#include <algorithm>

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/rope.cuh"

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

// ---- one decode step of attention (Backend::attention_step) ----------------------------------
//
// Memory-bound at batch 1: the keys and values of the cache are read once, by many blocks at
// once. Grid (rows * q_heads, splits): block (r, h, s) takes the keys of chunk s of row r's
// visible range [key_begin, key_end) for query head h, in tiles of kStepTile keys:
//   * every thread scores one key of the tile (its whole key row in 16-byte loads, the rotated
//     query from shared memory), the block takes the tile's max and sum (online softmax:
//     running max m and sum l, the accumulators rescaled when m grows);
//   * each warp then adds p_j * v_j for every kStepWarps-th key of the tile, its lanes over
//     head_dim (dims lane, lane + 32, ...: coalesced rows);
//   * the warps' accumulators are summed; with one split the block writes the output, else its
//     (m, l, acc[head_dim]) go to `partials`, and the last split of (r, h) to finish (counted
//     in `counters`) merges them (merge_splits) and writes the output: one launch per step.
// The split count is fixed by the cache's capacity (not the current length), so a recorded step
// (CUDA graph) has one launch shape for every position; chunks past the visible range return
// at once. Each block rotates the query and the new key itself; the new key and value are read
// from shared memory for their position, and the block (r, first head of its kv group, split
// 0) writes them into the cache slot, which no block reads (it held a position the row no
// longer sees), so the blocks need no ordering among themselves. Launched as a dependent launch
// (dependent_launch.cuh): the cached rows a thread reads first are prefetched into L2 before
// the wait for the kernel that wrote q, k and v.
constexpr int kStepThreads = 128;
constexpr int kStepTile = kStepThreads;  // one key per thread per tile
constexpr int kStepWarps = kStepThreads / 32;
constexpr int kStepMaxHeadDim = kAttentionStepMaxHeadDim;  // accumulators: / 32 per lane
constexpr int kStepChunk = 256;          // keys per split when the workspace allows

template <class T, bool kVector>
__device__ __forceinline__ float key_dot(const T* key, const float* q, int64_t head_dim) {
  float dot = 0.f;
  if constexpr (kVector) {
    constexpr int N = 16 / sizeof(T);  // 8 BF16 or 4 F32 per 16-byte load
    for (int64_t d = 0; d < head_dim; d += N) {
      const Pack<T, N> k = load_pack<N>(key + d);
#pragma unroll
      for (int i = 0; i < N; ++i) dot += q[d + i] * to_float(k.v[i]);
    }
  } else {
    for (int64_t d = 0; d < head_dim; ++d) dot += q[d] * to_float(key[d]);
  }
  return dot;
}

__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// The splits' partial results (m, l, acc[head_dim]) of one (row, head) merged into its output:
// threads over head_dim. Empty splits (m = -inf, l = 0) weigh nothing; a row with no visible key
// gets zeros. The partials are read through L2 (__ldcg): other blocks wrote them.
template <class T>
__device__ __forceinline__ void merge_splits(T* out, const float* partials, int64_t splits,
                                             int64_t head_dim) {
  float m = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) m = fmaxf(m, __ldcg(partials + s * (head_dim + 2)));
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float total = 0.f, l = 0.f;
    if (m > -INFINITY)
      for (int64_t s = 0; s < splits; ++s) {
        const float* part = partials + s * (head_dim + 2);
        const float weight = __expf(__ldcg(part) - m);
        l += weight * __ldcg(part + 1);
        total += weight * __ldcg(part + 2 + d);
      }
    out[d] = from_float<T>(l > 0.f ? total / l : 0.f);
  }
}

template <class T, bool kVector>
__global__ void __launch_bounds__(kStepThreads)
    attention_step_kernel(T* out, float* partials, unsigned* counters, const T* q, const T* k_new, const T* v_new,
                          T* k_cache, T* v_cache, const int32_t* position,
                          const int32_t* key_position, const int32_t* slot,
                          const int32_t* key_begin, const int32_t* key_end, int64_t capacity,
                          int64_t q_heads, int64_t kv_heads, int64_t head_dim, int64_t chunk,
                          double log_theta, bool rope_q, bool rope_k) {
  __shared__ float qs[kStepMaxHeadDim], ks[kStepMaxHeadDim], vs[kStepMaxHeadDim];
  __shared__ float p_tile[kStepTile];
  __shared__ float acc_warps[kStepWarps][kStepMaxHeadDim];
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x / q_heads, h = blockIdx.x % q_heads;
  const int64_t group = q_heads / kv_heads, kvh = h / group;
  const int64_t half = head_dim / 2;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  auto cache_row = [&](int64_t j) {  // element offset of position j's row in the caches
    return ((row * capacity + j % capacity) * kv_heads + kvh) * head_dim;
  };
  const int64_t fresh = key_position[row];
  const int64_t first = key_begin[row] + blockIdx.y * chunk;
  const int64_t last = min(static_cast<int64_t>(key_end[row]), first + chunk);
  // Before waiting for the kernel that wrote q, k and v: this thread's first cached key and
  // value rows into L2 (positions before this step, which no kernel of the step writes).
  if (first + threadIdx.x < last && first + threadIdx.x != fresh) {
    const int64_t at = cache_row(first + threadIdx.x);
    for (int64_t d = 0; d < head_dim; d += 128 / sizeof(T)) {
      prefetch_l2(k_cache + at + d);
      prefetch_l2(v_cache + at + d);
    }
  }
  dependency_wait();
  dependents_may_start();
  const T* qh = q + (row * q_heads + h) * head_dim;
  const T* kh = k_new + (row * kv_heads + kvh) * head_dim;
  const T* vh = v_new + (row * kv_heads + kvh) * head_dim;
  const bool writer = h % group == 0 && blockIdx.y == 0;
  const int64_t row_slot = (row * capacity + slot[row]) * kv_heads + kvh;
  for (int64_t m = threadIdx.x; m < half; m += blockDim.x) {
    float c = 1.f, s = 0.f;
    const float q0 = to_float(qh[2 * m]), q1 = to_float(qh[2 * m + 1]);
    if (rope_q) rotation(static_cast<double>(position[row]), m, head_dim, log_theta, 1.f, c, s);
    // The rotated query rounded as a stored one would be (the unfused path stores it).
    qs[2 * m] = to_float(from_float<T>(q0 * c - q1 * s));
    qs[2 * m + 1] = to_float(from_float<T>(q0 * s + q1 * c));
    c = 1.f;
    s = 0.f;
    const float k0 = to_float(kh[2 * m]), k1 = to_float(kh[2 * m + 1]);
    if (rope_k) rotation(static_cast<double>(key_position[row]), m, head_dim, log_theta, 1.f, c, s);
    const T r0 = from_float<T>(k0 * c - k1 * s), r1 = from_float<T>(k0 * s + k1 * c);
    ks[2 * m] = to_float(r0);
    ks[2 * m + 1] = to_float(r1);
    if (writer) {
      k_cache[row_slot * head_dim + 2 * m] = r0;
      k_cache[row_slot * head_dim + 2 * m + 1] = r1;
    }
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    vs[d] = to_float(vh[d]);
    if (writer) v_cache[row_slot * head_dim + d] = vh[d];
  }
  __syncthreads();

  const float scale = rsqrtf(static_cast<float>(head_dim));
  float m_run = -INFINITY, l_run = 0.f;
  float acc[kStepMaxHeadDim / 32];
#pragma unroll
  for (int i = 0; i < kStepMaxHeadDim / 32; ++i) acc[i] = 0.f;
  for (int64_t tile = first; tile < last; tile += kStepTile) {
    const int64_t n = min(static_cast<int64_t>(kStepTile), last - tile);
    float score = -INFINITY;
    if (threadIdx.x < n) {
      const int64_t j = tile + threadIdx.x;
      const float dot = j == fresh ? key_dot<float, false>(ks, qs, head_dim)
                                   : key_dot<T, kVector>(k_cache + cache_row(j), qs, head_dim);
      score = dot * scale;
    }
    const float m_new = fmaxf(m_run, block_max(score, scratch));
    const float p = threadIdx.x < n ? __expf(score - m_new) : 0.f;
    p_tile[threadIdx.x] = p;
    const float tile_sum = block_sum(p, scratch);  // its barriers also publish p_tile
    const float rescale = __expf(m_run - m_new);   // 0 on the first tile (m_run = -inf)
    l_run = l_run * rescale + tile_sum;
    m_run = m_new;
#pragma unroll
    for (int i = 0; i < kStepMaxHeadDim / 32; ++i) acc[i] *= rescale;
    for (int64_t k = warp; k < n; k += kStepWarps) {
      const int64_t j = tile + k;
      const float pk = p_tile[k];
      if (j == fresh) {
#pragma unroll
        for (int i = 0; i < kStepMaxHeadDim / 32; ++i)
          if (lane + 32 * i < head_dim) acc[i] += pk * vs[lane + 32 * i];
      } else {
        const T* value = v_cache + cache_row(j);
#pragma unroll
        for (int i = 0; i < kStepMaxHeadDim / 32; ++i)
          if (lane + 32 * i < head_dim) acc[i] += pk * to_float(value[lane + 32 * i]);
      }
    }
    __syncthreads();  // p_tile is rewritten by the next tile
  }
#pragma unroll
  for (int i = 0; i < kStepMaxHeadDim / 32; ++i)
    if (lane + 32 * i < head_dim) acc_warps[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  const int64_t head_row = row * q_heads + h;
  const int64_t splits = gridDim.y;
  float* const head_partials = partials + head_row * splits * (head_dim + 2);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    float total = 0.f;
    for (int w = 0; w < kStepWarps; ++w) total += acc_warps[w][d];
    if (splits == 1) {
      out[head_row * head_dim + d] = from_float<T>(l_run > 0.f ? total / l_run : 0.f);
    } else {
      float* partial = head_partials + blockIdx.y * (head_dim + 2);
      partial[2 + d] = total;
      if (d == 0) {
        partial[0] = m_run;
        partial[1] = l_run;
      }
    }
  }
  if (splits == 1) return;
  // The last split to finish for this (row, head) merges them all (the threadFenceReduction
  // pattern): its partials are published by the fence before the count, and the merging
  // block reads the others' through L2. It resets the count for the next launch.
  __shared__ bool merges;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) merges = atomicAdd(&counters[head_row], 1u) == splits - 1;
  __syncthreads();
  if (!merges) return;
  __threadfence();
  merge_splits(out + head_row * head_dim, head_partials, splits, head_dim);
  if (threadIdx.x == 0) counters[head_row] = 0;
}

}  // namespace

void attention_step(DType dtype, void* out, const void* q, const void* k_new, const void* v_new,
                    void* k_cache, void* v_cache, const int32_t* position,
                    const int32_t* key_position, const int32_t* slot, const int32_t* key_begin,
                    const int32_t* key_end, int64_t rows, int64_t capacity, int64_t q_heads,
                    int64_t kv_heads, int64_t head_dim, double theta, bool rope_q, bool rope_k,
                    const AttentionStepWorkspace& workspace, cudaStream_t stream) {
  if (rows == 0) return;  // (head_dim <= kStepMaxHeadDim: checked by the backend)
  // As many splits of kStepChunk keys as the capacity needs and the workspace holds.
  const int64_t per_split = rows * q_heads * (head_dim + 2);
  int64_t splits = (capacity + kStepChunk - 1) / kStepChunk;
  const bool room = workspace.partials && workspace.counters && rows * q_heads <= workspace.counter_count;
  splits = std::max<int64_t>(1, std::min(splits, room ? workspace.partial_floats / per_split : 1));
  if (splits > 65535) splits = 65535;  // the grid's y limit
  const int64_t chunk = (capacity + splits - 1) / splits;
  SF_DISPATCH_FLOAT(dtype, T, {
    const bool vector = head_dim % (16 / sizeof(T)) == 0 && all_aligned(16, k_cache);
    auto kernel = vector ? attention_step_kernel<T, true> : attention_step_kernel<T, false>;
    launch_dependent(kernel, dim3(static_cast<unsigned>(rows * q_heads), static_cast<unsigned>(splits)),
                     dim3(kStepThreads), 0, stream, static_cast<T*>(out), workspace.partials,
                     workspace.counters, static_cast<const T*>(q), static_cast<const T*>(k_new),
                     static_cast<const T*>(v_new), static_cast<T*>(k_cache),
                     static_cast<T*>(v_cache), position, key_position, slot, key_begin, key_end,
                     capacity, q_heads, kv_heads, head_dim, chunk, log(theta), rope_q, rope_k);
    SF_CUDA_LAUNCH_CHECK("attention_step");
  });
}

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
