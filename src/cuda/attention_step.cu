// attention_step.cu — one decode step of attention, fused (Backend::attention_step): RoPE of the
// query and the new key at their positions, the new key and value into their cache slot, and
// the query's attention over the cache's visible keys [key_begin, key_end) (ring slot j % C).
//
// Memory-bound: at batch 1 a step reads every visible key and value once, a few hundred kB
// per layer, so its time is the latency of the chain of dependent loads, not their bytes. The
// kernel keeps that chain short: the cached keys and values are read before the wait for the
// kernel that wrote q, k and v (no kernel of the step writes them), and the splits of a head
// merge in shared memory within a thread-block cluster, not through L2.
//
// Grid (rows * q_heads, splits), the splits of one (row, head) one cluster: block (r, h, s)
// takes chunk s of row r's visible range for query head h, in rounds of kStepChunk keys. Its
// 256 threads form 32 groups of 8; in a round a group takes keys group, group + 32, ...
// (kKeysPerGroup of them, their key and value rows loaded together before any is used), its 8
// lanes splitting each row into N-element pieces (16-byte loads where head_dim allows; CPL
// pieces per lane). Each group keeps its own online softmax (running max m, sum l, accumulators
// rescaled when m grows); the block merges its 32 groups through shared memory; with one split
// it writes the output, else every block stores its (m, l, acc[head_dim]) into the shared
// memory of the cluster's first block, which merges them in split order after a cluster
// barrier and writes the output.
//
// The split count is fixed by the cache's capacity (not the current length), so a recorded step
// (CUDA graph) has one launch shape for every position; splits past the visible range find no
// key. Each block rotates the query and the new key itself; the new key and value are used from
// shared memory at their position, and block (r, first head of its kv group, split 0) writes
// them into the cache slot, which no block reads (it held a position the row no longer sees),
// so the blocks need no ordering among themselves. Launched as a dependent launch
// (dependent_launch.cuh): a block's first round of cached rows is loaded into registers, and
// its later rounds prefetched into L2, before the wait. fp32 scores, softmax and accumulation;
// the rotated query and key rounded to T as the unfused path stores them.
#include <cooperative_groups.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/rope.cuh"

namespace sf::cuda {

namespace {

constexpr int kStepThreads = 256;
constexpr int kGroupLanes = 8;                                // lanes per key
constexpr int kStepGroups = kStepThreads / kGroupLanes;       // keys side by side
constexpr int kKeysPerGroup = 4;                              // a group's keys loaded at once
constexpr int kStepChunk = kStepGroups * kKeysPerGroup;       // keys per round of a block
constexpr int kMaxSplits = 8;                                 // a portable cluster size
constexpr int kWarpsPerStep = kStepThreads / 32;
// Blocks a multiprocessor holds at once (at most 128 registers a thread) for head_dim up to 64
// (8 elements a lane): a launch's clusters fit in one wave beside the previous kernel's blocks,
// which lets them start early (their loads and RoPE angles before the wait); at one block per
// multiprocessor two rows of 12 heads in clusters of 8 took two waves. Larger heads keep one
// (their registers would spill).
constexpr int kStepBlocksPerSm = 2;
// The projections fused into the step (attention_step_projected): a warp's outputs and the
// 16-byte chunks of an input row per lane, held in registers, bound the shapes it takes: head_dim
// up to 64 (3 * 64 outputs over 8 blocks of 8 warps) and rows of up to 96 chunks (d_model 768
// in BF16, 384 in F32).
constexpr int kProjectionWarpOutputs = 3;
constexpr int kProjectionLaneChunks = 3;
constexpr int kProjectionMaxHeadDim = kMaxSplits * kWarpsPerStep * kProjectionWarpOutputs / 3;
constexpr int kStepMaxHeadDim = static_cast<int>(kAttentionStepMaxHeadDim);

__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// The cluster barrier in its two halves (sm_90): arrive (relaxed: orders nothing; release:
// this thread's earlier writes, to shared memory of any block of the cluster included, are
// seen by every thread after its wait) and wait (acquire).
__device__ __forceinline__ void cluster_arrive_relaxed() {
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_arrive_release() {
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait() {
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
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

// The launch's arguments (one struct: the kernel's parameter list stays readable).
struct StepArgs {
  void* out;
  const void *q, *k_new, *v_new;  // unused when the step projects them itself
  void *k_cache, *v_cache;
  const int32_t *position, *key_position, *slot, *key_begin, *key_end;
  int64_t capacity, q_heads, kv_heads, head_dim, chunk;
  double log_theta;
  bool rope_q, rope_k;
};

// T: element type; N: elements per load (16 bytes, or 2 where head_dim is no multiple of that);
// CPL: pieces of N per lane (head_dim <= kGroupLanes * CPL * N); Projected: q, k and v are
// projected here from the input rows (StepProjection), each block of the cluster computing
// 3 * head_dim / kMaxSplits of the head's outputs and storing them into every block's shared
// memory, instead of read from q, k_new, v_new.
template <class T, int N, int CPL, bool Projected>
__global__ void __launch_bounds__(kStepThreads, CPL * N <= 8 ? kStepBlocksPerSm : 1)
    attention_step_kernel(const StepArgs a, const StepProjection proj) {
  T* const out = static_cast<T*>(a.out);
  T* const k_cache = static_cast<T*>(a.k_cache);
  T* const v_cache = static_cast<T*>(a.v_cache);
  const int32_t *position = a.position, *key_position = a.key_position, *slot = a.slot;
  const int64_t capacity = a.capacity, q_heads = a.q_heads, kv_heads = a.kv_heads,
                head_dim = a.head_dim;
  __shared__ float qs[kStepMaxHeadDim], ks[kStepMaxHeadDim], vs[kStepMaxHeadDim];
  __shared__ float group_m[kStepGroups], group_l[kStepGroups];
  __shared__ float group_acc[kStepGroups][kStepMaxHeadDim];
  // The cluster's first block: every split's (m, l, acc[head_dim]), stored by its block.
  __shared__ float split_parts[kMaxSplits][kStepMaxHeadDim + 2];
  const int64_t splits = gridDim.y;
  // (the barrier's first half: a block writes into another's shared memory only after the
  // whole cluster has started, which the matching wait below ensures)
  if (splits > 1) cluster_arrive_relaxed();
  const int64_t row = blockIdx.x / q_heads, h = blockIdx.x % q_heads;
  const int64_t kvh = h / (q_heads / kv_heads);
  const int group = threadIdx.x / kGroupLanes, lane = threadIdx.x % kGroupLanes;
  auto cache_row = [&](int64_t j) {  // element offset of position j's row in the caches
    return ((row * capacity + j % capacity) * kv_heads + kvh) * head_dim;
  };
  const int64_t fresh = key_position[row];
  const int64_t first = a.key_begin[row] + blockIdx.y * a.chunk;
  const int64_t last = min(static_cast<int64_t>(a.key_end[row]), first + a.chunk);
  const int64_t pieces = head_dim / N;

  // A round's keys and values of this lane (held as T: the fresh key and value came from T
  // values, so they convert back exactly). load_round reads the cached positions (zeros for
  // the others); the fresh position's come from shared memory (use_fresh), after the wait.
  Pack<T, N> kp[kKeysPerGroup][CPL], vp[kKeysPerGroup][CPL];
  auto load_round = [&](int64_t base) {
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
#pragma unroll
          for (int e = 0; e < N; ++e) kp[u][i].v[e] = vp[u][i].v[e] = from_float<T>(0.f);
        }
      }
    }
  };
  auto use_fresh = [&](int64_t base) {
#pragma unroll
    for (int u = 0; u < kKeysPerGroup; ++u) {
      if (base + group + kStepGroups * u != fresh || fresh >= last) continue;
#pragma unroll
      for (int i = 0; i < CPL; ++i) {
        const int64_t piece = lane + kGroupLanes * i;
        if (piece < pieces)
#pragma unroll
          for (int e = 0; e < N; ++e) {
            kp[u][i].v[e] = from_float<T>(ks[piece * N + e]);
            vp[u][i].v[e] = from_float<T>(vs[piece * N + e]);
          }
      }
    }
  };

  // Projected: this block's outputs of the head, warp w taking outputs w, w + 8, ... of the
  // block's share; their weight rows' chunks (lane, lane + 32, ...) into registers before the
  // wait (weights: no kernel writes them).
  constexpr int V = 16 / sizeof(T);
  const int warp = threadIdx.x >> 5, warp_lane = threadIdx.x & 31;
  const int64_t share = 3 * head_dim / kMaxSplits;  // outputs per block
  auto output_of = [&](int k) { return blockIdx.y * share + warp + kWarpsPerStep * k; };
  Pack<T, V> wr[kProjectionWarpOutputs][kProjectionLaneChunks];
  [[maybe_unused]] int64_t group_of_row = 0, row_in_group = 0;
  if constexpr (Projected) {
    group_of_row = row / proj.rows_per_group;
    row_in_group = row % proj.rows_per_group;
    const int64_t D = proj.d_model, chunks = D / V;
#pragma unroll
    for (int k = 0; k < kProjectionWarpOutputs; ++k) {
      const int64_t o = output_of(k);
      if (warp + kWarpsPerStep * k >= share) break;  // (uniform in the warp)
      const int64_t matrix = o / head_dim, within = o % head_dim;
      const T* w = static_cast<const T*>(matrix == 0   ? proj.wq[group_of_row]
                                         : matrix == 1 ? proj.wk[group_of_row]
                                                       : proj.wv[group_of_row]) +
                   ((matrix == 0 ? h : kvh) * head_dim + within) * D;
#pragma unroll
      for (int j = 0; j < kProjectionLaneChunks; ++j) {
        const int64_t c = warp_lane + 32 * j;
        if (c < chunks) wr[k][j] = load_pack<V>(w + c * V);
      }
    }
  }

  // Before waiting for the kernel that wrote q, k and v (or their input rows): the cached rows
  // (positions before this step, which no kernel of the step writes) of the first round into
  // registers, of the later rounds into L2. (Projected: every round into L2; the registers hold
  // the weights until the projection, and the first round is loaded after it.)
  if (!Projected && first < last) load_round(first);
  if (lane < kKeysPerGroup)
    for (int64_t base = first + (Projected ? 0 : kStepChunk); base < last; base += kStepChunk) {
      const int64_t j = base + group + kStepGroups * lane;
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
    if (a.rope_q) rotation(static_cast<double>(position[row]), m, head_dim, a.log_theta, 1.f, qc[i], qsn[i]);
    if (a.rope_k) rotation(static_cast<double>(fresh), m, head_dim, a.log_theta, 1.f, kc[i], ksn[i]);
  }
  dependency_wait();
  dependents_may_start();

  // Projected: the input rows x' (the query side's normalised, rounded to T as the unfused
  // product's input) and the keys' and values' rows (cross-attention: the memory) into shared
  // memory; each warp's outputs summed over its lanes' chunks, rounded to T as the unfused
  // product stores them, and stored into every block of the cluster.
  __shared__ float projected[3 * kProjectionMaxHeadDim];
  if constexpr (Projected) {
    extern __shared__ __align__(16) unsigned char step_rows[];
    const int64_t D = proj.d_model, chunks = D / V;
    T* const xq = reinterpret_cast<T*>(step_rows);
    T* const xkv = xq + D;
    const T* x = static_cast<const T*>(proj.x[group_of_row]) + row_in_group * D;
    const T* kv_x = static_cast<const T*>(proj.kv_x[group_of_row]);
    const T* norm = static_cast<const T*>(proj.norm[group_of_row]);
    const bool mine = threadIdx.x < chunks;  // (chunks <= kStepThreads: one chunk a thread)
    float xv[V], squares = 0.f;
    if (mine) {
      load_chunk(x + threadIdx.x * V, xv);
#pragma unroll
      for (int e = 0; e < V; ++e) squares += xv[e] * xv[e];
      if (kv_x) store_pack(xkv + threadIdx.x * V, load_pack<V>(kv_x + row_in_group * D + threadIdx.x * V));
    }
    float rstd = 1.f;
    if (norm) {
      __shared__ float scratch[32];
      rstd = rsqrtf(block_sum(squares, scratch) / static_cast<float>(D) + proj.eps);
    }
    if (mine) {
      float nv[V];
      if (norm) load_chunk(norm + threadIdx.x * V, nv);
      Pack<T, V> normalised;
#pragma unroll
      for (int e = 0; e < V; ++e) normalised.v[e] = from_float<T>(norm ? xv[e] * rstd * nv[e] : xv[e]);
      store_pack(xq + threadIdx.x * V, normalised);
    }
    __syncthreads();
    cluster_wait();  // (with the arrive at the start: every block of the cluster runs)
    auto cluster = cooperative_groups::this_cluster();
#pragma unroll
    for (int k = 0; k < kProjectionWarpOutputs; ++k) {
      if (warp + kWarpsPerStep * k >= share) break;  // (uniform in the warp)
      const int64_t o = output_of(k);
      const T* input = o < head_dim || !kv_x ? xq : xkv;
      float dot = 0.f;
#pragma unroll
      for (int j = 0; j < kProjectionLaneChunks; ++j) {
        const int64_t c = warp_lane + 32 * j;
        if (c >= chunks) break;
        float iv[V];
        load_chunk(input + c * V, iv);
#pragma unroll
        for (int e = 0; e < V; ++e) dot = fmaf(to_float(wr[k][j].v[e]), iv[e], dot);
      }
      dot = warp_sum(dot);
      if (warp_lane < gridDim.y) *cluster.map_shared_rank(&projected[o], warp_lane) = to_float(from_float<T>(dot));
    }
    if (first < last) load_round(first);  // (in flight across the cluster barrier)
    cluster_arrive_release();
    cluster_wait();
  }

  // The rotated query, the rotated new key and the new value in shared memory; the writer
  // block puts the new key and value into the cache.
  const T* qh = static_cast<const T*>(a.q) + (row * q_heads + h) * head_dim;
  const T* kh = static_cast<const T*>(a.k_new) + (row * kv_heads + kvh) * head_dim;
  const T* vh = static_cast<const T*>(a.v_new) + (row * kv_heads + kvh) * head_dim;
  auto q_at = [&](int64_t d) { return Projected ? projected[d] : to_float(qh[d]); };
  auto k_at = [&](int64_t d) { return Projected ? projected[head_dim + d] : to_float(kh[d]); };
  auto v_of = [&](int64_t d) { return Projected ? from_float<T>(projected[2 * head_dim + d]) : vh[d]; };
  const bool writer = h % (q_heads / kv_heads) == 0 && blockIdx.y == 0;
  const int64_t fresh_row = ((row * capacity + slot[row]) * kv_heads + kvh) * head_dim;
#pragma unroll
  for (int i = 0; i < kPairsPerThread; ++i) {
    const int64_t m = threadIdx.x + static_cast<int64_t>(i) * kStepThreads;
    if (m >= head_dim / 2) break;
    const float c = qc[i], s = qsn[i];
    const float q0 = q_at(2 * m), q1 = q_at(2 * m + 1);
    qs[2 * m] = to_float(from_float<T>(q0 * c - q1 * s));
    qs[2 * m + 1] = to_float(from_float<T>(q0 * s + q1 * c));
    const float k0 = k_at(2 * m), k1 = k_at(2 * m + 1);
    const T r0 = from_float<T>(k0 * kc[i] - k1 * ksn[i]), r1 = from_float<T>(k0 * ksn[i] + k1 * kc[i]);
    ks[2 * m] = to_float(r0);
    ks[2 * m + 1] = to_float(r1);
    if (writer) {
      k_cache[fresh_row + 2 * m] = r0;
      k_cache[fresh_row + 2 * m + 1] = r1;
    }
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const T value = v_of(d);
    vs[d] = to_float(value);
    if (writer) v_cache[fresh_row + d] = value;
  }
  __syncthreads();

  // This lane's pieces of the query: piece i covers dims (lane + kGroupLanes * i) * N + [0, N).
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
    if (base != first) load_round(base);
    use_fresh(base);
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

  // The block's 32 groups merged: each group's (m, l, acc) through shared memory.
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
  // With several splits, this block's part goes into the first block's split_parts[split]
  // (distributed shared memory), once the whole cluster runs.
  float* part = nullptr;
  if (splits > 1) {
    if (!Projected) cluster_wait();  // (projected: passed already)
    part = cooperative_groups::this_cluster().map_shared_rank(&split_parts[blockIdx.y][0], 0);
  }
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const float2 merged = merge_parts(
        kStepGroups, block_m, [&](int64_t g) { return group_m[g]; },
        [&](int64_t g) { return group_l[g]; }, [&](int64_t g) { return group_acc[g][d]; });
    const float total = merged.x, l = merged.y;
    if (splits == 1) {
      out[head_row * head_dim + d] = from_float<T>(l > 0.f ? total / l : 0.f);
    } else {
      part[2 + d] = total;
      if (d == 0) {
        part[0] = block_m;
        part[1] = l;
      }
    }
  }
  if (splits == 1) return;
  // Every part stored (release) before the first block reads them (acquire); the other
  // blocks are done.
  cluster_arrive_release();
  cluster_wait();
  if (blockIdx.y != 0) return;
  float m = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) m = fmaxf(m, split_parts[s][0]);
  for (int64_t d = threadIdx.x; d < head_dim; d += blockDim.x) {
    const float2 merged = merge_parts(
        splits, m, [&](int64_t s) { return split_parts[s][0]; },
        [&](int64_t s) { return split_parts[s][1]; }, [&](int64_t s) { return split_parts[s][2 + d]; });
    out[head_row * head_dim + d] = from_float<T>(merged.y > 0.f ? merged.x / merged.y : 0.f);
  }
}

// The kernel for pieces of N elements: CPL the smallest power of two that covers head_dim.
// (Projected: head_dim <= 64, at most 4 pieces a lane.)
template <class T, int N, bool Projected>
auto kernel_for(int64_t head_dim) {
  const int64_t per_lane = (head_dim / N + kGroupLanes - 1) / kGroupLanes;
  if (per_lane <= 1) return attention_step_kernel<T, N, 1, Projected>;
  if (per_lane <= 2) return attention_step_kernel<T, N, 2, Projected>;
  if constexpr (Projected) {
    return attention_step_kernel<T, N, 4, Projected>;
  } else {
    if (per_lane <= 4) return attention_step_kernel<T, N, 4, Projected>;
    return attention_step_kernel<T, N, 8, Projected>;
  }
}

template <bool Projected>
void launch_step(DType dtype, const StepArgs& args, const StepProjection& projection, int64_t rows,
                 int64_t splits, cudaStream_t stream) {
  SF_CHECK(rows * args.q_heads <= 0x7fffffff, "attention_step: {} rows x {} heads", rows, args.q_heads);
  SF_DISPATCH_FLOAT(dtype, T, {
    constexpr int kVector = 16 / sizeof(T);
    const bool vector = args.head_dim % kVector == 0 && all_aligned(16, args.k_cache, args.v_cache);
    auto kernel = vector ? kernel_for<T, kVector, Projected>(args.head_dim)
                         : kernel_for<T, 2, Projected>(args.head_dim);
    // Projected: the two input rows in dynamic shared memory, beyond the 48 kB default
    // (the static arrays take most of it).
    const size_t rows_bytes = Projected ? 2 * projection.d_model * sizeof(T) : 0;
    if (Projected) {
      constexpr int kMostRowBytes = 2 * kProjectionLaneChunks * 32 * 16;
      static const bool sized = [&] {
        SF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMostRowBytes));
        return true;
      }();
      (void)sized;
    }
    launch_dependent_clusters(kernel, dim3(static_cast<unsigned>(rows * args.q_heads), static_cast<unsigned>(splits)),
                              dim3(kStepThreads), dim3(1, static_cast<unsigned>(splits), 1), rows_bytes,
                              stream, args, projection);
    SF_CUDA_LAUNCH_CHECK("attention_step");
  });
}

StepArgs step_args(void* out, const void* q, const void* k_new, const void* v_new, void* k_cache,
                   void* v_cache, const int32_t* position, const int32_t* key_position,
                   const int32_t* slot, const int32_t* key_begin, const int32_t* key_end,
                   int64_t capacity, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                   int64_t splits, double theta, bool rope_q, bool rope_k) {
  return StepArgs{out, q, k_new, v_new, k_cache, v_cache, position, key_position, slot, key_begin,
                  key_end, capacity, q_heads, kv_heads, head_dim, (capacity + splits - 1) / splits,
                  log(theta), rope_q, rope_k};
}

// The fused projections are off unless SF_STEP_PROJECTION=1: on an H100 they made the 12-layer
// d_model 768 baseline and the 2x6 model 3-4% slower and only the 2x6 shared-weights model 2.5%
// faster (docs/decoding.md). Read at every call (a recording reads it once), so that a test can
// turn it on for a part of its run.
bool projection_enabled() {
  const char* flag = std::getenv("SF_STEP_PROJECTION");
  return flag && std::strcmp(flag, "1") == 0;
}

}  // namespace

int64_t attention_step_max_head_dim(DType dtype, int64_t head_dim) {
  const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
  // 16-byte pieces: up to 8 per lane; pairs: up to 8 per lane, 128 dims.
  return head_dim % vector == 0 ? kAttentionStepMaxHeadDim
                                : std::min<int64_t>(kAttentionStepMaxHeadDim, kGroupLanes * 8 * 2);
}

int64_t attention_step_splits(int64_t capacity, int64_t max_splits) {
  const int64_t most = max_splits > 0 ? std::min<int64_t>(max_splits, kMaxSplits) : kMaxSplits;
  return std::clamp<int64_t>((capacity + kStepChunk - 1) / kStepChunk, 1, most);
}

void attention_step(DType dtype, void* out, const void* q, const void* k_new, const void* v_new,
                    void* k_cache, void* v_cache, const int32_t* position,
                    const int32_t* key_position, const int32_t* slot, const int32_t* key_begin,
                    const int32_t* key_end, int64_t rows, int64_t capacity, int64_t q_heads,
                    int64_t kv_heads, int64_t head_dim, double theta, bool rope_q, bool rope_k,
                    cudaStream_t stream, int64_t max_splits) {
  if (rows == 0) return;  // (head_dim: checked by the backend against attention_step_max_head_dim)
  const int64_t splits = attention_step_splits(capacity, max_splits);
  launch_step<false>(dtype,
                     step_args(out, q, k_new, v_new, k_cache, v_cache, position, key_position, slot,
                               key_begin, key_end, capacity, q_heads, kv_heads, head_dim, splits,
                               theta, rope_q, rope_k),
                     StepProjection{}, rows, splits, stream);
}

bool attention_step_projection_suits(DType dtype, const StepProjection& p, int64_t q_heads,
                                     int64_t kv_heads, int64_t head_dim) {
  const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
  bool aligned = p.groups >= 1 && p.groups <= kMaxProjectionGroups;
  for (int g = 0; aligned && g < p.groups; ++g)
    aligned = all_aligned(16, p.x[g], p.norm[g], p.kv_x[g], p.wq[g], p.wk[g], p.wv[g]);
  return projection_enabled() && aligned && q_heads == kv_heads && head_dim % 8 == 0 &&
         head_dim <= kProjectionMaxHeadDim && p.d_model % vector == 0 &&
         p.d_model / vector <= 32 * kProjectionLaneChunks && p.rows_per_group >= 1;
}

void attention_step_projected(DType dtype, const StepProjection& projection, void* out,
                              void* k_cache, void* v_cache, const int32_t* position,
                              const int32_t* key_position, const int32_t* slot,
                              const int32_t* key_begin, const int32_t* key_end, int64_t capacity,
                              int64_t q_heads, int64_t head_dim, double theta, bool rope_q,
                              bool rope_k, cudaStream_t stream) {
  const int64_t rows = projection.groups * projection.rows_per_group;
  if (rows == 0) return;
  SF_CHECK(attention_step_projection_suits(dtype, projection, q_heads, q_heads, head_dim),
           "attention_step_projected: shapes it does not take (d_model {}, head_dim {})",
           projection.d_model, head_dim);
  launch_step<true>(dtype,
                    step_args(out, nullptr, nullptr, nullptr, k_cache, v_cache, position,
                              key_position, slot, key_begin, key_end, capacity, q_heads, q_heads,
                              head_dim, kMaxSplits, theta, rope_q, rope_k),
                    projection, rows, kMaxSplits, stream);
}

}  // namespace sf::cuda
