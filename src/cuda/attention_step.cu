// attention_step.cu — one decode step of attention, fused (Backend::attention_step): RoPE of the
// query and the new key at their positions, the new key and value into their cache slot, and
// the query's attention over the cache's visible keys [key_begin, key_end) (ring slot j % C).
//
// Memory-bound: at batch 1 a step reads every visible key and value once, a few hundred kB
// per layer, so the time is the latency of those loads unless many are in flight at once.
// Grid (rows * q_heads, splits): block (r, h, s) takes the keys of chunk s (kStepChunk keys) of
// row r's visible range for query head h. Its 128 threads form 16 groups of 8; a group takes
// keys group, group + 16, ... (kKeysPerGroup of them, their key and value rows loaded together
// before any is used), its 8 lanes splitting each row into N-element pieces (16-byte loads
// where head_dim allows; CPL pieces per lane). Each group keeps its own online softmax (running
// max m, sum l, accumulators rescaled when m grows); the block merges its 16 groups through
// shared memory; with one split it writes the output, else its (m, l, acc[head_dim]) go to the
// workspace's partials and the last split of (r, h) to finish (counted in the workspace's
// counters) merges the splits and writes the output, so one launch covers a step.
//
// The split count is fixed by the cache's capacity (not the current length), so a recorded step
// (CUDA graph) has one launch shape for every position; splits past the visible range find no
// key. Each block rotates the query and the new key itself; the new key and value are used from
// shared memory at their position, and block (r, first head of its kv group, split 0) writes
// them into the cache slot, which no block reads (it held a position the row no longer sees),
// so the blocks need no ordering among themselves. Launched as a dependent launch
// (dependent_launch.cuh): the cached rows a group reads are prefetched into L2 before the wait
// for the kernel that wrote q, k and v. fp32 scores, softmax and accumulation; the rotated
// query and key rounded to T as the unfused path stores them.
#include <algorithm>

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/rope.cuh"

namespace sf::cuda {

namespace {

constexpr int kStepThreads = 128;
constexpr int kGroupLanes = 8;                                // lanes per key
constexpr int kStepGroups = kStepThreads / kGroupLanes;       // keys side by side
constexpr int kKeysPerGroup = 4;                              // a group's keys loaded at once
constexpr int kStepChunk = kStepGroups * kKeysPerGroup;       // keys per split
constexpr int kStepMaxHeadDim = static_cast<int>(kAttentionStepMaxHeadDim);

__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// Partial softmax results merged, for one output dimension: parts i = 0..count-1 with running
// max m_of(i), sum l_of(i) and accumulator acc_of(i) weigh exp(m_i - m_max); returns the merged
// (accumulator, sum). Parts that saw no key (m = -inf, l = 0) weigh nothing; with none at all
// (m_max = -inf) both are 0. The one merge of the block's key groups and of the splits.
template <class M, class L, class Acc>
__device__ __forceinline__ float2 merge_parts(int64_t count, float m_max, M m_of, L l_of,
                                              Acc acc_of) {
  float total = 0.f, l = 0.f;
  if (m_max > -INFINITY)
    for (int64_t i = 0; i < count; ++i) {
      const float weight = __expf(m_of(i) - m_max);
      l += weight * l_of(i);
      total += weight * acc_of(i);
    }
  return make_float2(total, l);
}

// The splits' partial results (m, l, acc[head_dim]) of one (row, head) merged into its output:
// threads over head_dim; a row with no visible key gets zeros. The partials are read through
// L2 (__ldcg): other blocks wrote them.
template <class T>
__device__ __forceinline__ void merge_splits(T* out, const float* partials, int64_t splits,
                                             int64_t head_dim) {
  auto part = [&](int64_t s) { return partials + s * (head_dim + 2); };
  float m = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) m = fmaxf(m, __ldcg(part(s)));
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const float2 merged = merge_parts(
        splits, m, [&](int64_t s) { return __ldcg(part(s)); },
        [&](int64_t s) { return __ldcg(part(s) + 1); },
        [&](int64_t s) { return __ldcg(part(s) + 2 + d); });
    out[d] = from_float<T>(merged.y > 0.f ? merged.x / merged.y : 0.f);
  }
}

// T: element type; N: elements per load (16 bytes, or 2 where head_dim is no multiple of that);
// CPL: pieces of N per lane (head_dim <= kGroupLanes * CPL * N).
template <class T, int N, int CPL>
__global__ void __launch_bounds__(kStepThreads)
    attention_step_kernel(T* out, float* partials, unsigned* counters, const T* q, const T* k_new,
                          const T* v_new, T* k_cache, T* v_cache, const int32_t* position,
                          const int32_t* key_position, const int32_t* slot,
                          const int32_t* key_begin, const int32_t* key_end, int64_t capacity,
                          int64_t q_heads, int64_t kv_heads, int64_t head_dim, int64_t chunk,
                          double log_theta, bool rope_q, bool rope_k) {
  __shared__ float qs[kStepMaxHeadDim], ks[kStepMaxHeadDim], vs[kStepMaxHeadDim];
  __shared__ float group_m[kStepGroups], group_l[kStepGroups];
  __shared__ float group_acc[kStepGroups][kStepMaxHeadDim];
  const int64_t row = blockIdx.x / q_heads, h = blockIdx.x % q_heads;
  const int64_t kvh = h / (q_heads / kv_heads);
  const int group = threadIdx.x / kGroupLanes, lane = threadIdx.x % kGroupLanes;
  auto cache_row = [&](int64_t j) {  // element offset of position j's row in the caches
    return ((row * capacity + j % capacity) * kv_heads + kvh) * head_dim;
  };
  const int64_t fresh = key_position[row];
  const int64_t first = key_begin[row] + blockIdx.y * chunk;
  const int64_t last = min(static_cast<int64_t>(key_end[row]), first + chunk);

  // Before waiting for the kernel that wrote q, k and v: the group's cached rows into L2
  // (positions before this step, which no kernel of the step writes).
  if (lane < kKeysPerGroup) {
    const int64_t j = first + group + kStepGroups * lane;
    if (j < last && j != fresh)
      for (int64_t d = 0; d < head_dim; d += 128 / sizeof(T)) {
        prefetch_l2(k_cache + cache_row(j) + d);
        prefetch_l2(v_cache + cache_row(j) + d);
      }
  }
  // The rotations of the query's and the new key's pairs (positions come from the step's
  // indices, uploaded before its first kernel): the fp64 angle costs about 2 us, hidden here
  // behind the previous kernel. A thread rotates pairs m = threadIdx.x + i * kStepThreads.
  constexpr int kPairsPerThread = (kStepMaxHeadDim / 2 + kStepThreads - 1) / kStepThreads;
  float qc[kPairsPerThread], qsn[kPairsPerThread], kc[kPairsPerThread], ksn[kPairsPerThread];
#pragma unroll
  for (int i = 0; i < kPairsPerThread; ++i) {
    const int64_t m = threadIdx.x + static_cast<int64_t>(i) * kStepThreads;
    qc[i] = kc[i] = 1.f;
    qsn[i] = ksn[i] = 0.f;
    if (m >= head_dim / 2) continue;
    if (rope_q) rotation(static_cast<double>(position[row]), m, head_dim, log_theta, 1.f, qc[i], qsn[i]);
    if (rope_k) rotation(static_cast<double>(fresh), m, head_dim, log_theta, 1.f, kc[i], ksn[i]);
  }
  dependency_wait();
  dependents_may_start();

  // The rotated query, the rotated new key and the new value in shared memory; the writer
  // block puts the new key and value into the cache.
  const T* qh = q + (row * q_heads + h) * head_dim;
  const T* kh = k_new + (row * kv_heads + kvh) * head_dim;
  const T* vh = v_new + (row * kv_heads + kvh) * head_dim;
  const bool writer = h % (q_heads / kv_heads) == 0 && blockIdx.y == 0;
  const int64_t fresh_row = ((row * capacity + slot[row]) * kv_heads + kvh) * head_dim;
#pragma unroll
  for (int i = 0; i < kPairsPerThread; ++i) {
    const int64_t m = threadIdx.x + static_cast<int64_t>(i) * kStepThreads;
    if (m >= head_dim / 2) break;
    const float c = qc[i], s = qsn[i];
    const float q0 = to_float(qh[2 * m]), q1 = to_float(qh[2 * m + 1]);
    qs[2 * m] = to_float(from_float<T>(q0 * c - q1 * s));
    qs[2 * m + 1] = to_float(from_float<T>(q0 * s + q1 * c));
    const float k0 = to_float(kh[2 * m]), k1 = to_float(kh[2 * m + 1]);
    const T r0 = from_float<T>(k0 * kc[i] - k1 * ksn[i]), r1 = from_float<T>(k0 * ksn[i] + k1 * kc[i]);
    ks[2 * m] = to_float(r0);
    ks[2 * m + 1] = to_float(r1);
    if (writer) {
      k_cache[fresh_row + 2 * m] = r0;
      k_cache[fresh_row + 2 * m + 1] = r1;
    }
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    vs[d] = to_float(vh[d]);
    if (writer) v_cache[fresh_row + d] = vh[d];
  }
  __syncthreads();

  // This lane's pieces of the query: piece i covers dims (lane + kGroupLanes * i) * N + [0, N).
  const int64_t pieces = head_dim / N;
  float qr[CPL][N];
#pragma unroll
  for (int i = 0; i < CPL; ++i) {
    const int64_t piece = lane + kGroupLanes * i;
#pragma unroll
    for (int e = 0; e < N; ++e) qr[i][e] = piece < pieces ? qs[piece * N + e] : 0.f;
  }
  const float scale = rsqrtf(static_cast<float>(head_dim));
  float m_run = -INFINITY, l_run = 0.f;
  float acc[CPL][N];
#pragma unroll
  for (int i = 0; i < CPL; ++i)
#pragma unroll
    for (int e = 0; e < N; ++e) acc[i][e] = 0.f;

  for (int64_t base = first; base < last; base += kStepChunk) {
    // Every key and value piece of the group's keys requested before any is used (held as T:
    // the fresh key and value came from T values, so they convert back exactly).
    Pack<T, N> kp[kKeysPerGroup][CPL], vp[kKeysPerGroup][CPL];
#pragma unroll
    for (int u = 0; u < kKeysPerGroup; ++u) {
      const int64_t j = base + group + kStepGroups * u;
      const bool cached = j < last && j != fresh;
#pragma unroll
      for (int i = 0; i < CPL; ++i) {
        const int64_t piece = lane + kGroupLanes * i;
        if (cached && piece < pieces) {
          kp[u][i] = load_pack<N>(k_cache + cache_row(j) + piece * N);
          vp[u][i] = load_pack<N>(v_cache + cache_row(j) + piece * N);
        } else {
          const bool mine = j == fresh && piece < pieces;
#pragma unroll
          for (int e = 0; e < N; ++e) {
            kp[u][i].v[e] = from_float<T>(mine ? ks[piece * N + e] : 0.f);
            vp[u][i].v[e] = from_float<T>(mine ? vs[piece * N + e] : 0.f);
          }
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kKeysPerGroup; ++u) {
      float dot = 0.f;
#pragma unroll
      for (int i = 0; i < CPL; ++i)
#pragma unroll
        for (int e = 0; e < N; ++e) dot = fmaf(qr[i][e], to_float(kp[u][i].v[e]), dot);
      // The group's 8 lanes are consecutive lanes of one warp: a sum over them.
#pragma unroll
      for (int offset = kGroupLanes / 2; offset > 0; offset >>= 1)
        dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      if (base + group + kStepGroups * u >= last) continue;  // (uniform within the group)
      const float score = dot * scale;
      const float m_new = fmaxf(m_run, score);
      const float rescale = __expf(m_run - m_new);  // 0 for the first key (m_run = -inf)
      const float p = __expf(score - m_new);
      l_run = l_run * rescale + p;
      m_run = m_new;
#pragma unroll
      for (int i = 0; i < CPL; ++i)
#pragma unroll
        for (int e = 0; e < N; ++e) acc[i][e] = fmaf(p, to_float(vp[u][i].v[e]), acc[i][e] * rescale);
    }
  }

  // The block's 16 groups merged: each group's (m, l, acc) through shared memory.
#pragma unroll
  for (int i = 0; i < CPL; ++i) {
    const int64_t piece = lane + kGroupLanes * i;
    if (piece < pieces)
#pragma unroll
      for (int e = 0; e < N; ++e) group_acc[group][piece * N + e] = acc[i][e];
  }
  if (lane == 0) {
    group_m[group] = m_run;
    group_l[group] = l_run;
  }
  __syncthreads();
  float block_m = -INFINITY;
  for (int g = 0; g < kStepGroups; ++g) block_m = fmaxf(block_m, group_m[g]);
  const int64_t head_row = row * q_heads + h;
  const int64_t splits = gridDim.y;
  float* const head_partials = partials + head_row * splits * (head_dim + 2);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const float2 merged = merge_parts(
        kStepGroups, block_m, [&](int64_t g) { return group_m[g]; },
        [&](int64_t g) { return group_l[g]; }, [&](int64_t g) { return group_acc[g][d]; });
    const float total = merged.x, l = merged.y;
    if (splits == 1) {
      out[head_row * head_dim + d] = from_float<T>(l > 0.f ? total / l : 0.f);
    } else {
      float* partial = head_partials + blockIdx.y * (head_dim + 2);
      partial[2 + d] = total;
      if (d == 0) {
        partial[0] = block_m;
        partial[1] = l;
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

// The kernel for pieces of N elements: CPL the smallest power of two that covers head_dim.
template <class T, int N>
auto kernel_for(int64_t head_dim) {
  const int64_t per_lane = (head_dim / N + kGroupLanes - 1) / kGroupLanes;
  if (per_lane <= 1) return attention_step_kernel<T, N, 1>;
  if (per_lane <= 2) return attention_step_kernel<T, N, 2>;
  if (per_lane <= 4) return attention_step_kernel<T, N, 4>;
  return attention_step_kernel<T, N, 8>;
}

}  // namespace

int64_t attention_step_max_head_dim(DType dtype, int64_t head_dim) {
  const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
  // 16-byte pieces: up to 8 per lane; pairs: up to 8 per lane, 128 dims.
  return head_dim % vector == 0 ? kAttentionStepMaxHeadDim
                                : std::min<int64_t>(kAttentionStepMaxHeadDim, kGroupLanes * 8 * 2);
}

void attention_step(DType dtype, void* out, const void* q, const void* k_new, const void* v_new,
                    void* k_cache, void* v_cache, const int32_t* position,
                    const int32_t* key_position, const int32_t* slot, const int32_t* key_begin,
                    const int32_t* key_end, int64_t rows, int64_t capacity, int64_t q_heads,
                    int64_t kv_heads, int64_t head_dim, double theta, bool rope_q, bool rope_k,
                    const AttentionStepWorkspace& workspace, cudaStream_t stream) {
  if (rows == 0) return;  // (head_dim: checked by the backend against attention_step_max_head_dim)
  // As many splits of kStepChunk keys as the capacity needs and the workspace holds.
  const int64_t per_split = rows * q_heads * (head_dim + 2);
  int64_t splits = (capacity + kStepChunk - 1) / kStepChunk;
  const bool room = workspace.partials && workspace.counters &&
                    rows * q_heads <= workspace.counter_count;
  splits = std::max<int64_t>(1, std::min(splits, room ? workspace.partial_floats / per_split : 1));
  if (splits > 65535) splits = 65535;  // the grid's y limit
  const int64_t chunk = (capacity + splits - 1) / splits;
  SF_DISPATCH_FLOAT(dtype, T, {
    constexpr int kVector = 16 / sizeof(T);
    const bool vector = head_dim % kVector == 0 && all_aligned(16, k_cache, v_cache);
    auto kernel = vector ? kernel_for<T, kVector>(head_dim) : kernel_for<T, 2>(head_dim);
    launch_dependent(kernel, dim3(static_cast<unsigned>(rows * q_heads), static_cast<unsigned>(splits)),
                     dim3(kStepThreads), 0, stream, static_cast<T*>(out), workspace.partials,
                     workspace.counters, static_cast<const T*>(q), static_cast<const T*>(k_new),
                     static_cast<const T*>(v_new), static_cast<T*>(k_cache),
                     static_cast<T*>(v_cache), position, key_position, slot, key_begin, key_end,
                     capacity, q_heads, kv_heads, head_dim, chunk, log(theta), rope_q, rope_k);
    SF_CUDA_LAUNCH_CHECK("attention_step");
  });
}

}  // namespace sf::cuda
