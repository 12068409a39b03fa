// attention_step.cuh — the device side of attention_step.cu: the step's arguments, the shared
// memory of one block, and the work of one block (attention_step_block), shared by the kernel of
// attention_step.cu and by the persistent decode-step kernel (step_program.cu), which runs two
// such blocks side by side in each of its CUDA blocks. See attention_step.cu for the method.
//
// `Block` gives the block's kStepThreads threads their index (`thread()`), a barrier among
// them (`sync()`), and the wait for the work before it (`wait()`, called once by every thread
// after the prefetches, before q, k and v are read). The block's coordinates (block_x = row *
// q_heads + head, block_y = split) and the split count come as arguments.
#pragma once

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/rope.cuh"

namespace sf::cuda::step {

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
// (m_max = -inf) both are 0. The one merge of the block's key groups and of the splits. The
// parts' values are read kMergeBatch at a time before any is used: the splits' come from L2 on
// the step's critical path, where one part's loads after another had cost an L2 round trip per
// split (16.6 us for the 1B model's 32 splits). The sums run part by part in order either way.
constexpr int kMergeBatch = 8;

template <class M, class L, class Acc>
__device__ __forceinline__ float2 merge_parts(int64_t count, float m_max, M m_of, L l_of,
                                              Acc acc_of) {
  float total = 0.f, l = 0.f;
  if (m_max > -INFINITY)
    for (int64_t i0 = 0; i0 < count; i0 += kMergeBatch) {
      float ms[kMergeBatch], ls[kMergeBatch], accs[kMergeBatch];
#pragma unroll
      for (int u = 0; u < kMergeBatch; ++u)
        if (i0 + u < count) {
          ms[u] = m_of(i0 + u);
          ls[u] = l_of(i0 + u);
          accs[u] = acc_of(i0 + u);
        }
#pragma unroll
      for (int u = 0; u < kMergeBatch; ++u)
        if (i0 + u < count) {
          const float weight = __expf(ms[u] - m_max);
          l += weight * ls[u];
          total += weight * accs[u];
        }
    }
  return make_float2(total, l);
}

// The splits' partial results (m, l, acc[head_dim]) of one (row, head) merged into its output:
// threads over head_dim; a row with no visible key gets zeros. The partials are read through
// L2 (__ldcg): other blocks wrote them. Only the splits that hold visible keys are merged
// (`used`, split 0 always): an empty split's part (m = -inf, l = 0, acc = 0) weighs exactly 0,
// so leaving it out changes no bit.
template <class T>
__device__ __forceinline__ void merge_splits(T* out, const float* partials, int64_t used,
                                             int64_t head_dim, int thread) {
  auto part = [&](int64_t s) { return partials + s * (head_dim + 2); };
  float m = -INFINITY;
  for (int64_t s0 = 0; s0 < used; s0 += kMergeBatch) {
    float ms[kMergeBatch];
#pragma unroll
    for (int u = 0; u < kMergeBatch; ++u) ms[u] = s0 + u < used ? __ldcg(part(s0 + u)) : -INFINITY;
#pragma unroll
    for (int u = 0; u < kMergeBatch; ++u) m = fmaxf(m, ms[u]);
  }
  for (int64_t d = thread; d < head_dim; d += kStepThreads) {
    const float2 merged = merge_parts(
        used, m, [&](int64_t s) { return __ldcg(part(s)); },
        [&](int64_t s) { return __ldcg(part(s) + 1); },
        [&](int64_t s) { return __ldcg(part(s) + 2 + d); });
    out[d] = from_float<T>(merged.y > 0.f ? merged.x / merged.y : 0.f);
  }
}

// Everything one launch of the step needs besides its shape (attention_step.cu's arguments).
struct AttentionStepArgs {
  void* out;
  float* partials;
  unsigned* counters;
  const void* q;
  const void* k_new;
  const void* v_new;
  void* k_cache;
  void* v_cache;
  const int32_t* position;
  const int32_t* key_position;
  const int32_t* slot;
  const int32_t* key_begin;
  const int32_t* key_end;
  int64_t capacity, q_heads, kv_heads, head_dim, chunk;
  // Row r's cache row: r, or (r / block_rows) * cache_block_rows + r % block_rows (block_rows > 0:
  // a step of fewer sequences than the caches hold; AttentionStepRows in core/backend.h).
  int64_t block_rows, cache_block_rows;
  double log_theta;
  bool rope_q, rope_k;
};

// One block's shared memory.
struct AttentionStepShared {
  float qs[kStepMaxHeadDim], ks[kStepMaxHeadDim], vs[kStepMaxHeadDim];
  float group_m[kStepGroups], group_l[kStepGroups];
  float group_acc[kStepGroups][kStepMaxHeadDim];
  bool merges;
};

// T: element type; N: elements per load (16 bytes, or 2 where head_dim is no multiple of that);
// CPL: pieces of N per lane (head_dim <= kGroupLanes * CPL * N).
template <class T, int N, int CPL, class Block>
__device__ __forceinline__ void attention_step_block(const AttentionStepArgs& args, int64_t block_x,
                                                     int64_t block_y, int64_t splits,
                                                     AttentionStepShared& shared, const Block& ctx) {
  float* const qs = shared.qs;
  float* const ks = shared.ks;
  float* const vs = shared.vs;
  float* const group_m = shared.group_m;
  float* const group_l = shared.group_l;
  auto& group_acc = shared.group_acc;
  T* const out = static_cast<T*>(args.out);
  float* const partials = args.partials;
  unsigned* const counters = args.counters;
  const T* const q = static_cast<const T*>(args.q);
  const T* const k_new = static_cast<const T*>(args.k_new);
  const T* const v_new = static_cast<const T*>(args.v_new);
  T* const k_cache = static_cast<T*>(args.k_cache);
  T* const v_cache = static_cast<T*>(args.v_cache);
  const int32_t* const position = args.position;
  const int32_t* const key_position = args.key_position;
  const int32_t* const slot = args.slot;
  const int32_t* const key_begin = args.key_begin;
  const int32_t* const key_end = args.key_end;
  const int64_t capacity = args.capacity, q_heads = args.q_heads, kv_heads = args.kv_heads;
  const int64_t head_dim = args.head_dim, chunk = args.chunk;
  const double log_theta = args.log_theta;
  const bool rope_q = args.rope_q, rope_k = args.rope_k;
  const int thread = ctx.thread();
  const int64_t row = block_x / q_heads, h = block_x % q_heads;
  const int64_t kvh = h / (q_heads / kv_heads);
  const int group = thread / kGroupLanes, lane = thread % kGroupLanes;
  const int64_t cached = args.block_rows == 0
                            ? row
                            : (row / args.block_rows) * args.cache_block_rows + row % args.block_rows;
  auto cache_row = [&](int64_t j) {  // element offset of position j's row in the caches
    return ((cached * capacity + j % capacity) * kv_heads + kvh) * head_dim;
  };
  const int64_t fresh = key_position[row];
  const int64_t first = key_begin[row] + block_y * chunk;
  const int64_t last = min(static_cast<int64_t>(key_end[row]), first + chunk);
  // The splits holding visible keys (split 0 always: it writes the new key and value, and a
  // row with none gets its zeros through it). The others leave at once: the split count
  // follows the capacity, so most of a long context's splits are empty early on.
  const int64_t visible = static_cast<int64_t>(key_end[row]) - key_begin[row];
  const int64_t used = visible <= chunk ? 1 : min(splits, (visible + chunk - 1) / chunk);
  if (block_y >= used) return;

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
  // behind the previous kernel. A thread rotates pairs m = thread + i * kStepThreads.
  constexpr int kPairsPerThread = (kStepMaxHeadDim / 2 + kStepThreads - 1) / kStepThreads;
  float qc[kPairsPerThread], qsn[kPairsPerThread], kc[kPairsPerThread], ksn[kPairsPerThread];
#pragma unroll
  for (int i = 0; i < kPairsPerThread; ++i) {
    const int64_t m = thread + static_cast<int64_t>(i) * kStepThreads;
    qc[i] = kc[i] = 1.f;
    qsn[i] = ksn[i] = 0.f;
    if (m >= head_dim / 2) continue;
    if (rope_q) rotation(static_cast<double>(position[row]), m, head_dim, log_theta, 1.f, qc[i], qsn[i]);
    if (rope_k) rotation(static_cast<double>(fresh), m, head_dim, log_theta, 1.f, kc[i], ksn[i]);
  }
  ctx.wait();

  // The rotated query, the rotated new key and the new value in shared memory; the writer
  // block puts the new key and value into the cache.
  const T* qh = q + (row * q_heads + h) * head_dim;
  const T* kh = k_new + (row * kv_heads + kvh) * head_dim;
  const T* vh = v_new + (row * kv_heads + kvh) * head_dim;
  const bool writer = h % (q_heads / kv_heads) == 0 && block_y == 0;
  const int64_t fresh_row = ((cached * capacity + slot[row]) * kv_heads + kvh) * head_dim;
#pragma unroll
  for (int i = 0; i < kPairsPerThread; ++i) {
    const int64_t m = thread + static_cast<int64_t>(i) * kStepThreads;
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
  for (int64_t d = thread; d < head_dim; d += kStepThreads) {
    vs[d] = to_float(vh[d]);
    if (writer) v_cache[fresh_row + d] = vh[d];
  }
  ctx.sync();

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
  ctx.sync();
  float block_m = -INFINITY;
  for (int g = 0; g < kStepGroups; ++g) block_m = fmaxf(block_m, group_m[g]);
  const int64_t head_row = row * q_heads + h;
  float* const head_partials = partials + head_row * splits * (head_dim + 2);
  for (int64_t d = thread; d < head_dim; d += kStepThreads) {
    const float2 merged = merge_parts(
        kStepGroups, block_m, [&](int64_t g) { return group_m[g]; },
        [&](int64_t g) { return group_l[g]; }, [&](int64_t g) { return group_acc[g][d]; });
    const float total = merged.x, l = merged.y;
    if (splits == 1) {
      out[head_row * head_dim + d] = from_float<T>(l > 0.f ? total / l : 0.f);
    } else {
      float* partial = head_partials + block_y * (head_dim + 2);
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
  bool& merges = shared.merges;
  __threadfence();
  ctx.sync();
  if (thread == 0) merges = atomicAdd(&counters[head_row], 1u) == used - 1;
  ctx.sync();
  if (!merges) return;
  __threadfence();
  merge_splits(out + head_row * head_dim, head_partials, used, head_dim, thread);
  if (thread == 0) counters[head_row] = 0;
}

// One launch of the attention-step kernel (attention_step.cu) for these arguments and grid.
void launch_attention(DType dtype, const AttentionStepArgs& args, int grid_x, int grid_y,
                      int pieces_per_lane, bool vector, cudaStream_t stream);

}  // namespace sf::cuda::step
