// attention_backward.cu — the attention backward pass on the GPU: D = rowsum(dout * out), the
// mma.sync tensor-core (flash-style) kernel for BF16 with head_dim 64 or 128, the fp32 dq
// accumulator's conversion, and the dispatcher: BF16 head_dim 64 on compute capability 9.0 goes
// to the Hopper kernel (attention_backward_wgmma.cu), every case without tensor cores to the
// general SIMT path (attention_generic.cu).
//
// With p = exp(scale * q.k - lse), dp = dout.v and D = rowsum(dout * out):
//   ds = p * (dp - D),  dv = sum_t p dout_t,
//   dk = scale * sum_t ds q_t,  dq = scale * sum_j ds k_j.
//
// The mma.sync kernel, FlashAttention-2 style: one block per (key block, kv head, batch), each
// warp owning 16 keys (8 warps and 128 keys, or 4 and 64 with grouped heads; see the dispatch).
// K and V stay in shared memory; the block walks the query heads of the kv head's group and, per
// head, the band of 64-query tiles that its keys can see — [first_query(k0), last_query(k_last)]
// — with Q, dout, lse and D double-buffered by cp.async. Per query tile, in two halves of 32
// queries (so that only half of S^T and dP^T is live next to the dK, dV accumulators), a warp
// forms S^T = K Q^T and dP^T = V dout^T for its keys (fp32 accumulators), turns them into P^T
// and dS^T in registers (masking only parts that are not entirely visible, skipping parts it
// cannot see), and accumulates dV += P^T dout and dK += dS^T Q with P^T and dS^T re-used as bf16
// A fragments: dk and dv are summed over the whole group in registers and written once, so no two
// blocks write the same dk/dv row. dS^T goes through shared memory so that each warp can then
// form a 16-query strip of dQ = dS K over all the block's keys; that is added to an fp32
// accumulator in the workspace ([B, Hq, Tq, hd]) with 16-byte vector atomics (blocks of
// different key blocks meet on the same dq rows), and converted to bf16 (times the scale) at the
// end. The D kernel also zeroes the accumulator.
#include <cmath>

#include "cuda/attention_backward.cuh"
#include "cuda/attention_common.cuh"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

using attention::aligned16;
using attention::MaskGeometry;
using bf16 = __nv_bfloat16;

using attention::BackwardParams;
constexpr int kQueries = attention::kBackwardQueries;

// WARPS warps of 16 keys each: a block owns kKeys = 16 * WARPS keys.
template <int HD, int WARPS>
struct BackwardTiles {
  static constexpr int kThreads = 32 * WARPS;
  static constexpr int kKeys = 16 * WARPS;
  // K, V; Q and dout double-buffered; dS^T [keys][queries]; lse and D double-buffered.
  static constexpr size_t kSmemBytes =
      sizeof(bf16) * (2 * kKeys * HD + 4 * kQueries * HD + kKeys * kQueries) +
      sizeof(float) * 4 * kQueries;
};

// BLOCKS: resident blocks per multiprocessor that the register budget is sized for.
template <int HD, int WARPS, int BLOCKS>
__global__ void __launch_bounds__(32 * WARPS, BLOCKS) flash_backward_kernel(BackwardParams p) {
  constexpr int kThreads = BackwardTiles<HD, WARPS>::kThreads;
  constexpr int kKeys = BackwardTiles<HD, WARPS>::kKeys;
  constexpr int kQParts = 2;
  constexpr int kPartQueries = kQueries / kQParts;
  constexpr int kPartTiles = kPartQueries / 8;  // n-tiles of a part's S^T (queries)
  constexpr int kDTiles = HD / 8;               // n-tiles of dK, dV (head dims)
  constexpr int kKSteps = HD / 16;              // k-steps over head dims
  // dQ = dS K splits into 4 row strips of 16 queries times kDqParts column strips: one a warp.
  constexpr int kDqParts = WARPS / 4;
  constexpr int kDqDims = HD / kDqParts;
  static_assert(WARPS % 4 == 0, "dQ needs whole row strips");
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);                    // [kKeys][HD]
  bf16* sV = sK + kKeys * HD;                                      // [kKeys][HD]
  bf16* sQ = sV + kKeys * HD;                                      // [2][kQueries][HD]
  bf16* sdO = sQ + 2 * kQueries * HD;                              // [2][kQueries][HD]
  bf16* sdS = sdO + 2 * kQueries * HD;                             // [kKeys][kQueries]: dS^T
  float* sLse = reinterpret_cast<float*>(sdS + kKeys * kQueries);  // [2][kQueries]
  float* sD = sLse + 2 * kQueries;                                 // [2][kQueries]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  // The key block is the slowest-varying grid index: under a causal mask low key blocks see the
  // most queries, and they start first (longest first: a short tail).
  const int kvh = blockIdx.x, b = blockIdx.y;
  const int k0 = blockIdx.z * kKeys;
  const int k_last = min(k0 + kKeys, p.kv_len) - 1;
  const int warp_k0 = k0 + warp * 16, warp_k1 = warp_k0 + 15;
  const auto band = p.mask.query_tiles(k0, k_last, p.q_len, kQueries);
  const int tile_first = band.first, tiles_per_head = band.count();
  const int iterations = p.group * tiles_per_head;

  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * HD;
  const int64_t kv_first = (static_cast<int64_t>(b) * p.kv_len + k0) * kv_stride + kvh * HD;

  float dk_acc[kDTiles][4], dv_acc[kDTiles][4];
#pragma unroll
  for (int n = 0; n < kDTiles; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.0f;

  if (iterations > 0) {
    attention::load_tile_async<HD, kKeys, kThreads>(sK, p.k + kv_first, kv_stride, p.kv_len - k0);
    attention::load_tile_async<HD, kKeys, kThreads>(sV, p.v + kv_first, kv_stride, p.kv_len - k0);
    attention::load_query_tile<HD, kThreads>(p, b, kvh * p.group, tile_first * kQueries, sQ, sdO,
                                             sLse, sD);
    attention::cp_async_commit();
  }

  for (int it = 0; it < iterations; ++it) {
    const int buffer = it & 1;
    const int h = kvh * p.group + it / tiles_per_head;
    const int q0 = (tile_first + it % tiles_per_head) * kQueries;
    attention::cp_async_wait_all();
    __syncthreads();  // tile `it` has landed; every warp is done with the other buffer and sdS
    if (it + 1 < iterations) {
      const int next_h = kvh * p.group + (it + 1) / tiles_per_head;
      const int next_q0 = (tile_first + (it + 1) % tiles_per_head) * kQueries;
      attention::load_query_tile<HD, kThreads>(
          p, b, next_h, next_q0, sQ + (buffer ^ 1) * kQueries * HD,
          sdO + (buffer ^ 1) * kQueries * HD, sLse + (buffer ^ 1) * kQueries,
          sD + (buffer ^ 1) * kQueries);
      attention::cp_async_commit();
    }
    const bf16* tQ = sQ + buffer * kQueries * HD;
    const bf16* tdO = sdO + buffer * kQueries * HD;
    const float* tLse = sLse + buffer * kQueries;
    const float* tD = sD + buffer * kQueries;

    // The tile's queries in kQParts parts, one after the other: S^T and dP^T of a part are all
    // that is live next to the dK, dV accumulators, which keeps the register count low enough
    // for three blocks per multiprocessor.
#pragma unroll
    for (int part = 0; part < kQParts; ++part) {
      const int pq = part * kPartQueries;  // first query of the part, relative to q0
      if (warp_k0 >= p.kv_len ||
          p.mask.none_visible(q0 + pq, q0 + pq + kPartQueries - 1, warp_k0, warp_k1)) {
#pragma unroll
        for (int n = 0; n < kPartTiles; ++n)
#pragma unroll
          for (int r = 0; r < 2; ++r)
            *reinterpret_cast<uint32_t*>(sdS + attention::swizzled<kQueries>(
                                                   warp * 16 + g + 8 * r, pq + n * 8 + 2 * c)) = 0u;
        continue;
      }
      // S^T = K Q^T and dP^T = V dout^T for this warp's 16 keys.
      float st[kPartTiles][4], dpt[kPartTiles][4];
#pragma unroll
      for (int n = 0; n < kPartTiles; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKSteps; ++kk) {
        uint32_t ka[4], va[4];
        {
          const int row = warp * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int col = kk * 16 + 8 * (lane / 16);
          attention::ldmatrix_x4(ka,
                                 attention::smem_address(sK + attention::swizzled<HD>(row, col)));
          attention::ldmatrix_x4(va,
                                 attention::smem_address(sV + attention::swizzled<HD>(row, col)));
        }
#pragma unroll
        for (int np = 0; np < kPartTiles / 2; ++np) {
          const int row = pq + np * 16 + (lane % 8) + 8 * (lane / 16);
          const int col = kk * 16 + 8 * ((lane / 8) % 2);
          uint32_t qb[4], ob[4];
          attention::ldmatrix_x4(qb,
                                 attention::smem_address(tQ + attention::swizzled<HD>(row, col)));
          attention::ldmatrix_x4(ob,
                                 attention::smem_address(tdO + attention::swizzled<HD>(row, col)));
          attention::mma_bf16(st[2 * np], ka, qb[0], qb[1]);
          attention::mma_bf16(st[2 * np + 1], ka, qb[2], qb[3]);
          attention::mma_bf16(dpt[2 * np], va, ob[0], ob[1]);
          attention::mma_bf16(dpt[2 * np + 1], va, ob[2], ob[3]);
        }
      }

      // P^T and dS^T. Masked entries are set to 0 outright: their lse may be -inf.
      const bool full = p.mask.all_visible(q0 + pq, q0 + pq + kPartQueries - 1, warp_k0, warp_k1) &&
                        q0 + pq + kPartQueries <= p.q_len && warp_k1 < p.kv_len;
#pragma unroll
      for (int n = 0; n < kPartTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int tl = pq + n * 8 + 2 * c + (e % 2);
          const float prob =
              attention::fast_exp2(fmaf(st[n][e], p.scale_log2, -tLse[tl] * attention::kLog2e));
          bool visible = true;
          if (!full) {
            const int t = q0 + tl, j = warp_k0 + g + 8 * (e / 2);
            visible = t < p.q_len && j < p.kv_len && p.mask.visible(t, j);
          }
          st[n][e] = visible ? prob : 0.0f;
          dpt[n][e] = visible ? prob * (dpt[n][e] - tD[tl]) : 0.0f;
        }
      }

      // dV += P^T dout, dK += dS^T Q (contraction over the part's queries).
#pragma unroll
      for (int kk = 0; kk < kPartQueries / 16; ++kk) {
        uint32_t pa[4], dsa[4];
        attention::accumulators_to_a(pa, st[2 * kk], st[2 * kk + 1]);
        attention::accumulators_to_a(dsa, dpt[2 * kk], dpt[2 * kk + 1]);
#pragma unroll
        for (int dp = 0; dp < HD / 16; ++dp) {
          const int row = pq + kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int col = dp * 16 + 8 * (lane / 16);
          uint32_t ob[4], qb[4];
          attention::ldmatrix_x4_trans(
              ob, attention::smem_address(tdO + attention::swizzled<HD>(row, col)));
          attention::ldmatrix_x4_trans(
              qb, attention::smem_address(tQ + attention::swizzled<HD>(row, col)));
          attention::mma_bf16(dv_acc[2 * dp], pa, ob[0], ob[1]);
          attention::mma_bf16(dv_acc[2 * dp + 1], pa, ob[2], ob[3]);
          attention::mma_bf16(dk_acc[2 * dp], dsa, qb[0], qb[1]);
          attention::mma_bf16(dk_acc[2 * dp + 1], dsa, qb[2], qb[3]);
        }
      }

      // dS^T (bf16) to shared memory for the dQ product.
#pragma unroll
      for (int n = 0; n < kPartTiles; ++n)
#pragma unroll
        for (int r = 0; r < 2; ++r)
          *reinterpret_cast<uint32_t*>(
              sdS + attention::swizzled<kQueries>(warp * 16 + g + 8 * r, pq + n * 8 + 2 * c)) =
              attention::pack_bf16(dpt[n][2 * r], dpt[n][2 * r + 1]);
    }
    __syncthreads();  // dS^T of all four warps is in place

    // dQ rows warp_q0 .. + 15, head dims [dim0, dim0 + kDqDims) = dS K over the block's keys,
    // added to the fp32 accumulator.
    const int warp_q0 = q0 + (warp % 4) * 16, dim0 = (warp / 4) * kDqDims;
    if (warp_q0 < p.q_len && !p.mask.none_visible(warp_q0, warp_q0 + 15, k0, k0 + kKeys - 1)) {
      float dq_acc[kDqDims / 8][4];
#pragma unroll
      for (int n = 0; n < kDqDims / 8; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) dq_acc[n][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKeys / 16; ++kk) {
        uint32_t dsa[4];
        {
          const int i = lane / 8;  // which 8x8 matrix this lane addresses
          const int key = kk * 16 + (lane % 8) + 8 * (i / 2);
          const int query = (warp % 4) * 16 + 8 * (i % 2);
          attention::ldmatrix_x4_trans(
              dsa, attention::smem_address(sdS + attention::swizzled<kQueries>(key, query)));
        }
#pragma unroll
        for (int dp = 0; dp < kDqDims / 16; ++dp) {
          const int row = kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int col = dim0 + dp * 16 + 8 * (lane / 16);
          uint32_t kb[4];
          attention::ldmatrix_x4_trans(
              kb, attention::smem_address(sK + attention::swizzled<HD>(row, col)));
          attention::mma_bf16(dq_acc[2 * dp], dsa, kb[0], kb[1]);
          attention::mma_bf16(dq_acc[2 * dp + 1], dsa, kb[2], kb[3]);
        }
      }
      // Lanes c and c^1 swap halves so that each holds four consecutive columns of one row
      // (even c: row g, odd c: row g + 8): half as many atomic instructions, 16 bytes each
      // (measured on the H100 no faster than 8-byte ones, but not slower either).
      const bool odd = (c & 1) != 0;
      const int t = warp_q0 + g + (odd ? 8 : 0);
      float* row = p.dq_accum + ((static_cast<int64_t>(b) * p.q_heads + h) * p.q_len + t) * HD +
                   dim0 + 4 * (c >> 1);
#pragma unroll
      for (int n = 0; n < kDqDims / 8; ++n) {
        const float give0 = odd ? dq_acc[n][0] : dq_acc[n][2];
        const float give1 = odd ? dq_acc[n][1] : dq_acc[n][3];
        const float take0 = __shfl_xor_sync(0xffffffffu, give0, 1);
        const float take1 = __shfl_xor_sync(0xffffffffu, give1, 1);
        const float4 sum = odd ? make_float4(take0, take1, dq_acc[n][2], dq_acc[n][3])
                               : make_float4(dq_acc[n][0], dq_acc[n][1], take0, take1);
        if (t < p.q_len) atomicAdd(reinterpret_cast<float4*>(row + n * 8), sum);
      }
    }
  }

  // dk, dv rows of this warp's keys: written once, zero where no query sees the key.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = warp_k0 + g + 8 * r;
    if (j >= p.kv_len) continue;
    const int64_t key_row = static_cast<int64_t>(b) * p.kv_len + j;
    bf16* dk_row = p.dk + key_row * p.dk_stride + kvh * HD;
    bf16* dv_row = p.dv + key_row * p.dv_stride + kvh * HD;
#pragma unroll
    for (int n = 0; n < kDTiles; ++n) {
      *reinterpret_cast<uint32_t*>(dk_row + n * 8 + 2 * c) =
          attention::pack_bf16(dk_acc[n][2 * r] * p.scale, dk_acc[n][2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dv_row + n * 8 + 2 * c) =
          attention::pack_bf16(dv_acc[n][2 * r], dv_acc[n][2 * r + 1]);
    }
  }
}

// D[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d] for the tensor-core path: HD / 8 lanes
// per row, 16-byte loads; the row of the fp32 dq accumulator is zeroed on the way.
template <int HD>
__global__ void delta_bf16_kernel(const bf16* dout, const bf16* out, float* delta, float* accum,
                                  int rows, int q_len, int q_heads) {
  constexpr int kLanes = HD / 8, kRowsPerWarp = 32 / kLanes;
  const int lane = threadIdx.x % 32;
  const int row =
      (blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * kRowsPerWarp + lane / kLanes;
  const int chunk = lane % kLanes;
  float sum = 0.0f;
  if (row < rows) {
    const int64_t offset = static_cast<int64_t>(row) * HD + chunk * 8;
    const uint4 a = *reinterpret_cast<const uint4*>(dout + offset);
    const uint4 o = *reinterpret_cast<const uint4*>(out + offset);
    const uint32_t av[4] = {a.x, a.y, a.z, a.w}, ov[4] = {o.x, o.y, o.z, o.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&av[i]));
      const float2 y = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&ov[i]));
      sum = fmaf(x.x, y.x, fmaf(x.y, y.y, sum));
    }
  }
  // The statistics and the accumulator are head-major: row (b, t, h) is entry (b, h, t).
  const int h = row % q_heads, bt = row / q_heads;
  const int64_t head_major = (static_cast<int64_t>(bt / q_len) * q_heads + h) * q_len + bt % q_len;
  if (row < rows) {
    float4* acc = reinterpret_cast<float4*>(accum + head_major * HD + chunk * 8);
    acc[0] = acc[1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
#pragma unroll
  for (int offset = kLanes / 2; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (chunk == 0 && row < rows) delta[head_major] = sum;
}

// D[b, h, t] = sum_d dout[b, t, h, d] * out[b, t, h, d], one warp per row, element pairs.
template <class T>
__global__ void delta_kernel(const T* dout, const T* out, float* delta, int64_t rows, int hd,
                             int q_len, int q_heads) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = threadIdx.x % 32;
  const T* a = dout + row * hd;
  const T* o = out + row * hd;
  float sum = 0.0f;
  for (int d = 2 * lane; d < hd; d += 64)
    sum += to_float(a[d]) * to_float(o[d]) + to_float(a[d + 1]) * to_float(o[d + 1]);
  sum = warp_sum(sum);
  if (lane == 0) {
    const int64_t h = row % q_heads, bt = row / q_heads;
    delta[(bt / q_len * q_heads + h) * q_len + bt % q_len] = sum;
  }
}

// dq = scale * accumulator, four elements (two RoPE pairs) at a time; with a rope table the
// pairs are rotated back (the gradient w.r.t. the query before its rotation). dq is
// [B, Tq, Hq, hd] with rows dq_stride apart, the accumulator head-major [B, Hq, Tq, hd] (the
// wgmma kernel adds whole tiles of a head's rows at once): dq element e (counted as if rows
// were back to back) is at position t = (e / (hd * Hq)) % Tq, head (e / hd) % Hq, pair
// (e % hd) / 2.
__global__ void dq_convert_kernel(const float* accum, bf16* dq, int64_t dq_stride, int64_t quads,
                                  float scale, const float2* rope_q, int q_len, int q_heads,
                                  int hd) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < quads;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = 4 * i;
    const int64_t width = static_cast<int64_t>(hd) * q_heads;
    const int64_t bt = e / width;
    const int64_t h = (e / hd) % q_heads, t = bt % q_len;
    float4 a = *reinterpret_cast<const float4*>(
        accum + ((bt / q_len * q_heads + h) * q_len + t) * hd + e % hd);
    a.x *= scale;
    a.y *= scale;
    a.z *= scale;
    a.w *= scale;
    if (rope_q) {
      const float2* cs = rope_q + t * (hd / 2) + (e % hd) / 2;
      const float2 c0 = cs[0], c1 = cs[1];
      a = make_float4(a.x * c0.x + a.y * c0.y, a.y * c0.x - a.x * c0.y,
                      a.z * c1.x + a.w * c1.y, a.w * c1.x - a.z * c1.y);
    }
    uint2 packed;
    packed.x = attention::pack_bf16(a.x, a.y);
    packed.y = attention::pack_bf16(a.z, a.w);
    *reinterpret_cast<uint2*>(dq + bt * dq_stride + (e - bt * width)) = packed;
  }
}

size_t round_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t delta_bytes(const AttentionDims& d) {
  return round_up(sizeof(float) * static_cast<size_t>(d.batch * d.q_heads * d.q_len));
}

bool tensor_core_shape(DType dtype, const AttentionDims& d) {
  return dtype == DType::bf16 && (d.head_dim == 64 || d.head_dim == 128);
}

BackwardParams backward_params(const AttentionDims& dims, MaskGeometry mask, const void* dout,
                               const float* lse, const float* delta, const void* q, const void* k,
                               const void* v, float* dq_accum, void* dk, void* dv,
                               const AttentionGradStrides& strides) {
  BackwardParams p;
  static_cast<attention::KernelShape&>(p) = attention::kernel_shape(dims, mask);
  p.q = static_cast<const bf16*>(q);
  p.k = static_cast<const bf16*>(k);
  p.v = static_cast<const bf16*>(v);
  p.dout = static_cast<const bf16*>(dout);
  p.lse = lse;
  p.delta = delta;
  p.dq_accum = dq_accum;
  p.dk = static_cast<bf16*>(dk);
  p.dv = static_cast<bf16*>(dv);
  p.dk_stride = strides.dk;
  p.dv_stride = strides.dv;
  p.scale = 1.0f / std::sqrt(static_cast<float>(dims.head_dim));
  p.scale_log2 = p.scale * attention::kLog2e;
  return p;
}

template <int HD, int WARPS, int BLOCKS>
void launch_flash_backward(const BackwardParams& p, int64_t batch, cudaStream_t stream) {
  using Tiles = BackwardTiles<HD, WARPS>;
  constexpr size_t kSmem = Tiles::kSmemBytes;
  SF_CUDA_CHECK(cudaFuncSetAttribute(flash_backward_kernel<HD, WARPS, BLOCKS>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(kSmem)));
  const dim3 grid(static_cast<unsigned>(p.kv_heads), static_cast<unsigned>(batch),
                  attention::ceil_div(p.kv_len, Tiles::kKeys));
  flash_backward_kernel<HD, WARPS, BLOCKS><<<grid, Tiles::kThreads, kSmem, stream>>>(p);
  SF_CUDA_LAUNCH_CHECK("flash_backward_kernel");
}

}  // namespace

size_t attention_backward_workspace_bytes(DType dtype, const AttentionDims& dims) {
  size_t bytes = delta_bytes(dims);
  if (tensor_core_shape(dtype, dims))
    bytes += round_up(sizeof(float) *
                      static_cast<size_t>(dims.batch * dims.q_len * dims.q_heads * dims.head_dim));
  return bytes;
}

void attention_backward(DType dtype, const AttentionDims& dims, int mask_shift, int mask_window,
                        const void* dout, const void* out, const float* lse, const void* q,
                        const void* k, const void* v, void* dq, void* dk, void* dv, void* workspace,
                        cudaStream_t stream, const AttentionRopeUndo& rope,
                        const AttentionGradStrides& requested_strides) {
  const MaskGeometry mask{mask_shift, mask_window};
  const int64_t q_width = dims.q_heads * dims.head_dim, kv_width = dims.kv_heads * dims.head_dim;
  AttentionGradStrides strides = requested_strides;
  if (strides.dq == 0) strides.dq = q_width;
  if (strides.dk == 0) strides.dk = kv_width;
  if (strides.dv == 0) strides.dv = kv_width;
  const int64_t rows = dims.batch * dims.q_len * dims.q_heads;
  const int64_t key_rows = dims.batch * dims.kv_len;
  if (rows == 0) {  // no queries: nothing reaches the keys
    const size_t row_bytes = static_cast<size_t>(kv_width) * dtype_size(dtype);
    if (row_bytes > 0 && key_rows > 0) {
      const size_t elem = dtype_size(dtype);
      SF_CUDA_CHECK(cudaMemset2DAsync(dk, strides.dk * elem, 0, row_bytes, key_rows, stream));
      SF_CUDA_CHECK(cudaMemset2DAsync(dv, strides.dv * elem, 0, row_bytes, key_rows, stream));
    }
    return;
  }
  float* delta = static_cast<float*>(workspace);
  // The tensor-core kernels store dk, dv rows in 4-byte pieces and dq in 8-byte ones: every
  // row must start 16-byte aligned like the first.
  const bool rows_aligned = strides.dq % 8 == 0 && strides.dk % 8 == 0 && strides.dv % 8 == 0;
  const bool tensor_cores = tensor_core_shape(dtype, dims) && aligned16(q) && aligned16(k) &&
                            aligned16(v) && aligned16(dout) && aligned16(out) && aligned16(dq) &&
                            aligned16(dk) && aligned16(dv) && rows_aligned && aligned16(workspace);
  constexpr int kRowsPerBlock = 8;  // warps of the D kernels
  if (!tensor_cores) {
    const int blocks = attention::ceil_div(rows, kRowsPerBlock);
    SF_DISPATCH_FLOAT(dtype, T, {
      delta_kernel<T><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(
          static_cast<const T*>(dout), static_cast<const T*>(out), delta, rows,
          static_cast<int>(dims.head_dim), static_cast<int>(dims.q_len),
          static_cast<int>(dims.q_heads));
      SF_CUDA_LAUNCH_CHECK("delta_kernel");
    });
    attention::generic_backward(dtype, dims, mask, dout, lse, delta, q, k, v, dq, dk, dv, strides,
                                stream);
    // The general path rotates back in separate passes.
    if (rope.q_table)
      cuda::rope(dtype, dq, rope.q_table, dims.batch * dims.q_len, dims.q_len, dims.q_heads,
                 dims.head_dim, 0, true, stream, strides.dq);
    if (rope.k_table)
      cuda::rope(dtype, dk, rope.k_table, key_rows, dims.kv_len, dims.kv_heads, dims.head_dim, 0,
                 true, stream, strides.dk);
    return;
  }
  float* dq_accum = reinterpret_cast<float*>(static_cast<char*>(workspace) + delta_bytes(dims));
  const int hd = static_cast<int>(dims.head_dim);
  {
    const int rows_per_block = kRowsPerBlock * (32 / (hd / 8));
    const int blocks = attention::ceil_div(rows, rows_per_block);
    const auto* dout_bf16 = static_cast<const bf16*>(dout);
    const auto* out_bf16 = static_cast<const bf16*>(out);
    const int n = static_cast<int>(rows), q_len = static_cast<int>(dims.q_len),
              q_heads = static_cast<int>(dims.q_heads);
    if (hd == 64)
      delta_bf16_kernel<64><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(dout_bf16, out_bf16, delta,
                                                                       dq_accum, n, q_len, q_heads);
    else
      delta_bf16_kernel<128><<<blocks, 32 * kRowsPerBlock, 0, stream>>>(
          dout_bf16, out_bf16, delta, dq_accum, n, q_len, q_heads);
    SF_CUDA_LAUNCH_CHECK("delta_bf16_kernel");
  }
  if (dims.kv_len > 0) {
    const BackwardParams p =
        backward_params(dims, mask, dout, lse, delta, q, k, v, dq_accum, dk, dv, strides);
    // head_dim 64 on Hopper: the wgmma kernel (attention_backward_wgmma.cu).
    // Otherwise, head_dim 64: two blocks of 8 warps (128 keys) per multiprocessor: every query
    // tile read into shared memory then serves twice the keys. Measured in training (B16 T1024
    // H12, H100): 35.18 ms a step against 35.67 with three blocks of 4 warps, which had measured
    // best in isolation at B8. With grouped heads each block walks the whole group and there are
    // fewer, longer blocks: two blocks of 4 warps with the larger register budget balance better
    // (bench/results/attention-kernels.md). head_dim 128: one block of 8 warps (128 keys), its dK
    // and dV accumulators need the registers.
    if (hd == 64 && wgmma_attention_active())
      attention::wgmma_backward_hd64(p, dims.batch, stream);
    else if (hd == 64 && dims.q_heads == dims.kv_heads)
      launch_flash_backward<64, 8, 2>(p, dims.batch, stream);
    else if (hd == 64)
      launch_flash_backward<64, 4, 2>(p, dims.batch, stream);
    else
      launch_flash_backward<128, 8, 1>(p, dims.batch, stream);
  }
  const int64_t quads = rows * dims.head_dim / 4;
  dq_convert_kernel<<<blocks_for(quads, 256), 256, 0, stream>>>(
      dq_accum, static_cast<bf16*>(dq), strides.dq, quads, 1.0f / std::sqrt(static_cast<float>(hd)),
      reinterpret_cast<const float2*>(rope.q_table), static_cast<int>(dims.q_len),
      static_cast<int>(dims.q_heads), hd);
  SF_CUDA_LAUNCH_CHECK("dq_convert_kernel");
  // dk is rotated back in a pass of its own: folded into the backward kernel's dk store it cost
  // that kernel 5% (H100, B16 T1024 H12), more than the pass (~18 us).
  if (rope.k_table)
    cuda::rope(dtype, dk, rope.k_table, key_rows, dims.kv_len, dims.kv_heads, dims.head_dim, 0,
               true, stream, strides.dk);
}

}  // namespace sf::cuda
